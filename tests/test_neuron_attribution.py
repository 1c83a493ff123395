"""Neuron-level attribution (eap-neurons, eap-ig-neurons, eap-ig-activations-neurons): every output
dimension of every node scored as EAP-IG's attribute_node(neuron=True) scores it, against autograd
at the nodes' hooks (``naive_node``), on a GPT-2-style, an attention-only and a Llama model."""

import io
import json

import pytest
import torch
from factories import random_task
from naive_eap import naive_logit_diff_tensor
from naive_node import activation_ig_runs, eap_runs, input_ig_runs, naive_neuron_scores
from omegaconf import OmegaConf

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.formats.circuit_file import save_circuit
from acdc_engine.formats.eap_ig import circuit_from_eap_ig, circuit_to_eap_ig, circuit_to_eap_ig_pt, eap_ig_src_nodes
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.node_circuits import node_circuit

MODELS = ["gpt2-style", "attn-only", "llama"]  # attribution_models (conftest.py)
REL = {"gpt2-style": 1e-8, "attn-only": 1e-8, "llama": 1e-5}  # test_node_attribution.GRADIENT_REL: Llama's float32 norms


def run(model, task, method, **kwargs):
    kwargs.setdefault("top_n", 10)
    return discover(model, task, method=method, metric="logit_diff", progress=False, **kwargs)


def neuron_scores(circuit):
    """The method block's neuron scores as float64 [n_senders, d_model]."""
    return torch.tensor(list(circuit.method["neuron_scores"].values()), dtype=torch.float64)


def assert_neurons_match(circuit, naive, rel):
    assert list(circuit.method["neuron_scores"]) == list(naive)
    expected = torch.stack(list(naive.values())).double()
    scale = float(expected.abs().max())
    assert scale > 1e-4  # not vacuous
    torch.testing.assert_close(neuron_scores(circuit), expected, rtol=rel, atol=rel * scale)


def naive_runs(model, task, method):
    if method == "eap-neurons":
        return eap_runs()
    if method == "eap-ig-neurons":
        return input_ig_runs(model, task.clean, task.corrupted, [0.5, 1.0])
    return activation_ig_runs(model, task.clean, task.corrupted, 2)


@pytest.mark.parametrize("method", ["eap-neurons", "eap-ig-neurons", "eap-ig-activations-neurons"])
@pytest.mark.parametrize("name", MODELS)
def test_every_neuron_score_equals_autograd_at_eap_igs_node_hooks(attribution_models, name, method):
    model, task = attribution_models(name)
    circuit = run(model, task, method, **({} if method == "eap-neurons" else {"steps": 2}))
    metric = naive_logit_diff_tensor(task.answers, task.wrong_answers, task.positions.tolist())
    naive = naive_neuron_scores(model, task.clean, task.corrupted, metric, naive_runs(model, task, method))
    assert_neurons_match(circuit, naive, REL[name])


def test_a_nodes_neurons_sum_to_its_node_score(attribution_models):
    model, task = attribution_models("gpt2-style")
    nodes = run(model, task, "eap-ig-activations-nodes", steps=2).method["node_scores"]
    neurons = run(model, task, "eap-ig-activations-neurons", steps=2)
    for name, values in neurons.method["neuron_scores"].items():
        assert sum(values) == pytest.approx(nodes[name], rel=1e-9, abs=1e-12), name


def test_the_circuit_keeps_the_nodes_holding_a_top_n_neuron_whole(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-neurons", top_n=6)
    scores = neuron_scores(circuit)
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[scores.abs().flatten().argsort(descending=True)[:6]] = True
    assert circuit.kept.equal(node_circuit(circuit.graph, chosen.reshape(scores.shape).any(1)))
    largest = scores.gather(1, scores.abs().argmax(1, keepdim=True)).squeeze(1)
    exists = circuit.graph.edge_exists
    assert torch.equal(circuit.scores.edges[exists], largest[:, None].expand_as(exists)[exists])


def test_a_negative_top_n_is_refused_naming_neurons():
    with pytest.raises(AcdcError, match="top_n must be a number of neurons >= 0, got -2"):
        discover("no-such-model", random_task(), method="eap-neurons", top_n=-2, progress=False)


@pytest.mark.parametrize("method", ["eap-neurons", "eap-ig-neurons", "eap-ig-activations-neurons"])
def test_each_neuron_method_is_a_score_method_with_a_config_file(method):
    assert METHODS[method].circuits is CircuitSelection.SCORES
    assert OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml").name == method


def test_the_mib_neuron_track_file_holds_every_neurons_score_in_eap_igs_layout(attribution_models, tmp_path):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig-neurons", steps=2)
    exported = json.loads(json.dumps(circuit_to_eap_ig(circuit, d_model=model.cfg.d_model)))
    in_graph = set(circuit.nodes())
    for name, values in circuit.method["neuron_scores"].items():
        assert exported["nodes"][name]["neurons_scores"] == values
        assert exported["nodes"][name]["neurons"] == [name in in_graph] * model.cfg.d_model
    assert circuit_from_eap_ig(exported).in_graph.equal(circuit.in_graph)  # whole nodes: no neuron-level refusal
    data = torch.load(io.BytesIO(circuit_to_eap_ig_pt(circuit, d_model=model.cfg.d_model)), weights_only=True)
    src = eap_ig_src_nodes(model.cfg.n_layers, model.cfg.n_heads)
    torch.testing.assert_close(data["neurons_scores"], neuron_scores(circuit)[[circuit.graph.sender_index[n] for n in src]].float())
    assert load_circuit(save_circuit(circuit, tmp_path / "c.json")).method == circuit.method


def test_an_attention_only_export_scores_eap_igs_mlp_neurons_zero(attribution_models):
    model, task = attribution_models("attn-only")
    nodes = circuit_to_eap_ig(run(model, task, "eap-neurons"), d_model=model.cfg.d_model)["nodes"]
    assert nodes["m1"]["neurons_scores"] == [0.0] * model.cfg.d_model and nodes["m1"]["neurons"] == [False] * model.cfg.d_model
