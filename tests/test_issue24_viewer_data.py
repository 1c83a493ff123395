"""What the explorer says about a circuit: wording and title per method and file, the attention
data it embeds, the one-line description, and the notebook view."""

import json
import re

import pytest
import torch

from acdc_engine.formats.circuit_file import circuit_from_dict
from acdc_engine.formats.reader import load_circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.viewer import attention_block, notebook_html
from acdc_engine.viewer.data import circuit_view
from acdc_engine.formats.circuit_file import circuit_to_dict
from acdc_engine.formats.eap_ig import circuit_to_eap_ig


def labels(view):
    return [state["label"] for state in view["states"]]


def with_method(circuit, **method):
    data = circuit_to_dict(circuit)
    data["method"] = method
    return circuit_from_dict(data)


@pytest.fixture
def mib_file(tmp_path, small_circuit):
    """The circuit as an EAP-IG / MIB graph file: no model, task or method named."""
    data = circuit_to_eap_ig(small_circuit, d_model=32)
    del data["acdc_engine"]
    path = tmp_path / "ioi_graph.json"
    path.write_text(json.dumps(data))
    return path


def test_an_acdc_circuit_is_worded_as_tested_removals(small_circuit):
    assert small_circuit.method["name"] == "acdc"
    assert labels(circuit_view(small_circuit))[2:] == ["removed (tested)", "removed untested"]


def test_an_eap_ig_circuit_is_worded_as_a_selection_by_score(small_circuit):
    view = circuit_view(with_method(small_circuit, name="eap-ig", top_n=10))
    assert not any("removed" in label for label in labels(view))
    assert labels(view)[2] == "not selected (scored)" and view["values"][0] == "attribution score"


@pytest.mark.parametrize("method", ["exact", "clean-corrupted", "eap-ig-activations", "edge-pruning"])
def test_every_score_method_of_the_registry_is_worded_as_a_selection_by_score(small_circuit, method):
    view = circuit_view(with_method(small_circuit, name=method, top_n=10))
    assert labels(view)[2] == "not selected (scored)" and view["values"][0] == "attribution score"


def test_a_file_that_names_no_method_has_no_acdc_wording(mib_file):
    view = circuit_view(load_circuit(mib_file), source=mib_file)
    assert not any(re.search("removed|tested|selected", label) for label in labels(view))


def test_the_title_names_model_task_and_method(small_circuit):
    circuit = with_method(small_circuit, name="eap-ig", top_n=10)
    circuit.model["name"], circuit.task["name"] = "gpt2", "ioi"
    assert circuit_view(circuit)["title"] == "gpt2 \u00b7 ioi \u00b7 EAP-IG top 10"


def test_a_file_that_names_nothing_is_titled_by_its_file_name_and_graph(mib_file):
    assert circuit_view(load_circuit(mib_file), source=mib_file)["title"] == "ioi_graph.json \u00b7 2 layers \u00d7 3 heads"


def test_attention_patterns_are_embedded_rounded_through_float16(small_circuit):
    patterns = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    block = attention_block(patterns, ["a", "b", "c", "d"])
    assert block["tokens"] == ["a", "b", "c", "d"]
    assert torch.tensor(block["patterns"], dtype=torch.float64) == pytest.approx(patterns.half().double(), abs=6e-4)
    values = [v for layer in block["patterns"] for head in layer for row in head for v in row]
    assert all(len(json.dumps(v)) <= 5 for v in values)  # at most 0.xyz in the page
    assert circuit_view(small_circuit, attention=block)["attention"] == block


def test_attention_patterns_must_match_their_tokens():
    with pytest.raises(AcdcError, match="pos = 3 tokens"):
        attention_block(torch.rand(2, 3, 4, 4), ["a", "b", "c"])


def test_attention_patterns_must_match_the_circuits_graph(small_circuit):
    with pytest.raises(AcdcError, match="graph needs"):
        circuit_view(small_circuit, attention=attention_block(torch.rand(1, 3, 2, 2), ["a", "b"]))


def test_attention_stored_with_the_circuit_is_shown(small_circuit):
    data = circuit_to_dict(small_circuit)
    data["attention"] = attention_block(torch.rand(2, 3, 2, 2), ["x", "y"])
    assert circuit_view(circuit_from_dict(data))["attention"]["tokens"] == ["x", "y"]


def test_a_views_graph_has_no_attention_unless_given(small_circuit):
    assert circuit_view(small_circuit)["attention"] is None


def test_the_short_repr_is_one_line_with_method_edges_and_metric(small_circuit):
    text = repr(small_circuit)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("<Circuit ACDC threshold 0.002")
    assert f"{small_circuit.n_edges} / {small_circuit.n_edges_total} edges" in text
    assert f"{small_circuit.metric['name']} " in text and "(full " in text


def test_the_short_repr_of_a_file_without_metric_says_what_it_has(mib_file):
    circuit = load_circuit(mib_file)
    assert repr(circuit) == f"<Circuit method not recorded: {circuit.n_edges} / {circuit.n_edges_total} edges>"


def test_the_notebook_view_is_the_page_in_an_isolated_frame(small_circuit):
    frame = notebook_html(small_circuit)
    assert frame.startswith("<iframe srcdoc=") and frame.endswith("</iframe>")
    assert 'sandbox="allow-scripts allow-downloads"' in frame
    assert "<script" not in frame.split('sandbox=')[0].replace("&lt;script", "")  # the page is escaped inside srcdoc
