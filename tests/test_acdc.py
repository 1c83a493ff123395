"""Exact ACDC: the engine's circuit is identical to the naive per-edge reference's."""

import math

import pytest
import torch
from factories import random_task, small_model
from naive_reference import naive_acdc, naive_kl

from acdc_engine import AcdcError, build_graph, discover
from acdc_engine.methods.acdc import run_acdc, visiting_order
from acdc_engine.formats.circuit_file import circuit_to_dict


def engine_and_naive(model, task, threshold, ablation="resample", batch_size=1):
    circuit = discover(model, task, threshold=threshold, ablation=ablation, batch_size=batch_size, progress=False)
    clean_logits = model(task.clean)
    positions = task.positions.tolist()
    reference = naive_acdc(
        model, task.clean, task.corrupted, lambda logits: naive_kl(clean_logits, logits, positions), threshold, ablation
    )
    return circuit, reference


def decisions(circuit):
    data = circuit_to_dict(circuit)
    return (
        {name: e["kept"] for name, e in data["edges"].items()},
        {name: e["kept"] for name, e in data["head_inputs"].items()},
    )


CASES = [
    (True, 0, 0.0005),
    (True, 0, 0.005),
    (True, 1, 0.02),
    (False, 0, 0.0005),
    (False, 0, 0.005),
    (False, 2, 0.02),
]


@pytest.mark.parametrize("batch_size", [1, 5, 64], ids=["sequential", "batch5", "batch64"])
@pytest.mark.parametrize("attn_only, seed, threshold", CASES)
def test_circuit_is_identical_to_naive_reference(attn_only, seed, threshold, batch_size):
    model = small_model(attn_only, seed=seed)
    task = random_task(seed=seed, positions=[4, 6])
    circuit, reference = engine_and_naive(model, task, threshold, batch_size=batch_size)
    edges, heads = decisions(circuit)
    assert edges == reference["edges"]
    assert heads == reference["head_inputs"]
    assert 0 < sum(edges.values()) < len(edges)


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_circuit_is_identical_to_naive_reference_under_other_ablations(ablation, batch_size):
    model = small_model(attn_only=False, seed=4)
    circuit, reference = engine_and_naive(model, random_task(seed=4), 0.005, ablation, batch_size)
    assert decisions(circuit) == (reference["edges"], reference["head_inputs"])


@pytest.mark.parametrize("batch_size", [1, 8])
def test_scores_match_naive_reference(batch_size):
    model = small_model(attn_only=False, seed=1)
    circuit, reference = engine_and_naive(model, random_task(seed=1), 0.005, batch_size=batch_size)
    data = circuit_to_dict(circuit)
    for name, entry in {**data["edges"], **data["head_inputs"]}.items():
        expected = reference["scores"][name]
        if expected is None:
            assert entry["score"] is None, name
        else:
            assert entry["score"] == pytest.approx(expected, abs=1e-12), name


def test_visiting_order_follows_the_reference_order():
    graph = build_graph(small_model(attn_only=False, n_heads=2).cfg)
    names = [c.name for c in visiting_order(graph)]
    expected_start = [
        "m1->logits", "a1.h1->logits", "a1.h0->logits", "m0->logits", "a0.h1->logits", "a0.h0->logits", "input->logits",
        "a1.h1->m1", "a1.h0->m1", "m0->m1", "a0.h1->m1", "a0.h0->m1", "input->m1",
        "a1.h1<v>", "a1.h0<v>", "a1.h1<k>", "a1.h0<k>", "a1.h1<q>", "a1.h0<q>",
        "m0->a1.h1<v>", "a0.h1->a1.h1<v>", "a0.h0->a1.h1<v>", "input->a1.h1<v>",
        "m0->a1.h0<v>",
    ]
    assert names[: len(expected_start)] == expected_start
    assert names[-1] == "input->a0.h0<q>"
    assert len(names) == graph.n_edges + 2 * 2 * 3


def test_speculative_batches_need_fewer_forward_passes_for_the_same_circuit():
    model, task = small_model(attn_only=False, seed=2), random_task(seed=2)
    sequential = discover(model, task, threshold=0.005, batch_size=1, progress=False)
    batched = discover(model, task, threshold=0.005, batch_size=16, progress=False)
    assert decisions(batched) == decisions(sequential)
    assert batched.run["forward_passes"] < sequential.run["forward_passes"]


def additive_metric(graph, seed):
    """evaluate(circuit) = the summed weights of the edges and head inputs it lacks: a removal's
    score is its own weight, so a candidate is kept exactly when its weight reaches the threshold."""
    g = torch.Generator().manual_seed(seed)
    edge_weight = torch.rand(graph.edge_exists.shape, generator=g, dtype=torch.float64)
    head_weight = torch.rand((graph.shape.n_layers, graph.shape.n_heads, 3), generator=g, dtype=torch.float64)

    def evaluate(masks, start_layer=0):
        edge_masks, head_masks = masks.edges, masks.head_inputs
        lacking_edges = (~edge_masks & graph.edge_exists).double()
        return (lacking_edges * edge_weight).sum((1, 2)) + ((~head_masks).double() * head_weight).sum((1, 2, 3))

    return evaluate


