"""EAP and EAP-IG through discover() and the circuit file."""

import pytest
from factories import random_task, small_model

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_discover_runs_gradient_methods_and_the_circuit_file_round_trips(tmp_path, method):
    steps = {"steps": 3} if method == "eap-ig" else {}  # EAP takes no steps
    circuit = discover(small_model(attn_only=False), random_task(), method=method, metric="logit_diff", top_n=15, **steps, progress=False)
    assert int(circuit.kept.edges.sum()) == 15
    assert circuit.method["name"] == method and circuit.method["top_n"] == 15
    assert circuit.run["backward_passes"] == (3 if method == "eap-ig" else 1)
    loaded = load_circuit(save_circuit(circuit, tmp_path / "c.json"))
    assert loaded.edges() == circuit.edges()
    assert circuit_to_dict(loaded)["edges"] == circuit_to_dict(circuit)["edges"]


def test_discover_eap_needs_exactly_one_selection_rule():
    with pytest.raises(AcdcError, match="exactly one of top_n"):
        discover(small_model(attn_only=True), random_task(), method="eap", metric="logit_diff", progress=False)


@pytest.mark.parametrize("method, parameters", [("eap", {"top_n": 5, "steps": 3}), ("eap", {"top_n": 5, "threshold": 0.1}), ("acdc", {"top_n": 5})])
def test_discover_refuses_a_parameter_the_method_does_not_take_by_name(method, parameters):
    refused = list(parameters)[-1]
    with pytest.raises(AcdcError, match=f"method '{method}' takes no parameter '{refused}'"):
        discover(small_model(attn_only=True), random_task(), method=method, **parameters, progress=False)
