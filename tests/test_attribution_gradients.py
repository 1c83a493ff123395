"""EAP-IG's gradient methods as registry entries, against independent naive implementations:
EAP-IG-inputs at EAP-IG's points (k / n, k = 0 .. n-1), EAP-IG-activations and clean-corrupted,
on a GPT-2-style model, an attention-only one and a Llama (grouped-query attention, RMSNorm,
rotary) built offline."""

import math

import pytest
import torch
from factories import random_task, small_model
from naive_eap import (
    naive_clean_corrupted_scores,
    naive_edge_scores,
    naive_ig_activations_scores,
    naive_input_ig_scores,
    naive_logit_diff,
    naive_logit_diff_tensor,
)
from omegaconf import OmegaConf

from acdc_engine import AcdcError, build_graph, discover
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.measure.metrics import make_metric
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.attribution import sender_groups
from acdc_engine.methods.eap import EapIgConfig, EapIgParams, eap_ig_scores, ig_alphas
from acdc_engine.patching import EdgePatcher

MODELS = ["gpt2-style", "attn-only", "llama"]  # attribution_models (conftest.py)
REL = {"llama": 1e-5}
"""The llama's RMSNorm computes in float32, as Hugging Face's does even in a float64 model; autograd
takes gradients back through it in float32, the engine in float64 from its float32 statistics and in
factors (``acdc_engine.patching.qkv_gradients``), so engine and reference agree to float32's
precision there. The other models compute in float64 throughout."""


def by_name(graph, scores):
    return {name: float(scores[graph.parse_edge(name)]) for name in graph.edge_names()}


def assert_scores_match(graph, engine, naive, rel=1e-8):
    engine = by_name(graph, engine)
    assert engine.keys() == naive.keys()
    scale = max(abs(v) for v in naive.values())
    assert scale > 1e-3  # the comparison is not vacuous
    for name, value in naive.items():
        assert engine[name] == pytest.approx(value, rel=rel, abs=1e-9 * scale), name


def naive_metrics(task):
    positions = task.positions.tolist()
    return naive_logit_diff(task.answers, task.wrong_answers, positions), naive_logit_diff_tensor(task.answers, task.wrong_answers, positions)


def run(model, task, method, **kwargs):
    return discover(model, task, method=method, metric="logit_diff", top_n=5, progress=False, **kwargs)


# ----- EAP-IG-inputs at EAP-IG's points ------------------------------------------------------------


def test_eap_ig_points_are_k_over_n_for_k_from_0_to_n_minus_1_exactly():
    for n in (1, 3, 4, 7, 30):
        assert ig_alphas(n, "eap-ig") == [k / n for k in range(n)]
    assert ig_alphas(4, "eap-ig") == [0.0, 0.25, 0.5, 0.75]
    assert ig_alphas(4, "right-riemann") == ig_alphas(4, "right") == [0.25, 0.5, 0.75, 1.0]


def test_the_eap_ig_method_defaults_to_eap_ig_points_in_the_api_the_schema_and_the_config_file():
    assert EapIgParams(top_n=3).interpolation == "eap-ig"
    assert EapIgConfig().interpolation == "eap-ig"
    assert OmegaConf.load(CONF_DIR / "method" / "eap-ig.yaml").interpolation == "eap-ig"


@pytest.mark.parametrize("name", MODELS)
def test_eap_ig_scores_equal_the_naive_finite_difference_at_eap_ig_points(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "eap-ig", steps=3)
    assert circuit.method["interpolation"] == "eap-ig" and circuit.method["steps"] == 3
    graph = build_graph(model.cfg)
    metric, metric_tensor = naive_metrics(task)
    if name == "llama":  # finite differences over every edge are slow on the bridge model: autograd
        naive = naive_input_ig_scores(model, task.clean, task.corrupted, metric_tensor, alphas=[0, 1 / 3, 2 / 3])
    else:
        naive = naive_edge_scores(model, task.clean, task.corrupted, metric, alphas=[0, 1 / 3, 2 / 3])
    assert_scores_match(graph, circuit.scores.edges, naive, rel=REL.get(name, 1e-6))


def test_eap_ig_naive_autograd_and_finite_difference_references_agree(attribution_models):
    model, task = attribution_models("attn-only")
    metric, metric_tensor = naive_metrics(task)
    by_autograd = naive_input_ig_scores(model, task.clean, task.corrupted, metric_tensor, alphas=[0, 0.5])
    by_differences = naive_edge_scores(model, task.clean, task.corrupted, metric, alphas=[0, 0.5])
    for edge, value in by_differences.items():
        assert by_autograd[edge] == pytest.approx(value, rel=1e-6, abs=1e-9), edge


