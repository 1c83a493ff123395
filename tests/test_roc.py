"""ROC against a ground truth: points, AUC, node membership, and exact threshold sweeps."""

import math

import pytest
import torch
from factories import random_task, small_model

from acdc_engine import AcdcError, discover
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.evaluation.roc import node_mask, node_names, roc_auc, roc_from_circuits, roc_from_scores
from acdc_engine.evaluation.sweep import acdc_threshold_sweep
from acdc_engine.formats.circuit_file import circuit_from_dict

ONE_LAYER = {"n_layers": 1, "n_heads": 2, "attn_only": True}  # edges: input->{a0.h0,a0.h1}<q,k,v>, 3 -> logits


def hand_circuit(edges, model=ONE_LAYER):
    """A circuit file's content with exactly ``edges`` in the circuit."""
    from acdc_engine.core.graph import GraphShape, build_graph

    shape = GraphShape(model["n_layers"], model["n_heads"], not model["attn_only"])
    names = build_graph(shape).edge_names()
    unknown = set(edges) - set(names)
    assert not unknown, unknown
    return circuit_from_dict({"model": model, "edges": {name: {"in_graph": name in edges} for name in names}})


TRUTH_EDGES = {"input->a0.h0<v>", "a0.h0->logits"}


def scores_for(circuit, values):
    scores = torch.zeros(circuit.graph.edge_exists.shape, dtype=torch.float64)
    for name, value in values.items():
        scores[circuit.graph.parse_edge(name)] = value
    return scores


def test_auc_of_a_perfect_point_is_one_and_of_the_diagonal_is_one_half():
    assert roc_auc([(0.0, 1.0)]) == 1.0
    assert roc_auc([(0.5, 0.5)]) == 0.5
    assert roc_auc([]) == 0.5  # only (0, 0) and (1, 1)
    assert roc_auc([(1.0, 0.0)]) == 0.0


def test_auc_is_the_trapezoid_area_through_the_sorted_points():
    # (0,0) (0.25,0.5) (0.5,1) (1,1): 0.25*0.25 + 0.25*0.75 + 0.5*1
    assert roc_auc([(0.5, 1.0), (0.25, 0.5)]) == pytest.approx(0.0625 + 0.1875 + 0.5)


def test_circuit_equal_to_the_truth_is_the_point_zero_one():
    truth = hand_circuit(TRUTH_EDGES)
    curve = roc_from_circuits(truth, [hand_circuit(TRUTH_EDGES)])
    (point,) = curve.points
    assert (point.fpr, point.tpr, point.size) == (0.0, 1.0, 2)
    assert curve.auc == 1.0


def test_edge_rates_count_true_and_false_positives_over_every_edge():
    truth = hand_circuit(TRUTH_EDGES)  # 2 positives among the 9 edges: 7 negatives
    predicted = hand_circuit({"input->a0.h0<v>", "input->a0.h1<q>", "a0.h1->logits"})
    (point,) = roc_from_circuits(truth, [predicted]).points
    assert (point.tp, point.fp) == (1, 2)
    assert (point.tpr, point.fpr) == (0.5, 2 / 7)


def test_a_node_is_in_a_circuit_when_it_has_an_in_graph_edge_in_or_out():
    circuit = hand_circuit({"input->a0.h1<k>"})
    members = dict(zip(node_names(circuit.graph), node_mask(circuit.graph, circuit.in_graph.edges).tolist()))
    assert members == {"input": True, "a0.h0": False, "a0.h1": True, "logits": False}


def test_score_ranking_gives_one_point_per_distinct_absolute_score():
    truth = hand_circuit(TRUTH_EDGES)
    scores = scores_for(truth, {"input->a0.h0<v>": -3.0, "a0.h0->logits": 2.0, "input->a0.h1<q>": 2.0})
    curve = roc_from_scores(truth, scores)
    # cuts: 3 (one edge, true), 2 (two more: one true, one false), 0 (the other six)
    assert [(p.cut, p.tp, p.fp, p.size) for p in curve.points] == [(3.0, 1, 0, 1), (2.0, 2, 1, 3), (0.0, 2, 7, 9)]


