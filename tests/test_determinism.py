"""Determinism: the same inputs give the same circuit, run after run and for every batch size."""

import math

import pytest
import torch
from factories import random_task, small_model

from acdc_engine import build_graph, discover
from acdc_engine.methods.acdc import run_acdc
from acdc_engine.models import load_model
from acdc_engine.formats.circuit_file import circuit_to_dict

BATCH_SIZES = [1, 3, 8, 32]


def without_timing(circuit) -> dict:
    data = circuit_to_dict(circuit)
    data["run"] = {k: v for k, v in data["run"].items() if k != "seconds"}
    return data


def without_timing_and_batching(circuit) -> dict:
    """The circuit file's content but for the run's time and how it batched its passes."""
    data = circuit_to_dict(circuit)
    data["run"] = {k: v for k, v in data["run"].items() if k not in ("seconds", "batch_size", "forward_passes", "candidates_tested")}
    return data


def test_two_runs_give_identical_circuit_files_apart_from_timing():
    model = small_model(attn_only=False, seed=3, dtype=torch.float32)
    first = discover(model, random_task(), threshold=0.003, batch_size=8, progress=False)
    second = discover(model, random_task(), threshold=0.003, batch_size=8, progress=False)
    assert without_timing(first) == without_timing(second)


@pytest.fixture(scope="module")
def sequential_files():
    return {}


@pytest.mark.parametrize("batch_size", BATCH_SIZES[1:])
@pytest.mark.parametrize("model_name", ["toy-induction-2l", "toy-induction-mlp-2l"])
def test_float32_circuit_file_is_identical_for_every_batch_size(model_name, batch_size, sequential_files):
    model = load_model(model_name)
    if model_name not in sequential_files:
        sequential_files[model_name] = without_timing_and_batching(discover(model, "induction", batch_size=1, progress=False))
    batched = discover(model, "induction", batch_size=batch_size, progress=False)
    assert without_timing_and_batching(batched) == sequential_files[model_name]  # every score, bit for bit


class TieModel:
    """A synthetic ``evaluate``: the metric is the summed weight of the removed edges, and batches of
    several circuits add a last-bit error whose sign alternates along the batch, as float kernels
    whose rows depend on the batch would (the engine's CPU pass has none; a GPU's may).
    With the threshold equal to a weight, every such candidate is an exact tie."""

    def __init__(self, graph, weights):
        self.graph, self.weights = graph, weights
        self.lone_calls = 0

    def __call__(self, masks, start_layer):
        edges, heads = masks.edges, masks.head_inputs
        removed = (self.graph.edge_exists & ~edges).double()
        value = (removed * self.weights).sum((1, 2)) + (~heads).double().sum((1, 2, 3))  # head inputs stay
        if len(edges) == 1:
            self.lone_calls += 1
            return value
        signs = torch.tensor([(-1.0) ** i for i in range(len(edges))], dtype=torch.float64)
        return value + 1e-9 * signs


def test_near_ties_are_decided_on_lone_evaluations_so_batching_cannot_flip_them():
    graph = build_graph(small_model(attn_only=True).cfg)
    coin = torch.rand(graph.edge_exists.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    weights = torch.where(coin, torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    results = {}
    for batch_size in BATCH_SIZES:
        evaluate = TieModel(graph, weights)
        results[batch_size] = run_acdc(graph, evaluate, threshold=0.01, batch_size=batch_size, progress=False)
        if batch_size > 1:
            assert evaluate.lone_calls > 1  # the ties were re-measured alone
    sequential = results[1]
    assert 0 < int(sequential.kept.edges.sum()) < int(graph.edge_exists.sum())
    for batch_size, result in results.items():
        assert torch.equal(result.kept.edges, sequential.kept.edges), batch_size
        assert torch.equal(result.kept.head_inputs, sequential.kept.head_inputs), batch_size
        assert result.metric_final == sequential.metric_final
        tested = ~torch.isnan(sequential.scores.edges)
        assert torch.equal(tested, ~torch.isnan(result.scores.edges))
        assert torch.allclose(result.scores.edges[tested], sequential.scores.edges[tested], rtol=0, atol=1e-8)
        assert math.isfinite(result.metric_final)
