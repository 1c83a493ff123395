"""ugs: uniform gradient sampling (Li and Janson 2024) as MIB's circuit track runs it (methods/ugs.py)."""

import json
import math
import sys

import pytest
import torch
from factories import random_task, small_model
from naive_masks import kl, naive_edge_masked_logits

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.commands import discover as cli
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit
from acdc_engine.formats.eap_ig import circuit_from_eap_ig
from acdc_engine.formats.mib import write_submission
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import METHODS, CircuitSelection, mask_training
from acdc_engine.methods.ugs import UgsParams, clip_group_gradients, edge_groups, mib_lr, train_ugs, ugs_loss, window_masks

FAST = dict(steps=6, samples=2, progress=False)


@pytest.fixture(scope="module")
def toy():
    return small_model(attn_only=False), random_task()


# ----- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(sparsity_weight=-1.0), r"sparsity_weight must be a finite number in \[0, inf\], got -1.0"),
        (dict(node_weight=math.nan), r"node_weight must be a finite number in \[0, inf\], got nan"),
        (dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(lr=0.0), r"lr must be a finite number in \(0, inf\], got 0.0"),
        (dict(samples=0), "samples must be an integer >= 1, got 0"),
        (dict(mask_seed=-1), "mask_seed must be an integer >= 0, got -1"),
        (dict(top_n=3, score_threshold=0.5), "give exactly one of top_n and score_threshold"),
    ],
)
def test_bad_parameters_are_refused_in_one_line_before_the_model_loads(bad, message):
    with pytest.raises(AcdcError, match=message) as error:
        discover("no-such-model", random_task(), method="ugs", progress=False, **bad)
    assert "\n" not in str(error.value)


def test_ugs_is_a_registered_score_method():
    assert METHODS["ugs"].circuits is CircuitSelection.SCORES


def test_the_learning_rate_is_mibs_unless_given():
    assert mib_lr(1e-3, "resample") == pytest.approx(0.01)  # 0.05 / 5 (counterfactual)
    assert mib_lr(1e-3, "mean") == 0.05
    assert mib_lr(5e-4, "zero") == 0.1 and mib_lr(1e-4, "zero") == 0.15
    assert UgsParams().lr is None


# ----- the mask and its gradient -------------------------------------------------------------------


def mibs_window_masks(theta, u):
    """MIB's sampler as its code writes it: sample_modified_unif, then normalize_empirical_mask."""
    probs = theta.sigmoid()
    window = (probs * (1 - probs)).detach()
    probs = window * probs - (window - 1) * probs.detach()
    samples = 1 - ((u - probs) / window + 0.5).clamp(0, 1)
    n = ((samples < 1 - 1e-3) * (samples > 1e-3)).sum(dim=0)
    weights = torch.where(n < 1, 0, u.shape[0] / n)
    return weights * samples + (1 - weights) * samples.detach()


