"""subnetwork-probing: hard-concrete masks on heads' q, k, v and MLP outputs, as the ACDC paper ran SP
(methods/subnetwork_probing.py)."""

import json
import math
import sys

import pytest
import torch
from factories import random_task, small_model
from naive_masks import kl, naive_node_masked_logits

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.commands import discover as cli
from acdc_engine.core.nodes import NodeKind, parse_node
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit
from acdc_engine.formats.eap_ig import circuit_to_eap_ig
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import METHODS, CircuitSelection, mask_training
from acdc_engine.methods.subnetwork_probing import (
    NodeLogits, SubnetworkProbingParams, sp_loss, train_subnetwork_probing,
)

FAST = dict(steps=8, lr=0.1, progress=False)
TRAINED = dict(steps=150, lr=0.05, sparsity_weight=0.5, mask_seed=1)
"""Enough training on the small model with MLPs for some nodes to go and some to stay."""


@pytest.fixture(scope="module")
def toy():
    return small_model(attn_only=False), random_task()


# ----- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(sparsity_weight=-0.5), r"sparsity_weight must be a finite number in \[0, inf\], got -0.5"),
        (dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(lr=-1.0), r"lr must be a finite number in \(0, inf\], got -1.0"),
        (dict(temperature=0.0), r"temperature must be a finite number in \(0, inf\], got 0.0"),
        (dict(init_log_alpha=math.inf), "init_log_alpha must be a finite number"),
        (dict(mask_seed=1.5), "mask_seed must be"),
        (dict(score_threshold=-1.0), "score_threshold must be a finite number >= 0"),
    ],
)
def test_bad_parameters_are_refused_in_one_line_before_the_model_loads(bad, message):
    with pytest.raises(AcdcError, match=message) as error:
        discover("no-such-model", random_task(), method="subnetwork-probing", progress=False, **bad)
    assert "\n" not in str(error.value)


def test_subnetwork_probing_is_a_registered_score_method_with_the_papers_defaults():
    assert METHODS["subnetwork-probing"].circuits is CircuitSelection.SCORES
    params = SubnetworkProbingParams()
    assert (params.lr, params.steps, params.sparsity_weight) == (1e-3, 3000, 50.0)  # train.py's defaults
    # MaskedHookPoint.init_weights: mask_p = 0.9 stretched to (-0.1, 1.1)
    assert 1 / (1 + math.exp(-params.init_log_alpha)) == pytest.approx((0.9 + 0.1) / 1.2)


# ----- one step against SP's masked hook points ----------------------------------------------------


def naive_sp_loss(model, task, qkv_la, mlp_la, qkv_u, mlp_u, sparsity_weight, ablation, temperature=2 / 3):
    """SP's loss as the ACDC repository computes it: hard-concrete masks on hook_q/k/v and
    hook_mlp_out, the task's KL plus sparsity_weight times the mean over hook points of the mean
    P(z != 0) (attention-only models keep their unused hook_mlp_out masks)."""

    def sample(la, u):
        s = torch.sigmoid((math.log(u) - math.log(1 - u) + la) / temperature)
        return (s * 1.2 - 0.1).clamp(0, 1)

    def p_nonzero(la):
        return torch.sigmoid(la - temperature * math.log(0.1 / 1.1))

    cfg = model.cfg
    qkv_masks = {f"a{l}.h{h}<{x}>": sample(qkv_la[l, h, i], float(qkv_u[l, h, i]))
                 for l in range(cfg.n_layers) for h in range(cfg.n_heads) for i, x in enumerate("qkv")}
    mlp_masks = {f"m{l}": sample(mlp_la[l], float(mlp_u[l])) for l in range(cfg.n_layers)}
    logits = naive_node_masked_logits(model, task.clean, task.corrupted, qkv_masks, mlp_masks, ablation)
    metric = kl(model(task.clean).detach(), logits, task.positions)
    hook_points = [sum(p_nonzero(qkv_la[l, h, i]) for h in range(cfg.n_heads)) / cfg.n_heads
                   for l in range(cfg.n_layers) for i in range(3)] + [p_nonzero(mlp_la[l]) for l in range(cfg.n_layers)]
    return metric + sparsity_weight * sum(hook_points) / len(hook_points)


