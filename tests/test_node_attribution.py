"""Node-level attribution (eap-nodes, eap-ig-nodes, eap-ig-activations-nodes, exact-nodes) against
independent naive implementations: autograd over plainly hooked passes with the gradient read where
EAP-IG's attribute_node reads it, and one hooked pass per node for exact scores; on a GPT-2-style
model, an attention-only one and a Llama (grouped-query attention, RMSNorm, rotary) built offline."""

import io
import json
import os
import subprocess
import sys

import pytest
import torch
from factories import random_task, small_model
from naive_eap import naive_logit_diff, naive_logit_diff_tensor
from naive_node import activation_ig_runs, eap_runs, input_ig_runs, naive_exact_node_scores, naive_neuron_scores
from omegaconf import OmegaConf
from test_variable_length import LENGTHS, ragged_task

from acdc_engine import AcdcError, TaskData, discover, load_circuit
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.formats.eap_ig import circuit_from_eap_ig_pt, circuit_to_eap_ig, circuit_to_eap_ig_pt
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.eap import ZeroGradientWarning
from acdc_engine.methods.node_attribution import EapIgNodesConfig, EapIgNodesParams, exact_node_scores
from acdc_engine.methods.node_circuits import node_circuit

MODELS = ["gpt2-style", "attn-only", "llama"]  # attribution_models (conftest.py)
GRADIENT_REL = {"gpt2-style": 1e-8, "attn-only": 1e-8, "llama": 1e-5}
"""The Llama family computes its norms in float32 (upcast), as Hugging Face's do even in a float64
model: autograd takes gradients back through them in float32, the engine in float64 from their
float32 statistics (``acdc_engine.patching.qkv_gradients``), so the two agree to float32's
precision accumulated over the layers."""
NODE_METHODS = ["eap-nodes", "eap-ig-nodes", "eap-ig-activations-nodes", "exact-nodes"]


def run(model, task, method, **kwargs):
    kwargs.setdefault("top_n", 4)
    return discover(model, task, method=method, metric="logit_diff", progress=False, **kwargs)


def naive_metric(task):
    return naive_logit_diff_tensor(task.answers, task.wrong_answers, task.positions.tolist())


def node_scores(circuit):
    """The method block's node scores as float64 [n_senders]."""
    return torch.tensor(list(circuit.method["node_scores"].values()), dtype=torch.float64)


def assert_node_scores_match(circuit, naive, rel=1e-8):
    engine = circuit.method["node_scores"]
    naive = {node: float(value.sum()) if torch.is_tensor(value) else value for node, value in naive.items()}
    assert list(engine) == list(naive)
    scale = max(abs(v) for v in naive.values())
    assert scale > 1e-3  # not vacuous
    for node, value in naive.items():
        assert engine[node] == pytest.approx(value, rel=rel, abs=1e-10 * scale), node


# ----- the gradient methods against autograd at the nodes' hooks ------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_eap_node_scores_equal_autograd_at_eap_igs_node_hooks(attribution_models, name):
    model, task = attribution_models(name)
    naive = naive_neuron_scores(model, task.clean, task.corrupted, naive_metric(task), eap_runs())
    assert_node_scores_match(run(model, task, "eap-nodes"), naive, GRADIENT_REL[name])