def test_speculation_decides_past_kept_candidates_within_one_pass():
    graph = build_graph(small_model(attn_only=True, n_heads=4).cfg)
    evaluate = additive_metric(graph, seed=0)
    sequential = run_acdc(graph, evaluate, 0.3, batch_size=1, progress=False)
    batched = run_acdc(graph, evaluate, 0.3, batch_size=16, progress=False)
    assert torch.equal(batched.kept.edges, sequential.kept.edges)
    assert torch.equal(batched.kept.head_inputs, sequential.kept.head_inputs)
    assert torch.equal(batched.scores.edges.nan_to_num(-1), sequential.scores.edges.nan_to_num(-1))
    kept_tested = int((batched.kept.edges & ~batched.scores.edges.isnan()).sum())
    # a pass that stopped at every kept candidate would need more than one pass per kept candidate
    assert kept_tested > 10 and batched.forward_passes < kept_tested


def test_a_huge_threshold_removes_everything():
    circuit = discover(small_model(attn_only=True), random_task(), threshold=1e9, progress=False)
    assert circuit.n_edges == 0
    assert circuit.metric["circuit"] == pytest.approx(circuit.metric["empty"], abs=1e-12)


def test_threshold_zero_keeps_every_edge_whose_removal_hurts():
    circuit = discover(small_model(attn_only=True), random_task(), threshold=0.0, progress=False)
    scores = circuit.scores.edges[circuit.kept.edges & ~circuit.scores.edges.isnan()]
    assert (scores >= 0).all() and len(scores) > 0


def test_emitted_circuit_is_the_kept_edges_on_input_to_logits_paths():
    import networkx as nx

    circuit = discover(small_model(attn_only=False, seed=2), random_task(seed=2), threshold=0.005, progress=False)
    g = circuit.graph.to_networkx(circuit.kept)
    for name in circuit.graph.edge_names():
        sender, receiver = name.split("->")
        on_path = nx.has_path(g, "input", sender) and nx.has_path(g, receiver, "logits")
        s, r = circuit.graph.parse_edge(name)
        assert bool(circuit.in_graph.edges[s, r]) == (bool(circuit.kept.edges[s, r]) and on_path), name


def test_under_resample_the_emitted_circuit_scores_like_the_raw_result():
    model = small_model(attn_only=False, seed=2)
    task = random_task(seed=2)
    circuit = discover(model, task, threshold=0.005, progress=False)
    raw = discover(model, task, threshold=0.005, progress=False)  # same again: deterministic
    assert circuit_to_dict(raw)["edges"] == circuit_to_dict(circuit)["edges"]
    from acdc_engine.patching import EdgePatcher
    from acdc_engine.measure.metrics import kl_divergence

    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=circuit.graph.shape.split_input)
    metric = kl_divergence(patcher.logits(circuit.graph.full_mask()))
    raw_value = float(metric(patcher.logits(circuit.kept)))
    assert circuit.metric["circuit"] == pytest.approx(raw_value, abs=1e-10)


@pytest.mark.parametrize("threshold", [-0.1, math.nan, math.inf])
def test_negative_or_nan_threshold_is_rejected(threshold):
    with pytest.raises(AcdcError, match="threshold must be a finite number >= 0"):
        discover(small_model(attn_only=True), random_task(), threshold=threshold, progress=False)


def test_metric_that_needs_answers_is_rejected_for_a_task_without_them():
    from acdc_engine import TaskData

    task = TaskData("bare", torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(AcdcError, match="metric 'logit_diff' needs answer tokens"):
        discover(small_model(attn_only=True), task, metric="logit_diff", progress=False)


def test_token_ids_outside_the_vocabulary_are_rejected():
    task = random_task(d_vocab=50)
    with pytest.raises(AcdcError, match=r"outside the model's vocabulary \[0, 20\)"):
        discover(small_model(attn_only=True), task, progress=False)


def test_speculation_guesses_a_segments_next_candidate_from_its_own_latest_decisions():
    from acdc_engine.methods.acdc import _start, keep_rate, segment_keep_rate, visiting_segments

    graph = build_graph(small_model(attn_only=True, n_heads=4).cfg)
    state = _start(graph, lambda masks, start_layer=0: torch.zeros(len(masks.edges), dtype=torch.float64), 1)
    earlier, segment = visiting_segments(graph)[0].candidates, visiting_segments(graph)[-1].candidates
    for candidate in earlier:  # the run so far removed everything it tested
        state.record_score(candidate, 0.0)
        state.set(candidate, False)
    for candidate in segment[:4]:  # this segment's first four tested candidates were kept
        state.record_score(candidate, 1.0)
    assert keep_rate(state) < 0.5 < segment_keep_rate(state, segment, 4)
    assert segment_keep_rate(state, segment, 0) == pytest.approx(keep_rate(state))  # nothing tested in it yet
