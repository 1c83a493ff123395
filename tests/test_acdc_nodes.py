"""Node-level ACDC (method ``acdc-nodes``): heads, MLPs and the input removed whole, latest first,
equal to a naive loop that removes one node's outgoing edges at a time through hooked passes
(``naive_node.naive_acdc_nodes``), on every family, fixed and variable length, every ablation."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from factories import random_task, small_model
from naive_node import naive_acdc_nodes
from naive_reference import naive_kl
from test_determinism import TieModel
from test_variable_length import LENGTHS, SHORTER_CORRUPTIONS, per_prompt_kl, ragged_task

from acdc_engine import AcdcError, build_graph, discover, load_circuit
from acdc_engine.formats.circuit_file import save_circuit
from acdc_engine.formats.eap_ig import circuit_from_eap_ig, circuit_to_eap_ig, circuit_to_eap_ig_pt, eap_ig_src_nodes
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.acdc_nodes import node_visiting_segments, run_acdc_nodes
from acdc_engine.methods.node_circuits import node_circuit

MODELS = {"gpt2-style": 0.004, "attn-only": 0.015, "llama": 0.5}  # attribution_models (conftest.py): threshold
THRESHOLDS = {"resample": 0.01, "zero": 0.02, "mean": 0.005}  # the variable-length task's, by ablation


def kl_metric(model, task, lengths=None):
    with torch.no_grad():
        clean_logits = model(task.clean)
    if lengths is not None:
        return per_prompt_kl(clean_logits, lengths)
    positions = task.positions.tolist()
    return lambda logits: naive_kl(clean_logits, logits, positions)


def kept_nodes(circuit):
    """The nodes the run kept: those whose test raised the metric by at least the threshold."""
    return {name: score >= circuit.threshold for name, score in circuit.method["node_scores"].items()}


def assert_equal_to_naive(circuit, reference):
    assert kept_nodes(circuit) == reference["kept"]
    assert 0 < sum(reference["kept"].values()) < len(reference["kept"])  # not vacuous
    for name, score in reference["scores"].items():
        assert circuit.method["node_scores"][name] == pytest.approx(score, rel=1e-9, abs=1e-12), name


# ----- the visiting order ---------------------------------------------------------------------------


def test_nodes_are_visited_latest_first_in_segments_that_resume_at_their_earliest_readers_layer():
    graph = build_graph(small_model(attn_only=False).cfg)
    segments = [(s.start_layer, [graph.senders[i] for i in s.senders]) for s in node_visiting_segments(graph)]
    assert segments == [(2, ["m1"]), (1, ["a1.h2", "a1.h1", "a1.h0", "m0"]), (0, ["a0.h2", "a0.h1", "a0.h0", "input"])]


def test_attention_only_heads_resume_at_the_next_layer_and_pos_embed_comes_before_tok_embed():
    graph = build_graph(small_model(attn_only=True).cfg, split_input=True)
    segments = [(s.start_layer, [graph.senders[i] for i in s.senders]) for s in node_visiting_segments(graph)]
    assert segments == [(2, ["a1.h2", "a1.h1", "a1.h0"]), (1, ["a0.h2", "a0.h1", "a0.h0"]), (0, ["pos_embed", "tok_embed"])]


# ----- against the naive reference ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_node_acdc_equals_the_naive_loop_on_every_family(attribution_models, name):
    model, task = attribution_models(name)
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=MODELS[name], batch_size=4, progress=False)
    assert_equal_to_naive(circuit, naive_acdc_nodes(model, task.clean, task.corrupted, kl_metric(model, task), MODELS[name]))


@pytest.mark.parametrize("ablation, threshold", [("zero", 0.01), ("mean", 0.004)])
def test_node_acdc_equals_the_naive_loop_under_zero_and_mean_ablation(attribution_models, ablation, threshold):
    model, task = attribution_models("gpt2-style")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=threshold, ablation=ablation, batch_size=4, progress=False)
    reference = naive_acdc_nodes(model, task.clean, task.corrupted, kl_metric(model, task), threshold, ablation)
    assert_equal_to_naive(circuit, reference)


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("attn_only", [True, False], ids=["attn-only", "mlp"])
def test_node_acdc_on_a_variable_length_task_equals_the_naive_loop(attn_only, ablation):
    model = small_model(attn_only, seed=5)
    corrupted_lengths = SHORTER_CORRUPTIONS if ablation != "mean" else [7, 5, 7, 6, 4, 5]
    task = ragged_task(LENGTHS, corrupted_lengths, seed=5)
    threshold = THRESHOLDS[ablation]
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=threshold, ablation=ablation, batch_size=3, progress=False)
    reference = naive_acdc_nodes(
        model, task.clean, task.corrupted, kl_metric(model, task, LENGTHS), threshold, ablation, corrupted_lengths=corrupted_lengths
    )
    assert_equal_to_naive(circuit, reference)


# ----- the circuit ----------------------------------------------------------------------------------


def test_the_circuit_is_the_edges_between_kept_nodes_and_each_nodes_score_lies_on_its_edges(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=0.004, progress=False)
    graph = circuit.graph
    kept = torch.tensor([kept_nodes(circuit)[name] for name in graph.senders])
    assert circuit.kept.equal(node_circuit(graph, kept))
    for s, r in graph.edge_exists.nonzero().tolist():
        receiver_node = graph.receivers[r].split("<")[0]
        expected = bool(kept[s]) and (receiver_node == "logits" or bool(kept[graph.sender_index[receiver_node]]))
        assert bool(circuit.kept.edges[s, r]) == expected
        assert float(circuit.scores.edges[s, r]) == circuit.method["node_scores"][graph.senders[s]]
    assert circuit.scores.edges[~graph.edge_exists].isnan().all() and circuit.scores.head_inputs.isnan().all()


def test_its_metric_is_the_last_kept_removals_cur_when_the_input_stays(attribution_models):
    model, task = attribution_models("gpt2-style")
    measured = discover(model, task, method="acdc-nodes", metric="kl", threshold=0.004, batch_size=1, progress=False)
    result = run_acdc_nodes(measured.graph, _evaluate(model, task), 0.004, batch_size=1, progress=False)
    assert bool(result.kept[measured.graph.sender_index["input"]])
    assert measured.metric["circuit"] == pytest.approx(result.metric_final, rel=1e-12)


def _evaluate(model, task):
    from acdc_engine.measure.measurement import Measurement

    return Measurement(model, task, "kl").evaluate


def test_a_threshold_above_every_change_removes_every_node_and_emits_the_empty_circuit(attribution_models):
    model, task = attribution_models("attn-only")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=1e6, progress=False)
    assert circuit.n_edges == 0 and not any(score >= 1e6 for score in circuit.method["node_scores"].values())


# ----- batching -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 5, 64])
def test_the_circuit_and_every_score_are_the_same_bits_for_every_batch_size(attribution_models, batch_size):
    model, task = attribution_models("gpt2-style")
    evaluate = _evaluate(model, task)
    graph = build_graph(model.cfg)
    alone = run_acdc_nodes(graph, evaluate, 0.004, batch_size=1, progress=False)
    batched = run_acdc_nodes(graph, evaluate, 0.004, batch_size=batch_size, progress=False)
    assert torch.equal(alone.kept, batched.kept) and torch.equal(alone.scores, batched.scores)
    assert alone.metric_final == batched.metric_final
    assert batched.forward_passes < alone.forward_passes


def test_near_ties_are_decided_on_lone_evaluations_so_batching_cannot_flip_them():
    graph = build_graph(small_model(attn_only=False).cfg)
    coin = torch.rand(len(graph.senders), generator=torch.Generator().manual_seed(1)) < 0.5
    weights = torch.zeros(graph.edge_exists.shape, dtype=torch.float64)
    weight = torch.where(coin, torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    weights[:, graph.receiver_index["logits"]] = weight  # removing a coin node raises the metric by exactly the threshold
    results = {}
    for batch_size in (1, 3, 16):
        evaluate = TieModel(graph, weights)
        results[batch_size] = run_acdc_nodes(graph, evaluate, threshold=0.01, batch_size=batch_size, progress=False)
        if batch_size > 1:
            assert evaluate.lone_calls > 1
    assert torch.equal(results[1].kept, coin)
    for result in results.values():
        assert torch.equal(result.kept, results[1].kept) and result.metric_final == results[1].metric_final


def test_a_metric_that_is_not_finite_is_one_line_naming_the_node():
    graph = build_graph(small_model(attn_only=True).cfg)

    def evaluate(masks, start_layer):
        removed = (graph.edge_exists & ~masks.edges).any(-1).any(-1)
        return torch.where(removed, torch.tensor(math.nan, dtype=torch.float64), torch.zeros((), dtype=torch.float64))

    with pytest.raises(AcdcError, match=r"^the metric is nan \(not finite\) while testing node 'a1.h2'$"):
        run_acdc_nodes(graph, evaluate, 0.01, progress=False)


# ----- the method: registry, API, command line, files ----------------------------------------------


def test_it_is_a_threshold_method_with_acdcs_rules():
    assert METHODS["acdc-nodes"].circuits is CircuitSelection.THRESHOLD
    with pytest.raises(AcdcError, match="threshold must be a finite number >= 0, got -1.0"):
        discover("no-such-model", random_task(), method="acdc-nodes", threshold=-1, progress=False)
    with pytest.raises(AcdcError, match="batch_size must be at least 1, got 0"):
        discover("no-such-model", random_task(), method="acdc-nodes", batch_size=0, progress=False)


def test_an_api_run_describes_the_method_and_its_node_scores_and_round_trips(attribution_models, tmp_path):
    model, task = attribution_models("attn-only")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=0.015, batch_size=2, progress=False)
    assert circuit.method["name"] == "acdc-nodes" and circuit.threshold == 0.015
    assert list(circuit.method["node_scores"]) == circuit.graph.senders
    assert circuit.run["candidates_tested"] == len(circuit.graph.senders) and circuit.run["batch_size"] == 2
    assert circuit.method_label() == "ACDC (nodes) threshold 0.015"
    loaded = load_circuit(save_circuit(circuit, tmp_path / "c.json"))
    assert loaded.method == circuit.method and loaded.kept.equal(circuit.kept)


def test_the_eap_ig_export_carries_node_scores_and_the_kept_nodes(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=0.004, progress=False)
    exported = circuit_to_eap_ig(circuit, d_model=model.cfg.d_model)
    scores = circuit.method["node_scores"]
    assert {name: node["score"] for name, node in exported["nodes"].items() if name != "logits"} == scores
    assert {name for name, node in exported["nodes"].items() if node["in_graph"]} == set(circuit.nodes()) | {"logits"}
    assert circuit_from_eap_ig(json.loads(json.dumps(exported))).in_graph.equal(circuit.in_graph)
    pt = torch.load(__import__("io").BytesIO(circuit_to_eap_ig_pt(circuit, d_model=model.cfg.d_model)), weights_only=True)
    src = eap_ig_src_nodes(model.cfg.n_layers, model.cfg.n_heads)
    assert pt["nodes_scores"].tolist() == pytest.approx([scores[name] for name in src], rel=1e-6)


def test_an_attention_only_export_scores_eap_igs_mlp_nodes_zero(attribution_models):
    model, task = attribution_models("attn-only")
    circuit = discover(model, task, method="acdc-nodes", metric="kl", threshold=0.003, progress=False)
    nodes = circuit_to_eap_ig(circuit, d_model=model.cfg.d_model)["nodes"]
    assert nodes["m0"] == {"in_graph": False, "score": 0.0} and nodes["a0.h0"]["score"] == circuit.method["node_scores"]["a0.h0"]


def test_the_command_line_runs_it_and_writes_its_circuit_file(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", "method=acdc-nodes", "method.threshold=0.01",
               "method.batch_size=4", "progress=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    data = json.loads(path.read_text())
    assert data["method"]["name"] == "acdc-nodes" and data["threshold"] == 0.01 and data["run"]["batch_size"] == 4
    assert set(data["method"]["node_scores"]) == {"input", *(f"a{l}.h{h}" for l in range(2) for h in range(4))}