def test_the_output_option_takes_an_mlps_gradient_at_its_output(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-nodes", mlp_gradient="output")
    naive = naive_neuron_scores(model, task.clean, task.corrupted, naive_metric(task), eap_runs(), mlp_gradient="output")
    assert_node_scores_match(circuit, naive)
    assert circuit.method["node_scores"]["m0"] != pytest.approx(run(model, task, "eap-nodes").method["node_scores"]["m0"], rel=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_eap_ig_node_scores_equal_autograd_at_attribute_nodes_points_k_over_n_for_k_from_1_to_n(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "eap-ig-nodes", steps=3)
    assert circuit.method["interpolation"] == "right-riemann" and circuit.run["backward_passes"] == 3
    runs = input_ig_runs(model, task.clean, task.corrupted, [1 / 3, 2 / 3, 1.0])
    assert_node_scores_match(circuit, naive_neuron_scores(model, task.clean, task.corrupted, naive_metric(task), runs), GRADIENT_REL[name])


def test_eap_ig_nodes_at_the_edge_methods_points_is_a_named_option(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig-nodes", steps=2, interpolation="eap-ig")
    runs = input_ig_runs(model, task.clean, task.corrupted, [0.0, 0.5])
    assert_node_scores_match(circuit, naive_neuron_scores(model, task.clean, task.corrupted, naive_metric(task), runs))


def test_eap_ig_nodes_defaults_to_attribute_nodes_points_in_the_api_the_schema_and_the_config_file():
    assert EapIgNodesParams(top_n=3).interpolation == EapIgNodesConfig().interpolation == "right-riemann"
    assert OmegaConf.load(CONF_DIR / "method" / "eap-ig-nodes.yaml").interpolation == "right-riemann"


@pytest.mark.parametrize("name", MODELS)
def test_eap_ig_activations_node_scores_equal_autograd_over_every_groups_runs(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "eap-ig-activations-nodes", steps=2)
    runs = activation_ig_runs(model, task.clean, task.corrupted, 2)
    assert circuit.run["backward_passes"] == len(runs)
    assert_node_scores_match(circuit, naive_neuron_scores(model, task.clean, task.corrupted, naive_metric(task), runs), GRADIENT_REL[name])


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_node_gradient_scores_use_the_ablated_value_under_zero_and_mean_ablation(attribution_models, ablation):
    model, task = attribution_models("gpt2-style")
    metric = naive_metric(task)
    eap = naive_neuron_scores(model, task.clean, task.corrupted, metric, eap_runs(), ablation=ablation)
    assert_node_scores_match(run(model, task, "eap-nodes", ablation=ablation), eap)
    runs = activation_ig_runs(model, task.clean, task.corrupted, 2, ablation=ablation)
    activations = naive_neuron_scores(model, task.clean, task.corrupted, metric, runs, ablation=ablation)
    assert_node_scores_match(run(model, task, "eap-ig-activations-nodes", steps=2, ablation=ablation), activations)


@pytest.mark.parametrize("method, edge_method, params", [
    ("eap-nodes", "eap", {}),
    ("eap-ig-nodes", "eap-ig", {"steps": 2, "interpolation": "right-riemann"}),
    ("eap-ig-activations-nodes", "eap-ig-activations", {"steps": 2}),
])
def test_the_input_and_each_head_score_the_sum_of_their_edges_scores(attribution_models, method, edge_method, params):
    model, task = attribution_models("gpt2-style")
    nodes = run(model, task, method, **params)
    edges = run(model, task, edge_method, **params).scores.edges.sum(1)
    for s, name in enumerate(nodes.graph.senders):
        if not name.startswith("m"):
            assert nodes.method["node_scores"][name] == pytest.approx(float(edges[s]), rel=1e-9, abs=1e-12), name


def test_eap_nodes_warns_that_kl_has_no_gradient_at_the_clean_model(attribution_models):
    model, task = attribution_models("attn-only")
    with pytest.warns(ZeroGradientWarning, match="EAP with the KL metric"):
        discover(model, task, method="eap-nodes", metric="kl", top_n=2, progress=False)


# ----- exact node scores ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_exact_node_scores_equal_one_hooked_pass_per_node(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "exact-nodes", batch_size=3)
    metric = naive_logit_diff(task.answers, task.wrong_answers, task.positions.tolist())
    assert_node_scores_match(circuit, naive_exact_node_scores(model, task.clean, task.corrupted, metric), rel=1e-9)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_exact_node_scores_under_zero_and_mean_ablation(attribution_models, ablation):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "exact-nodes", ablation=ablation, batch_size=4)
    metric = naive_logit_diff(task.answers, task.wrong_answers, task.positions.tolist())
    assert_node_scores_match(circuit, naive_exact_node_scores(model, task.clean, task.corrupted, metric, ablation), rel=1e-9)


def test_exact_node_scores_are_the_same_bits_for_every_batch_size(attribution_models):
    model, task = attribution_models("gpt2-style")
    measurement = Measurement(model, task, "kl")
    alone = exact_node_scores(measurement.graph, measurement.evaluate, batch_size=1)
    batched = exact_node_scores(measurement.graph, measurement.evaluate, batch_size=7)
    assert torch.equal(alone.scores, batched.scores) and batched.passes < alone.passes


def test_exact_node_scores_on_a_variable_length_task_under_mean_ablation_equal_the_naive_loop():
    model = small_model(False, seed=5)
    corrupted_lengths = [7, 5, 7, 6, 4, 5]
    task = ragged_task(LENGTHS, corrupted_lengths, seed=5)
    circuit = discover(model, task, method="exact-nodes", metric="logit_diff", ablation="mean", top_n=3, progress=False)

    def metric(logits):  # -(logit[answer] - logit[wrong]) at each prompt's last real token
        rows = torch.arange(len(LENGTHS))
        at = logits[rows, torch.tensor(LENGTHS) - 1]
        return float(-(at[rows, task.answers[:, 0]] - at[rows, task.wrong_answers[:, 0]]).mean())

    naive = naive_exact_node_scores(model, task.clean, task.corrupted, metric, "mean", corrupted_lengths)
    assert_node_scores_match(circuit, naive, rel=1e-9)


@pytest.mark.parametrize("method", NODE_METHODS[:3])
def test_gradient_node_scores_on_a_variable_length_task_equal_each_length_group_alone_combined(method):
    model = small_model(False, seed=7)
    task = ragged_task(LENGTHS, seed=7)
    scores = node_scores(run(model, task, method, top_n=0))
    combined = torch.zeros_like(scores)
    for n in sorted(set(LENGTHS)):
        group = [i for i, length in enumerate(LENGTHS) if length == n]
        alone = TaskData("group", task.clean[group, :n], task.corrupted[group, :n],
                         answers=task.answers[group], wrong_answers=task.wrong_answers[group])
        combined += node_scores(run(model, alone, method, top_n=0)) * len(group) / len(LENGTHS)
    torch.testing.assert_close(scores, combined, rtol=1e-7, atol=1e-10)


# ----- the circuit ----------------------------------------------------------------------------------


def test_the_circuit_is_the_top_n_nodes_by_abs_score_and_the_edges_between_them(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "exact-nodes", top_n=5)
    scores = node_scores(circuit)
    top = torch.zeros(len(scores), dtype=torch.bool)
    top[scores.abs().argsort(descending=True)[:5]] = True
    assert circuit.kept.equal(node_circuit(circuit.graph, top))
    by_threshold = run(model, task, "exact-nodes", top_n=None, score_threshold=float(scores.abs().sort(descending=True).values[4]))
    assert by_threshold.kept.equal(circuit.kept)


def test_a_top_n_beyond_the_nodes_keeps_every_node_and_a_negative_one_is_refused(attribution_models):
    model, task = attribution_models("attn-only")
    assert run(model, task, "eap-nodes", top_n=100).kept.equal(node_circuit(build_graph_of(model), torch.ones(7, dtype=torch.bool)))
    with pytest.raises(AcdcError, match="top_n must be a number of nodes >= 0, got -1"):
        discover("no-such-model", random_task(), method="eap-nodes", top_n=-1, progress=False)


def build_graph_of(model):
    from acdc_engine import build_graph

    return build_graph(model.cfg)


def test_an_unknown_mlp_gradient_is_refused_before_the_model_loads():
    with pytest.raises(AcdcError, match="unknown mlp_gradient 'middle'; choose one of input, output"):
        discover("no-such-model", random_task(), method="eap-ig-nodes", mlp_gradient="middle", top_n=3, progress=False)


# ----- the methods: registry, files, command line ---------------------------------------------------


@pytest.mark.parametrize("method", NODE_METHODS)
def test_each_node_method_is_a_score_method_whose_block_records_its_definition(attribution_models, method):
    assert METHODS[method].circuits is CircuitSelection.SCORES
    assert OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml").name == method
    model, task = attribution_models("attn-only")
    circuit = run(model, task, method)
    assert {"name", "ablation", "level", "top_n", "score_threshold", "sign", "scaling", "node_scores"} <= set(circuit.method)
    assert circuit.method["level"] == "node" and list(circuit.method["node_scores"]) == circuit.graph.senders


def test_the_mib_node_track_file_holds_every_nodes_score_in_eap_igs_layout(attribution_models, tmp_path):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig-nodes", steps=2, top_n=0)
    scores = circuit.method["node_scores"]
    nodes = circuit_to_eap_ig(circuit, d_model=model.cfg.d_model)["nodes"]
    assert {name: node["score"] for name, node in nodes.items() if name != "logits"} == scores
    raw = circuit_to_eap_ig_pt(circuit, d_model=model.cfg.d_model)
    data = torch.load(io.BytesIO(raw), weights_only=True)
    assert data["src_nodes"] == list(scores) and data["nodes_scores"].tolist() == pytest.approx(list(scores.values()), rel=1e-6)
    assert circuit_from_eap_ig_pt(raw).extra["node_scores"] == pytest.approx(scores, rel=1e-6)


def test_the_command_line_runs_a_node_method(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", "method=eap-ig-nodes", "method.steps=2",
               "method.top_n=3", "method.mlp_gradient=output", "progress=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    data = json.loads(path.read_text())
    assert data["method"]["name"] == "eap-ig-nodes" and data["method"]["mlp_gradient"] == "output"
    assert load_circuit(path).method["node_scores"] == data["method"]["node_scores"]
