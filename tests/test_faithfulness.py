"""Faithfulness: the metric of any circuit, its normalisation, MIB's CPR and CMD, method curves."""

import pytest
import torch
from factories import random_task, small_model

from acdc_engine.core.mask import CircuitMask
from acdc_engine import AcdcError, discover
from acdc_engine.evaluation.faithfulness import (
    MIB_FRACTIONS,
    CircuitEvaluator,
    FaithfulnessCurve,
    area_under,
    faithfulness_of_circuits,
    faithfulness_of_scores,
    top_fraction_masks,
)
from acdc_engine.evaluation.method_comparison import compare_methods


@pytest.fixture(scope="module")
def setting():
    return small_model(attn_only=False, seed=3), random_task()


@pytest.fixture(scope="module")
def evaluator(setting):
    model, task = setting
    return CircuitEvaluator(model, task, metric="kl")


def test_full_model_is_faithfulness_one_and_empty_circuit_zero(evaluator):
    g = evaluator.graph
    edges = torch.stack([g.full_edge_mask(), torch.zeros_like(g.edge_exists)])
    heads = torch.stack([g.full_head_input_mask(), torch.zeros_like(g.full_head_input_mask())])
    f = evaluator.faithfulness(evaluator.metrics(CircuitMask(edges, heads)))
    torch.testing.assert_close(f, torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_metric_of_a_discovered_circuit_is_the_one_its_file_reports(setting, evaluator):
    model, task = setting
    circuit = discover(model, task, threshold=0.005, progress=False)
    curve = faithfulness_of_circuits(evaluator, [circuit])
    assert curve.metric[0] == pytest.approx(circuit.metric["circuit"], rel=1e-9, abs=1e-12)
    assert evaluator.full == pytest.approx(circuit.metric["full"], abs=1e-12)
    assert evaluator.empty == pytest.approx(circuit.metric["empty"], rel=1e-9)


def test_circuits_evaluated_together_match_each_evaluated_alone(evaluator):
    g = torch.Generator().manual_seed(1)
    edges = (torch.rand((5, *evaluator.graph.edge_exists.shape), generator=g) < 0.5) & evaluator.graph.edge_exists
    heads = torch.rand((5, *evaluator.graph.full_head_input_mask().shape), generator=g) < 0.8
    together = evaluator.metrics(CircuitMask(edges, heads))
    alone = torch.cat([evaluator.metrics(CircuitMask(edges[i : i + 1], heads[i : i + 1])) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-12)


def test_undefined_faithfulness_is_an_error(evaluator):
    evaluator_copy = object.__new__(CircuitEvaluator)
    evaluator_copy.__dict__.update(evaluator.__dict__, full=0.5, empty=0.5)
    with pytest.raises(AcdcError, match="undefined"):
        evaluator_copy.faithfulness(torch.tensor([0.5]))


def test_area_under_is_the_trapezoid_rule():
    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.25 + 0.5)
    with pytest.raises(AcdcError, match="increase"):
        area_under([0.5, 0.1], [1.0, 1.0])


def test_cpr_and_cmd_of_a_perfectly_faithful_ranking():
    ones = [1.0] * len(MIB_FRACTIONS)
    curve = FaithfulnessCurve(list(MIB_FRACTIONS), [1] * 10, [0.0] * 10, ones, total_edges=1000, ranked=True)
    assert curve.cpr == pytest.approx(1.0 - 0.001)  # MIB's fractions span 0.001 .. 1
    assert curve.cmd == 0.0


def test_cpr_and_cmd_need_a_ranking():
    curve = FaithfulnessCurve([0.1], [3], [0.2], [0.7], total_edges=10, ranked=False)
    assert curve.cpr is None and curve.cmd is None


def test_top_fraction_circuits_keep_at_most_the_top_k_edges_by_absolute_score(evaluator):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(evaluator.graph.edge_exists.shape, generator=g, dtype=torch.float64) * evaluator.graph.edge_exists
    n = evaluator.graph.n_edges
    edges = top_fraction_masks(evaluator, scores, "absolute", [0.1, 0.5, 1.0]).edges
    for k, mask in zip([0.1, 0.5, 1.0], edges):
        top = set(torch.argsort(scores.abs().flatten(), descending=True, stable=True)[: int(k * n)].tolist())
        assert set(mask.flatten().nonzero().flatten().tolist()) <= top
    assert torch.equal(edges[-1], evaluator.graph.edge_exists)  # every edge: the full model


def test_faithfulness_curve_of_scores_has_one_point_per_fraction(evaluator):
    scores = torch.ones(evaluator.graph.edge_exists.shape, dtype=torch.float64)
    curve = faithfulness_of_scores(evaluator, scores, "signed", [0.25, 0.5, 1.0])
    assert curve.cuts == [0.25, 0.5, 1.0] and len(curve.faithfulness) == 3
    assert curve.faithfulness[-1] == pytest.approx(1.0)


def test_fractions_must_increase_within_zero_one(evaluator):
    scores = torch.ones(evaluator.graph.edge_exists.shape, dtype=torch.float64)
    with pytest.raises(AcdcError, match="fractions"):
        faithfulness_of_scores(evaluator, scores, "signed", [0.5, 0.2])


def test_method_comparison_writes_roc_and_faithfulness_files(setting, tmp_path):
    model, task = setting
    truth = discover(model, task, threshold=0.005, progress=False)
    comparison = compare_methods(model, task, truth=truth, methods=["acdc", "eap-ig"], thresholds=[0.001, 0.02], gradient_metric="logit_diff")
    names = {p.name for p in comparison.write(tmp_path)}
    assert names == {f"{stem}.{ext}" for stem in ("roc", "faithfulness") for ext in ("csv", "json", "png", "svg")}
    assert (tmp_path / "roc.csv").read_text().splitlines()[0] == "method,level,cut,fpr,tpr,size,tp,fp"
    assert (tmp_path / "roc.png").read_bytes().startswith(b"\x89PNG")
    table = comparison.table()
    assert "| ACDC |" in table and "| EAP-IG |" in table and "edge AUC" in table
