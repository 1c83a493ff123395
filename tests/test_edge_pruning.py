"""edge-pruning (Bhaskar et al. 2024): hard-concrete masks trained through the float-masked pass."""

import math

import pytest
import torch
from factories import random_task, small_model

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.edge_pruning import (
    EdgePruningParams, deterministic_masks, probability_nonzero, sample_masks, train_edge_masks,
)
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tracr import compiled_program

FAST = dict(steps=25, progress=False)


@pytest.fixture(scope="module")
def toy():
    return small_model(attn_only=True), random_task()


def test_edge_pruning_is_a_score_method_with_its_parameters_checked_before_the_model_loads():
    assert METHODS["edge-pruning"].circuits is CircuitSelection.SCORES
    for bad, message in [
        (dict(target_sparsity=1.0), "target_sparsity must be a finite number in"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(lr=0.0), "lr must be a finite number in"),
        (dict(temperature=-1.0), "temperature must be"),
        (dict(mask_seed=-1), "mask_seed must be an integer >= 0"),
        (dict(top_n=3, score_threshold=0.5), "give exactly one of top_n and score_threshold"),
    ]:
        with pytest.raises(AcdcError, match=message):
            discover("no-such-model", random_task(), method="edge-pruning", progress=False, **bad)


def test_hard_concrete_constants():
    log_alpha = torch.tensor([-10.0, 0.0, 10.0])
    assert deterministic_masks(log_alpha).tolist() == pytest.approx([0.0, 0.5, 1.0])
    # P(z != 0) = sigmoid(log_alpha - beta log(-l / r)), l = -0.1, r = 1.1
    assert float(probability_nonzero(torch.tensor(0.0), 2 / 3)) == pytest.approx(1 / (1 + math.exp(2 / 3 * math.log(0.1 / 1.1))))
    samples = sample_masks(torch.zeros(20000), 2 / 3, torch.Generator().manual_seed(0))
    assert samples.min() == 0 and samples.max() == 1  # stretched, then clamped
    assert float((samples > 0).float().mean()) == pytest.approx(float(probability_nonzero(torch.tensor(0.0), 2 / 3)), abs=0.01)


def test_discover_runs_edge_pruning_and_its_circuit_file_round_trips(toy, tmp_path):
    model, task = toy
    circuit = discover(model, task, method="edge-pruning", target_sparsity=0.5, **FAST)
    assert circuit.method["name"] == "edge-pruning" and circuit.method["target_sparsity"] == 0.5
    assert circuit.threshold == 0.5  # the deterministic mask >= 0.5
    assert circuit.run["backward_passes"] == 25
    scores = circuit.scores.edges[circuit.graph.edge_exists]
    assert bool(((scores > 0) & (scores < 1)).all())
    assert torch.equal(circuit.kept.edges, (circuit.scores.edges >= 0.5) & circuit.graph.edge_exists)
    back = load_circuit(save_circuit(circuit, tmp_path / "c.json"))
    assert circuit_to_dict(back)["edges"] == circuit_to_dict(circuit)["edges"]
    assert circuit_to_dict(back)["head_inputs"] == circuit_to_dict(circuit)["head_inputs"]


def test_top_n_selects_the_highest_scoring_edges(toy):
    model, task = toy
    circuit = discover(model, task, method="edge-pruning", top_n=4, samples=2, **FAST)
    assert int(circuit.kept.edges.sum()) == 4 and circuit.threshold is None
    assert circuit.run["forward_passes"] == 2 * 25 + 5  # two mask samples per step, and the measurement's own


def test_one_seed_gives_one_circuit(toy):
    model, task = toy
    a, b = (discover(model, task, method="edge-pruning", mask_seed=3, **FAST) for _ in range(2))
    assert a.scores.equal(b.scores) and a.kept.equal(b.kept)
    c = discover(model, task, method="edge-pruning", mask_seed=4, **FAST)
    assert not a.scores.equal(c.scores)


def test_the_metric_decreases_while_the_masks_train(toy):
    model, task = toy
    measurement = Measurement(*toy)
    # masks start at random (log_alpha 0) and no sparsity is asked for: training should restore the model
    result = train_edge_masks(measurement.patcher, measurement.metric, EdgePruningParams(steps=40, target_sparsity=0.0, init_log_alpha=0.0))
    assert len(result.loss) == 40
    assert sum(result.metric[-10:]) < 0.5 * sum(result.metric[:10])


def test_a_higher_target_sparsity_gives_a_smaller_circuit(toy):
    model, task = toy
    low, high = (discover(model, task, method="edge-pruning", target_sparsity=t, steps=40, progress=False) for t in (0.2, 0.9))
    assert int(high.kept.edges.sum()) < int(low.kept.edges.sum())
    assert high.run["final_expected_sparsity"] > low.run["final_expected_sparsity"]


def test_a_non_finite_loss_stops_with_one_line(toy, monkeypatch):
    measurement = Measurement(*toy)
    with pytest.raises(AcdcError, match=r"^edge-pruning: the loss is not finite at step 1 of 5"):
        train_edge_masks(measurement.patcher, lambda logits: logits.sum((1, 2, 3)) * math.inf, EdgePruningParams(steps=5))


def _head_inputs(circuit):
    g = circuit.graph
    return {n for n in g.head_input_names() if circuit.in_graph.head_inputs[g.parse_head_input(n)]}


def test_zero_ablation_edge_pruning_finds_the_acdc_paper_circuit_of_tracr_proportion():
    model = compiled_program("tracr-proportion").model()
    found = discover(
        model, "tracr-proportion", method="edge-pruning", ablation="zero", split_input=True, target_sparsity=0.5, steps=200,
        progress=False,
    )
    paper = reference_circuit("tracr-proportion-acdc-paper")
    assert sorted(found.edges()) == sorted(paper.edges())
    assert _head_inputs(found) == _head_inputs(paper)
    assert found.metric["circuit"] == pytest.approx(0.0, abs=1e-9)