def test_the_right_riemann_option_keeps_the_old_points_and_is_recorded(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig", steps=3, interpolation="right-riemann")
    assert circuit.method["interpolation"] == "right-riemann"
    assert "k = 1 .. steps" in circuit.method["points"]
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions)
    metric = make_metric("logit_diff", task, patcher.logits(graph.full_mask()))
    assert torch.allclose(circuit.scores.edges, eap_ig_scores(patcher, metric, 3, "right"), rtol=1e-12, atol=1e-14)
    default = run(model, task, "eap-ig", steps=3)
    assert not torch.allclose(default.scores.edges, circuit.scores.edges)


def test_an_unknown_interpolation_is_refused_before_the_model_loads():
    with pytest.raises(AcdcError, match="unknown interpolation 'left'; choose one of eap-ig, right-riemann, midpoint"):
        discover("no-such-model", random_task(), method="eap-ig", interpolation="left", top_n=3, progress=False)


# ----- EAP-IG-activations ---------------------------------------------------------------------------


def test_sender_groups_are_the_input_then_each_layers_heads_then_its_mlp():
    graph = build_graph(small_model(attn_only=False).cfg, split_input=True)
    named = [[graph.senders[s] for s in group] for group in sender_groups(graph)]
    assert named == [["tok_embed", "pos_embed"], ["a0.h0", "a0.h1", "a0.h2"], ["m0"], ["a1.h0", "a1.h1", "a1.h2"], ["m1"]]


@pytest.mark.parametrize("name", MODELS)
def test_eap_ig_activations_scores_equal_the_naive_autograd_implementation(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "eap-ig-activations", steps=2)
    graph = build_graph(model.cfg)
    n_groups = 1 + graph.shape.n_layers * (2 if graph.shape.has_mlp else 1)
    assert circuit.run["backward_passes"] == 2 * n_groups
    naive = naive_ig_activations_scores(model, task.clean, task.corrupted, naive_metrics(task)[1], steps=2)
    assert_scores_match(graph, circuit.scores.edges, naive, rel=REL.get(name, 1e-8))


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_eap_ig_activations_interpolates_from_the_ablated_value_under_zero_and_mean_ablation(attribution_models, ablation):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig-activations", steps=2, ablation=ablation)
    naive = naive_ig_activations_scores(model, task.clean, task.corrupted, naive_metrics(task)[1], steps=2, ablation=ablation)
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive)


def test_eap_ig_activations_with_split_input_interpolates_both_embeddings_together(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, "eap-ig-activations", steps=2, split_input=True)
    naive = naive_ig_activations_scores(model, task.clean, task.corrupted, naive_metrics(task)[1], steps=2, split_input=True)
    assert_scores_match(build_graph(model.cfg, split_input=True), circuit.scores.edges, naive)


def test_eap_ig_activations_differs_from_eap_ig_inputs(attribution_models):
    model, task = attribution_models("gpt2-style")
    inputs = run(model, task, "eap-ig", steps=2, interpolation="right-riemann").scores.edges
    activations = run(model, task, "eap-ig-activations", steps=2).scores.edges
    assert not torch.allclose(inputs, activations, rtol=1e-3)


# ----- clean-corrupted ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_clean_corrupted_scores_equal_the_naive_autograd_implementation(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task, "clean-corrupted")
    assert circuit.run["backward_passes"] == 2
    naive = naive_clean_corrupted_scores(model, task.clean, task.corrupted, naive_metrics(task)[1])
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive, rel=REL.get(name, 1e-8))


def test_clean_corrupted_is_the_mean_of_eap_ig_inputs_at_its_two_ends(attribution_models):
    model, task = attribution_models("attn-only")
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions)
    metric = make_metric("logit_diff", task, patcher.logits(graph.full_mask()))
    ends = (eap_ig_scores(patcher, metric, 1, "eap-ig") + eap_ig_scores(patcher, metric, 1, "right")) / 2
    assert torch.allclose(run(model, task, "clean-corrupted").scores.edges, ends, rtol=1e-12, atol=1e-14)


# ----- the registry entries -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["eap-ig", "eap-ig-activations", "clean-corrupted", "exact"])
def test_each_attribution_method_is_a_score_method_with_a_config_file(method):
    assert METHODS[method].circuits is CircuitSelection.SCORES
    assert OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml").name == method


@pytest.mark.parametrize("method", ["eap-ig-activations", "clean-corrupted"])
def test_a_gradient_method_keeps_the_top_n_edges_by_abs_score_and_records_its_definition(attribution_models, method):
    model, task = attribution_models("attn-only")
    circuit = discover(model, task, method=method, metric="logit_diff", top_n=7, progress=False)
    assert int(circuit.kept.edges.sum()) == 7
    assert {"name", "ablation", "top_n", "score_threshold", "gradient", "sign", "scaling"} <= set(circuit.method)
    assert circuit.method["name"] == method
    assert all(math.isnan(x) for x in circuit.scores.head_inputs.flatten().tolist())