@pytest.mark.parametrize("attn_only", [False, True])
@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_one_steps_loss_and_gradient_equal_sps_masked_hook_points(attn_only, ablation):
    model, task = small_model(attn_only=attn_only), random_task()
    measurement = Measurement(model, task, ablation=ablation)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    g = torch.Generator().manual_seed(5)
    qkv_la, mlp_la = torch.randn(L, H, 3, generator=g, dtype=torch.float64), torch.randn(L, generator=g, dtype=torch.float64)
    qkv_u, mlp_u = torch.rand(L, H, 3, generator=g, dtype=torch.float64), torch.rand(L, generator=g, dtype=torch.float64)
    naive_qkv, naive_mlp = qkv_la.clone().requires_grad_(), mlp_la.clone().requires_grad_()
    expected = naive_sp_loss(model, task, naive_qkv, naive_mlp, qkv_u, mlp_u, 2.0, ablation)
    expected.backward()
    logits = NodeLogits(qkv_la.clone().requires_grad_(), mlp_la.clone().requires_grad_())
    loss, _ = sp_loss(measurement.patcher, measurement.metric, logits, NodeLogits(qkv_u, mlp_u), SubnetworkProbingParams(sparsity_weight=2.0))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    torch.testing.assert_close(logits.qkv.grad, naive_qkv.grad, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(logits.mlp.grad, naive_mlp.grad, atol=1e-7, rtol=1e-5)


# ----- the circuit ---------------------------------------------------------------------------------


def kept_nodes(graph, logits):
    """SP's kept nodes by name: masks with sigmoid(log_alpha) >= 0.5; a head when any of its q, k, v is."""
    kept = {"input", "logits"}
    for l in range(graph.shape.n_layers):
        if graph.shape.has_mlp and torch.sigmoid(logits.mlp[l]) >= 0.5:
            kept.add(f"m{l}")
        for h in range(graph.shape.n_heads):
            for i, x in enumerate("qkv"):
                if torch.sigmoid(logits.qkv[l, h, i]) >= 0.5:
                    kept |= {f"a{l}.h{h}<{x}>", f"a{l}.h{h}"}
    return kept


def test_the_edge_circuit_is_exactly_the_edges_between_kept_nodes(toy):
    model, task = toy
    measurement = Measurement(model, task)
    trained = train_subnetwork_probing(measurement.patcher, measurement.metric, SubnetworkProbingParams(**TRAINED))
    nodes = kept_nodes(measurement.graph, trained.logits)
    assert 0 < len(nodes - {"input", "logits"}) < len(measurement.graph.senders) - 1  # some nodes go, some stay
    circuit = discover(model, task, method="subnetwork-probing", progress=False, **TRAINED)
    graph = circuit.graph
    kept_edges = {(graph.senders[s], graph.receivers[r]) for s, r in circuit.kept.edges.nonzero().tolist()}
    assert kept_edges == {(s, r) for s, r in graph.edges() if s in nodes and r in nodes}
    kept_head_inputs = {f"a{l}.h{h}<{'qkv'[i]}>" for l, h, i in circuit.kept.head_inputs.nonzero().tolist()}
    assert kept_head_inputs == {name for name in nodes if parse_node(name).kind is NodeKind.HEAD_RECEIVER}


def test_an_edge_scores_the_weaker_of_its_two_nodes(toy):
    circuit = discover(*toy, method="subnetwork-probing", **FAST)
    graph, scores = circuit.graph, circuit.scores
    s, r = graph.sender_index, graph.receiver_index
    q = float(scores.head_inputs[1, 0, 0])  # a1.h0<q>
    m0 = float(scores.edges[s["m0"], r["logits"]])  # the logits score 1: m0's own score
    assert float(scores.edges[s["m0"], r["a1.h0<q>"]]) == min(m0, q)
    assert float(scores.edges[s["input"], r["a1.h0<q>"]]) == q
    assert float(scores.edges[s["a0.h2"], r["logits"]]) == float(scores.head_inputs[0, 2].max())


def test_discover_runs_subnetwork_probing_and_its_circuit_file_round_trips(toy, tmp_path):
    circuit = discover(*toy, method="subnetwork-probing", **FAST)
    assert circuit.method["name"] == "subnetwork-probing" and circuit.threshold == 0.5
    assert circuit.run["forward_passes"] == 8 + 5 and circuit.run["backward_passes"] == 8
    back = load_circuit(save_circuit(circuit, tmp_path / "c.json"))
    assert circuit_to_dict(back)["edges"] == circuit_to_dict(circuit)["edges"]
    assert circuit_to_dict(back)["head_inputs"] == circuit_to_dict(circuit)["head_inputs"]


def test_top_n_keeps_the_head_inputs_its_edges_need(toy):
    circuit = discover(*toy, method="subnetwork-probing", top_n=10, **FAST)
    graph = circuit.graph
    assert int(circuit.kept.edges.sum()) == 10 and circuit.threshold is None
    for _, r in circuit.kept.edges.nonzero().tolist():
        node = parse_node(graph.receivers[r])
        if node.kind is NodeKind.HEAD_RECEIVER:
            assert circuit.kept.head_inputs[node.layer, node.head, node.qkv_index]


def test_one_seed_gives_one_circuit(toy):
    model, task = toy
    a, b = (discover(model, task, method="subnetwork-probing", mask_seed=3, **FAST) for _ in range(2))
    assert a.scores.equal(b.scores) and a.kept.equal(b.kept)
    assert not a.scores.equal(discover(model, task, method="subnetwork-probing", mask_seed=4, **FAST).scores)


def test_a_non_finite_loss_stops_with_one_line(toy):
    measurement = Measurement(*toy)
    with pytest.raises(AcdcError, match=r"^subnetwork-probing: the loss is not finite at step 1 of 3 \(metric nan\); try a smaller lr$"):
        train_subnetwork_probing(measurement.patcher, lambda logits: logits.sum((1, 2, 3)) * math.nan, SubnetworkProbingParams(steps=3))


def test_eap_ig_export_carries_the_edge_scores(toy):
    circuit = discover(*toy, method="subnetwork-probing", **FAST)
    exported = circuit_to_eap_ig(circuit)["edges"]
    graph = circuit.graph
    for sender, receiver in graph.edges():
        score = float(circuit.scores.edges[graph.sender_index[sender], graph.receiver_index[receiver]])
        assert exported[f"{sender}->{receiver}"]["score"] == pytest.approx(score)


def test_the_command_line_runs_subnetwork_probing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["acdc-discover", "method=subnetwork-probing", "method.steps=3", "method.sparsity_weight=0.1", "progress=false"])
    cli.main()
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    method = json.loads(path.read_text())["method"]
    assert method["name"] == "subnetwork-probing" and method["steps"] == 3 and method["sparsity_weight"] == 0.1


def test_the_progress_bar_shows_loss_metric_and_sparsity(toy, monkeypatch):
    bars = []
    real = mask_training.progress_bar

    def recording(*args, **options):
        bars.append((options["desc"], real(*args, **options)))
        return bars[-1][1]

    monkeypatch.setattr(mask_training, "progress_bar", recording)
    discover(*toy, method="subnetwork-probing", **FAST)
    ((desc, bar),) = bars
    assert desc == "subnetwork-probing" and [part.split("=")[0] for part in bar.postfix.split(", ")] == ["loss", "metric", "sparsity"]