def test_node_ranking_cuts_give_the_node_sets_of_the_edge_ranking_cuts():
    g = torch.Generator().manual_seed(0)
    truth = hand_circuit(TRUTH_EDGES)
    scores = torch.randn(truth.graph.edge_exists.shape, generator=g, dtype=torch.float64) * truth.graph.edge_exists
    nodes = roc_from_scores(truth, scores, level="node")
    for point in nodes.points:
        prefix = (scores.abs() >= point.cut) & truth.graph.edge_exists
        assert point.size == int(node_mask(truth.graph, prefix).sum())


def test_a_truth_without_negatives_has_no_roc():
    everything = hand_circuit(set(hand_circuit(set()).graph.edge_names()))
    with pytest.raises(AcdcError, match="at least one of each"):
        roc_from_circuits(everything, [everything])


def test_a_circuit_of_another_graph_is_refused():
    truth = hand_circuit(TRUTH_EDGES)
    other = hand_circuit({"input->logits"}, {"n_layers": 1, "n_heads": 3, "attn_only": True})
    with pytest.raises(AcdcError, match="differs"):
        roc_from_circuits(truth, [other])


def test_ranking_refuses_untested_scores():
    truth = hand_circuit(TRUTH_EDGES)
    scores = scores_for(truth, {}).fill_(math.nan)
    with pytest.raises(AcdcError, match="NaN"):
        roc_from_scores(truth, scores)


# ----- threshold sweeps ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_setting():
    return small_model(attn_only=False, seed=3), random_task()


def test_sweep_circuits_equal_plain_runs_at_every_threshold(sweep_setting):
    model, task = sweep_setting
    thresholds = [0.02, 0.0005, 0.005]
    sweep = acdc_threshold_sweep(model, task, thresholds, batch_size=4, progress=False)
    for threshold, swept in zip(thresholds, sweep.circuits):
        plain = discover(model, task, threshold=threshold, batch_size=4, progress=False)
        assert torch.equal(swept.kept.edges, plain.kept.edges)
        assert torch.equal(swept.kept.head_inputs, plain.kept.head_inputs)
        assert torch.equal(swept.in_graph.edges, plain.in_graph.edges)
        torch.testing.assert_close(swept.scores.edges, plain.scores.edges, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(swept.scores.head_inputs, plain.scores.head_inputs, rtol=0, atol=0, equal_nan=True)
        assert swept.metric == plain.metric


def test_sweep_shares_the_evaluations_its_runs_have_in_common(sweep_setting):
    model, task = sweep_setting
    sweep = acdc_threshold_sweep(model, task, [0.005, 0.005], batch_size=4, progress=False)
    first_run = sweep.cache.circuits_computed
    assert sweep.cache.circuits_requested == 2 * first_run  # the repeat was served from the cache
    assert sweep.cache.passes_computed == sweep.cache.passes_requested / 2


def test_a_metric_cache_refuses_a_second_setting(sweep_setting):
    model, task = sweep_setting
    cache = MetricCache()
    discover(model, task, threshold=0.01, metric_cache=cache, progress=False)
    with pytest.raises(AcdcError, match="MetricCache serves one"):
        discover(model, task, threshold=0.01, metric="nll", metric_cache=cache, progress=False)


# ----- the acdc-evaluate command ------------------------------------------------------------------


def test_acdc_evaluate_writes_roc_and_faithfulness_files_against_a_truth_file(tmp_path):
    import os
    import subprocess
    import sys

    from acdc_engine.formats.circuit_file import save_circuit

    induction = {"input->a0.h3<v>", "a0.h3->a1.h2<k>", "input->a1.h2<q>", "input->a1.h2<v>", "a1.h2->logits"}
    truth = save_circuit(hand_circuit(induction, {"n_layers": 2, "n_heads": 4, "attn_only": True}), tmp_path / "truth.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "acdc_engine.commands.evaluate", f"truth={truth}", "thresholds=[0.01,0.3]", "methods=[acdc,eap]"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (folder,) = {p.parent for p in (tmp_path / "outputs").rglob("roc.csv")}
    expected = {f"{stem}.{ext}" for stem in ("roc", "faithfulness") for ext in ("csv", "json", "png", "svg")}
    assert expected <= {p.name for p in folder.iterdir()}
    assert "| ACDC |" in result.stdout and "| EAP |" in result.stdout and "edge AUC" in result.stdout