def test_window_masks_have_mibs_values_and_gradients():
    theta = torch.linspace(-3, 3, 13, dtype=torch.float64).requires_grad_()
    u = torch.rand(5, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = torch.randn(5, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = window_masks(theta, u)
    (ours_grad,) = torch.autograd.grad((ours * direction).sum(), theta)
    mibs = mibs_window_masks(theta, u)
    (mibs_grad,) = torch.autograd.grad((mibs * direction).sum(), theta)
    torch.testing.assert_close(ours, mibs, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours_grad, mibs_grad, atol=1e-12, rtol=1e-12)


def test_a_mask_is_one_below_the_window_zero_above_it_and_linear_inside():
    theta = torch.zeros(3, dtype=torch.float64)  # p = 1/2, window [3/8, 5/8]
    u = torch.tensor([[0.3, 0.5, 0.7]], dtype=torch.float64)
    assert window_masks(theta, u).tolist() == [[1.0, 0.5, 0.0]]


# ----- one step against a naive model --------------------------------------------------------------


def naive_ugs_loss_and_gradient(model, task, graph, theta, u, sparsity_weight, node_weight):
    """The loss of one step, and its gradient in the logits as UGS estimates it, edge by edge."""
    edges = graph.edges()
    clean_logits = model(task.clean).detach()
    k = u.shape[0]
    window = {}
    metric = 0.0
    leaves = []
    for sample in range(k):
        masks = {}
        for s_name, r_name in edges:
            s, r = graph.sender_index[s_name], graph.receiver_index[r_name]
            p = 1 / (1 + math.exp(-float(theta[s, r])))
            position = (float(u[sample, s, r]) - p) / (p * (1 - p)) + 0.5
            window[sample, s, r] = 0 <= position <= 1
            masks[f"{s_name}->{r_name}"] = torch.tensor(1 - min(1.0, max(0.0, position)), dtype=torch.float64, requires_grad=True)
        leaves.append(masks)
        metric = metric + kl(clean_logits, naive_edge_masked_logits(model, task.clean, task.corrupted, masks), task.positions) / k
    metric.backward()
    theta = theta.clone().requires_grad_()
    p = {(s, r): torch.sigmoid(theta[graph.sender_index[s], graph.receiver_index[r]]) for s, r in edges}
    n_heads = graph.shape.n_layers * graph.shape.n_heads
    penalty = sparsity_weight * sum(p.values())
    for layer in range(graph.shape.n_layers):
        for head in range(graph.shape.n_heads):
            me = f"a{layer}.h{head}"
            degree = sum(value for (s, r), value in p.items() if s == me or r.startswith(me + "<"))
            penalty = penalty + node_weight * torch.tanh(2 * degree / n_heads) * n_heads / 2
    penalty.backward()
    gradient = theta.grad.clone()
    for s_name, r_name in edges:
        s, r = graph.sender_index[s_name], graph.receiver_index[r_name]
        values = [float(leaves[i][f"{s_name}->{r_name}"].detach()) for i in range(k)]
        n = sum(1e-3 < v < 1 - 1e-3 for v in values)
        pp = float(p[s_name, r_name].detach())
        for i in range(k):
            if window[i, s, r] and n > 0:
                gradient[s, r] += leaves[i][f"{s_name}->{r_name}"].grad * pp * (1 - pp) * k / n
    return float(metric.detach()) + float(penalty.detach()), gradient


def test_one_steps_loss_and_gradient_equal_a_naive_hook_based_computation(toy):
    model, task = toy
    measurement = Measurement(model, task)
    graph = measurement.graph
    theta = (torch.randn(graph.edge_exists.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * graph.edge_exists)
    u = torch.rand((2, *theta.shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected_loss, expected_gradient = naive_ugs_loss_and_gradient(model, task, graph, theta, u, 0.01, 0.003)
    log_alpha = theta.clone().requires_grad_()
    loss, _ = ugs_loss(measurement.patcher, measurement.metric, log_alpha, u, 0.01, 0.003)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-6)
    torch.testing.assert_close(log_alpha.grad, expected_gradient, atol=1e-7, rtol=1e-5)


def test_gradients_are_clipped_to_norm_five_in_each_of_the_four_edge_groups(toy):
    graph = Measurement(*toy).graph
    groups = edge_groups(graph)
    assert torch.equal(sum(g.long() for g in groups), graph.edge_exists.long())  # a partition of the edges
    s, r = graph.sender_index, graph.receiver_index
    assert groups[0][s["a0.h0"], r["a1.h2<k>"]] and groups[1][s["m0"], r["a1.h0<q>"]]
    assert groups[2][s["a1.h1"], r["logits"]] and groups[3][s["input"], r["m1"]]
    grad = torch.randn(graph.edge_exists.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 10 * graph.edge_exists
    expected = []
    for g in groups:  # what MIB's clip_grad does: torch's clip_grad_norm_ on each group's parameters
        holder = torch.zeros(int(g.sum()), dtype=torch.float64, requires_grad=True)
        holder.grad = grad[g].clone()
        torch.nn.utils.clip_grad_norm_([holder], max_norm=5.0)
        expected.append(holder.grad)
    clip_group_gradients(grad, groups, 5.0)
    for g, part in zip(groups, expected):
        torch.testing.assert_close(grad[g], part)


# ----- training through discover ---------------------------------------------------------------------


def test_discover_runs_ugs_and_its_scores_are_the_edges_p(toy, tmp_path):
    model, task = toy
    circuit = discover(model, task, method="ugs", sparsity_weight=0.05, **FAST)
    assert circuit.method["name"] == "ugs" and circuit.method["lr"] == pytest.approx(0.01)
    assert circuit.threshold == 0.5 and circuit.run["backward_passes"] == 6
    assert circuit.run["forward_passes"] == 6 * 2 + 5  # two masks per step, and the measurement's own
    exists = circuit.graph.edge_exists
    assert bool(((circuit.scores.edges[exists] > 0) & (circuit.scores.edges[exists] < 1)).all())
    assert bool(circuit.scores.head_inputs.isnan().all()) and bool(circuit.kept.head_inputs.all())
    assert torch.equal(circuit.kept.edges, (circuit.scores.edges >= 0.5) & exists)
    back = load_circuit(save_circuit(circuit, tmp_path / "c.json"))
    assert circuit_to_dict(back)["edges"] == circuit_to_dict(circuit)["edges"]


def test_training_lowers_the_sum_of_p_and_a_larger_weight_keeps_fewer_edges(toy):
    measurement = Measurement(*toy)
    light, heavy = (train_ugs(measurement.patcher, measurement.metric, UgsParams(steps=60, samples=2, sparsity_weight=w), lr=0.05)
                    for w in (1e-4, 0.3))
    assert heavy.log.sparsity[-1] > heavy.log.sparsity[0]
    assert int((heavy.log_alpha > 0).sum()) < int((light.log_alpha > 0).sum())


def test_one_seed_gives_one_circuit(toy):
    model, task = toy
    a, b = (discover(model, task, method="ugs", mask_seed=3, **FAST) for _ in range(2))
    assert a.scores.equal(b.scores) and a.kept.equal(b.kept)
    assert not a.scores.equal(discover(model, task, method="ugs", mask_seed=4, **FAST).scores)


def test_top_n_keeps_the_n_edges_of_largest_p(toy):
    circuit = discover(*toy, method="ugs", top_n=5, **FAST)
    assert int(circuit.kept.edges.sum()) == 5 and circuit.threshold is None
    kept = circuit.scores.edges[circuit.kept.edges]
    assert float(kept.min()) >= float(circuit.scores.edges[circuit.graph.edge_exists & ~circuit.kept.edges].max())


def test_a_non_finite_loss_stops_with_one_line(toy):
    measurement = Measurement(*toy)
    with pytest.raises(AcdcError, match=r"^ugs: the loss is not finite at step 1 of 5 \(metric inf\); try a smaller lr$"):
        train_ugs(measurement.patcher, lambda logits: logits.sum((1, 2, 3)) * math.inf, UgsParams(steps=5, samples=1), lr=0.01)


def test_mib_importances_carry_the_scores(toy, tmp_path):
    circuit = discover(*toy, method="ugs", **FAST)
    submission = write_submission(tmp_path, "random", "small", importances=circuit)
    importances = circuit_from_eap_ig(json.loads((submission.folder / "importances.json").read_text()))
    exists = circuit.graph.edge_exists
    torch.testing.assert_close(importances.scores.edges[exists], circuit.scores.edges[exists])


def test_the_command_line_runs_ugs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["acdc-discover", "method=ugs", "method.steps=2", "method.samples=1", "progress=false"])
    cli.main()
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    method = json.loads(path.read_text())["method"]
    assert method["name"] == "ugs" and method["steps"] == 2 and method["sparsity_weight"] == 0.001


def test_the_command_line_refuses_a_bad_parameter_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.setattr(sys, "argv", ["acdc-discover", "method=ugs", "method.samples=0", "progress=false"])
    with pytest.raises(SystemExit) as exit:
        cli.main()
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip() == "acdc-discover: error: method: samples must be an integer >= 1, got 0"



def test_the_progress_bar_shows_loss_metric_and_sparsity(toy, monkeypatch):
    bars = []
    real = mask_training.progress_bar

    def recording(*args, **options):
        bars.append((options["desc"], real(*args, **options)))
        return bars[-1][1]

    monkeypatch.setattr(mask_training, "progress_bar", recording)
    discover(*toy, method="ugs", **FAST)
    ((desc, bar),) = bars
    assert desc == "ugs" and [part.split("=")[0] for part in bar.postfix.split(", ")] == ["loss", "metric", "sparsity"]
