"""Exact per-edge scores (method ``exact``): every edge and head input removed alone, batched through
the patcher, equal to a naive loop of one hooked forward pass per candidate.

``PYTHONPATH=.:tests python tests/test_attribution_exact.py`` (from the repository root) prints the speed-up over the naive loop (not a test)."""

import time

import pytest
import torch
from factories import random_task, small_model
from naive_eap import naive_exact_scores, naive_logit_diff

from acdc_engine import AcdcError, build_graph, discover
from acdc_engine.core.mask import CircuitMask
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods.exact import exact_scores, resume_layer

MODELS = ["gpt2-style", "attn-only", "llama"]  # attribution_models (conftest.py)


def assert_equal_to_naive(circuit, naive):
    graph = circuit.graph
    scale = max(abs(v) for v in naive.values())
    assert scale > 1e-3
    for name in graph.edge_names():
        assert float(circuit.scores.edges[graph.parse_edge(name)]) == pytest.approx(naive[name], rel=1e-9, abs=1e-12 * scale), name
    for name in graph.head_input_names():
        assert float(circuit.scores.head_inputs[graph.parse_head_input(name)]) == pytest.approx(naive[name], rel=1e-9, abs=1e-12 * scale), name


@pytest.mark.parametrize("name", MODELS)
def test_exact_scores_equal_a_naive_loop_of_one_hooked_pass_per_edge(attribution_models, name):
    model, task = attribution_models(name)
    circuit = discover(model, task, method="exact", metric="logit_diff", top_n=6, batch_size=5, progress=False)
    metric = naive_logit_diff(task.answers, task.wrong_answers, task.positions.tolist())
    assert_equal_to_naive(circuit, naive_exact_scores(model, task.clean, task.corrupted, metric))
    assert int(circuit.kept.edges.sum()) == 6


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_exact_scores_under_zero_and_mean_ablation(attribution_models, ablation):
    model, task = attribution_models("gpt2-style")
    circuit = discover(model, task, method="exact", metric="logit_diff", ablation=ablation, top_n=3, batch_size=8, progress=False)
    metric = naive_logit_diff(task.answers, task.wrong_answers, task.positions.tolist())
    assert_equal_to_naive(circuit, naive_exact_scores(model, task.clean, task.corrupted, metric, ablation=ablation))


def test_exact_scores_are_the_same_bits_for_every_batch_size(attribution_models):
    model, task = attribution_models("gpt2-style")
    measurement = Measurement(model, task, "kl", "resample")
    graph = measurement.graph
    alone = exact_scores(graph, measurement.evaluate, batch_size=1)
    batched = exact_scores(graph, measurement.evaluate, batch_size=13)
    assert alone.scores.equal(batched.scores)
    assert batched.passes < alone.passes
    assert (alone.scores.edges[~graph.edge_exists] == 0).all()


def test_each_batch_resumes_at_its_receivers_layer(attribution_models):
    model, task = attribution_models("gpt2-style")
    measurement = Measurement(model, task, "kl", "resample")
    graph = measurement.graph
    starts = []

    def evaluate(masks: CircuitMask, start_layer: int):
        starts.append(start_layer)
        return measurement.evaluate(masks, start_layer)

    exact_scores(graph, evaluate, batch_size=1000)
    assert starts == [1, 0, 1]  # the full model, then layer 0's receivers, then layer 1's and the logits
    assert resume_layer(graph, graph.receiver_layer[graph.receiver_index["m0"]]) == 0
    assert resume_layer(graph, graph.receiver_layer[graph.receiver_index["logits"]]) == graph.shape.n_layers - 1


def test_the_exact_method_records_its_definition_and_refuses_a_bad_batch_size(attribution_models):
    model, task = attribution_models("attn-only")
    circuit = discover(model, task, method="exact", score_threshold=0.01, progress=False)
    assert circuit.method["name"] == "exact" and circuit.method["score_threshold"] == 0.01
    assert "metric(full model without the edge) - metric(full model)" in circuit.method["score"]
    assert torch.equal(circuit.kept.edges, graph_edges_at_least(circuit, 0.01))
    with pytest.raises(AcdcError, match="batch_size must be a positive integer"):
        discover("no-such-model", task, method="exact", top_n=3, batch_size=0, progress=False)


def graph_edges_at_least(circuit, threshold):
    return circuit.graph.edge_exists & (circuit.scores.edges.abs() >= threshold)


# ----- the speed-up over the naive loop (printed, not asserted) --------------------------------------


def _time(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def benchmark() -> None:
    from acdc_engine.models import load_model
    from acdc_engine.tasks import make_induction

    torch.set_num_threads(1)
    toy = load_model("toy-induction-2l")
    cases = [
        ("toy-induction-2l", toy, make_induction(toy.cfg.d_vocab)),
        ("4-layer, 4 heads, MLPs, d_model 64, float32", small_model(False, seed=0, n_layers=4, n_heads=4, d_model=64, d_head=16, d_mlp=128, dtype=torch.float32),
         random_task(n_prompts=10, n_pos=12, positions=[11])),
    ]
    for label, model, task in cases:
        graph = build_graph(model.cfg)
        measurement = Measurement(model, task, "kl", "resample")
        engine, engine_seconds = _time(lambda: exact_scores(graph, measurement.evaluate, batch_size=measurement.patcher.auto_batch_size()))
        from naive_reference import naive_kl

        with torch.no_grad():
            clean_logits = model(task.clean)
        metric = lambda logits: naive_kl(clean_logits, logits, task.positions.tolist())  # noqa: E731
        naive, naive_seconds = _time(lambda: naive_exact_scores(model, task.clean, task.corrupted, metric))
        worst = max(abs(float(engine.scores.edges[graph.parse_edge(e)]) - naive[e]) for e in graph.edge_names())
        print(
            f"{label}: {graph.n_edges} edges + {graph.full_head_input_mask().numel()} head inputs; "
            f"batched {engine_seconds:.2f} s ({engine.passes} passes), naive loop {naive_seconds:.2f} s, "
            f"speed-up {naive_seconds / engine_seconds:.1f}x; largest |difference| {worst:.1e}"
        )


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    benchmark()
