"""MIB's faithfulness conventions: CPR and CMD of importance files and circuit folders in EAP-IG's
exact format, checked against a naive MIB evaluation written here.

The naive evaluation follows MIB's ``evaluate_area_under_curve`` step by step with plain loops:
EAP-IG's edge list (an MLP in every layer, also for attention-only models), n = int(k * N) edges
ranked first by score or |score|, EAP-IG's pruning (drop nodes without an edge in or out until
nothing changes), the circuit measured by the hook-based patcher of ``naive_reference`` with
MIB's logit difference, f normalised between the empty circuit and the full model, and the
trapezoid rule over k.
"""

import json

import pytest
import torch
from factories import random_task, small_model
from naive_reference import graph_names, naive_patched_logits

from acdc_engine import AcdcError, discover
from acdc_engine.core.shape import GraphShape
from acdc_engine.evaluation.faithfulness import (
    MIB_FRACTIONS,
    CircuitEvaluator,
    faithfulness_of_scores,
    mib_edge_count,
    mib_node_scores,
)
from acdc_engine.evaluation.method_comparison import score_submission
from acdc_engine.formats.mib import SUBMISSION_FRACTIONS

N_HEADS = 4
D_MODEL = 32

# ----- EAP-IG's graph and files, written out here -------------------------------------------------


def eap_ig_graph(n_layers, n_heads):
    """EAP-IG's ``Graph.from_model`` for a sequential model: (source nodes, destination nodes, edges
    as (sender, receiver) in its ``graph.edges`` order)."""
    src, dst, edges = ["input"], [], []
    residual = ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        src += heads + [f"m{layer}"]
        dst += [f"a{layer}.h{h}<{x}>" for x in "qkv" for h in range(n_heads)] + [f"m{layer}"]
        edges += [(u, f"{head}<{x}>") for u in residual for head in heads for x in "qkv"]
        residual += heads
        edges += [(u, f"m{layer}") for u in residual]
        residual.append(f"m{layer}")
    dst.append("logits")
    edges += [(u, "logits") for u in residual]
    return src, dst, edges


def matrix_position(edge, src, dst):
    """The edge's place in EAP-IG's flattened [source, destination] score matrix."""
    return src.index(edge[0]) * len(dst) + dst.index(edge[1])


def write_eap_ig_json(path, n_layers, scores, in_graph=()):
    """A file as EAP-IG's ``Graph.to_json`` writes an edge-level graph: cfg, every node, every edge."""
    src, _, edges = eap_ig_graph(n_layers, N_HEADS)
    cfg = {"n_layers": n_layers, "n_heads": N_HEADS, "parallel_attn_mlp": False, "d_model": D_MODEL}
    used = {node for edge in in_graph for node in (edge[0], edge[1].split("<")[0])}
    nodes = {name: {"in_graph": name in used} for name in src + ["logits"]}
    data = {"cfg": cfg, "nodes": nodes, "edges": {f"{u}->{v}": {"score": scores[(u, v)], "in_graph": (u, v) in in_graph} for u, v in edges}}
    path.write_text(json.dumps(data))
    return path


def write_eap_ig_pt(path, n_layers, scores):
    """A file as EAP-IG's ``Graph.to_pt`` writes it: float32 score matrix, bool in-graph matrices."""
    src, dst, edges = eap_ig_graph(n_layers, N_HEADS)
    matrix = torch.zeros(len(src), len(dst))
    for u, v in edges:
        matrix[src.index(u), dst.index(v)] = scores[(u, v)]
    cfg = {"n_layers": n_layers, "n_heads": N_HEADS, "parallel_attn_mlp": False, "d_model": D_MODEL}
    torch.save({"cfg": cfg, "src_nodes": src, "dst_nodes": dst, "edges_scores": matrix,
                "edges_in_graph": torch.zeros(len(src), len(dst), dtype=torch.bool),
                "nodes_in_graph": torch.zeros(len(src), dtype=torch.bool)}, path)
    return path


# ----- the naive MIB evaluation ---------------------------------------------------------------------


def naive_prune(chosen):
    """EAP-IG's ``Graph.prune``: keep a node while it has an edge in (``input`` always has) and an
    edge out (``logits`` needs none); drop edges at dropped nodes; repeat until nothing changes."""
    chosen = set(chosen)
    while True:
        has_out = {u for u, _ in chosen}
        has_in = {v.split("<")[0] for _, v in chosen} | {"input"}
        alive = (has_out & has_in) | {"logits"}
        kept = {(u, v) for u, v in chosen if u in alive and v.split("<")[0] in alive}
        if kept == chosen:
            return chosen
        chosen = kept


def naive_logit_diff(model, task, removed):
    """MIB's logit_diff (answer minus wrong answer at the read position, averaged over prompts) of
    the model with ``removed`` edges patched from the corrupted run."""
    logits = naive_patched_logits(model, task.clean, task.corrupted, removed)
    rows = torch.arange(len(task.clean))
    diffs = [logits[rows, p, task.answers[:, j]] - logits[rows, p, task.wrong_answers[:, j]] for j, p in enumerate(task.positions.tolist())]
    return torch.stack(diffs).mean().item()


def naive_faithfulness(model, task, circuits):
    """f of each circuit (a set of edge names), the empty circuit at 0 and the full model at 1."""
    _, _, real = graph_names(model.cfg)
    full = naive_logit_diff(model, task, [])
    empty = naive_logit_diff(model, task, real)
    return [(naive_logit_diff(model, task, [e for e in real if e not in circuit]) - empty) / (full - empty) for circuit in circuits]


def naive_top_k(scores, n_layers, absolute, k):
    """MIB's circuit at fraction k: the first int(k * N) of EAP-IG's edges by score (or |score|),
    ties in score-matrix order, pruned; returned as edge names."""
    src, dst, edges = eap_ig_graph(n_layers, N_HEADS)
    order = sorted(edges, key=lambda e: (-(abs(scores[e]) if absolute else scores[e]), matrix_position(e, src, dst)))
    return {f"{u}->{v}" for u, v in naive_prune(order[: int(k * len(edges))])}


def naive_sizes(scores, n_layers, real, absolute):
    """Edges of each MIB circuit: the first int(k * N) edges less the MLP edges the model lacks,
    then pruned (with MLPs, exactly EAP-IG's circuit)."""
    src, dst, edges = eap_ig_graph(n_layers, N_HEADS)
    order = sorted(edges, key=lambda e: (-(abs(scores[e]) if absolute else scores[e]), matrix_position(e, src, dst)))
    return [len(naive_prune([e for e in order[: int(k * len(edges))] if f"{e[0]}->{e[1]}" in real])) for k in MIB_FRACTIONS]


def naive_area(xs, ys):
    area = 0.0
    for i in range(len(xs) - 1):
        area += (xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2
    return area


def naive_mib(model, task, scores, n_layers, absolute):
    """(faithfulness per MIB fraction, CPR, CMD) of a ranking, as MIB computes them."""
    f = naive_faithfulness(model, task, [naive_top_k(scores, n_layers, absolute, k) for k in MIB_FRACTIONS])
    return f, naive_area(MIB_FRACTIONS, f), naive_area(MIB_FRACTIONS, [abs(1 - v) for v in f])


# ----- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["attn-only", "with-mlps"])
def setting(request):
    """A 2-layer, 4-head model, a task with answers, and EAP-IG scores of its edges written as
    EAP-IG writes them (float32; divided by the prompts, as EAP-IG's scores are; MLP edges of an
    attention-only model at 0)."""
    model = small_model(attn_only=request.param, n_heads=N_HEADS, d_head=8, seed=11)
    task = random_task(n_prompts=6, seed=4)
    scored = discover(model, task, method="eap-ig", top_n=0, metric="logit_diff", progress=False)
    graph = scored.graph
    ours = {(s, r): float(scored.scores.edges[graph.sender_index[s], graph.receiver_index[r]]) for s, r in graph.edges()}
    _, _, edges = eap_ig_graph(2, N_HEADS)
    scores = {e: float(torch.tensor(ours.get(e, 0.0) / len(task.clean), dtype=torch.float32)) for e in edges}
    return model, task, scores


def signed_ranking_differs(scores, n_layers):
    return any(naive_top_k(scores, n_layers, False, k) != naive_top_k(scores, n_layers, True, k) for k in MIB_FRACTIONS)


# ----- tests --------------------------------------------------------------------------------------------


def test_attention_only_edge_count_is_eap_ig_graph_count_with_mlp_edges():
    assert len(eap_ig_graph(2, 4)[2]) == 110
    assert mib_edge_count(GraphShape(2, 4, has_mlp=False)) == 110
    model = small_model(attn_only=True, n_heads=4, d_head=8)
    evaluator = CircuitEvaluator(model, random_task(), metric="logit_diff")
    assert evaluator.graph.n_edges == 81
    curve = faithfulness_of_scores(evaluator, torch.ones(evaluator.graph.edge_exists.shape), "signed", [0.1, 1.0])
    assert curve.total_edges == 110


@pytest.mark.parametrize("absolute", [False, True], ids=["signed", "absolute"])
def test_curve_cpr_and_cmd_of_an_eap_ig_json_file_equal_the_naive_mib_evaluation(setting, tmp_path, absolute):
    model, task, scores = setting
    path = write_eap_ig_json(tmp_path / "importances.json", 2, scores)
    ranking = "absolute" if absolute else "signed"
    result = score_submission(model, task, path, cpr_ranking=ranking, cmd_ranking=ranking).results["importances.json"]
    f, cpr, cmd = naive_mib(model, task, scores, 2, absolute)
    (curve,) = result.curves
    assert curve.cuts == list(MIB_FRACTIONS) and curve.ranking.value == ranking
    assert curve.faithfulness == pytest.approx(f, abs=1e-9)
    assert curve.edges == naive_sizes(scores, 2, set(graph_names(model.cfg)[2]), absolute)
    assert result.mib.cpr == pytest.approx(cpr, abs=1e-9)
    assert result.mib.cmd == pytest.approx(cmd, abs=1e-9)


def test_mib_defaults_take_cpr_from_the_signed_ranking_and_cmd_from_the_absolute_one(setting, tmp_path):
    model, task, scores = setting
    path = write_eap_ig_json(tmp_path / "importances.json", 2, scores)
    comparison = score_submission(model, task, path)
    mib = comparison.results["importances.json"].mib
    _, signed_cpr, _ = naive_mib(model, task, scores, 2, absolute=False)
    _, _, absolute_cmd = naive_mib(model, task, scores, 2, absolute=True)
    assert (mib.cpr_curve.basis, mib.cmd_curve.basis) == ("signed", "absolute")
    assert mib.cpr == pytest.approx(signed_cpr, abs=1e-9) and mib.cmd == pytest.approx(absolute_cmd, abs=1e-9)
    row = comparison.table().splitlines()[2]
    assert f"| {signed_cpr:.3f} (signed) | {absolute_cmd:.3f} (absolute) |" in row


def test_an_eap_ig_pt_file_scores_as_its_json_twin(setting, tmp_path):
    model, task, scores = setting
    from_json = score_submission(model, task, write_eap_ig_json(tmp_path / "importances.json", 2, scores))
    from_pt = score_submission(model, task, write_eap_ig_pt(tmp_path / "importances.pt", 2, scores))
    a, b = from_json.results["importances.json"].mib, from_pt.results["importances.pt"].mib
    assert (a.cpr, a.cmd) == (b.cpr, b.cmd)


def test_signed_and_absolute_rankings_differ_when_the_largest_scores_are_negative(setting, tmp_path):
    model, task, scores = setting
    flipped = {e: -3 * s if s > 0 else s for e, s in scores.items()}  # the strongest edges now score below every other
    assert signed_ranking_differs(flipped, 2)
    path = write_eap_ig_json(tmp_path / "importances.json", 2, flipped)
    signed = score_submission(model, task, path, cpr_ranking="signed").results["importances.json"].mib.cpr
    absolute = score_submission(model, task, path, cpr_ranking="absolute").results["importances.json"].mib.cpr
    assert signed == pytest.approx(naive_mib(model, task, flipped, 2, absolute=False)[1], abs=1e-9)
    assert absolute == pytest.approx(naive_mib(model, task, flipped, 2, absolute=True)[1], abs=1e-9)
    assert abs(signed - absolute) > 0.05


def test_tied_scores_go_in_eap_ig_score_matrix_order(setting, tmp_path):
    model, task, scores = setting
    # layer 1's heads into logits first, then layer 1's 12 input edges tied: the cut at 11 edges falls among them
    tied = {(u, v): 2.0 if u.startswith("a1") and v == "logits" else 1.0 if u == "input" and v.startswith("a1") else 0.0 for u, v in scores}
    path = write_eap_ig_json(tmp_path / "importances.json", 2, tied)
    (curve,) = score_submission(model, task, path, cmd_ranking="signed").results["importances.json"].curves
    assert curve.faithfulness == pytest.approx(naive_mib(model, task, tied, 2, absolute=False)[0], abs=1e-9)


def test_a_folder_of_nine_budgeted_circuits_is_scored_at_its_fractions_and_the_full_model(setting, tmp_path):
    model, task, scores = setting
    folder = tmp_path / "ioi_tiny"
    folder.mkdir()
    _, _, real = graph_names(model.cfg)
    circuits = [naive_top_k(scores, 2, True, k) & set(real) for k in SUBMISSION_FRACTIONS]
    for k, circuit in zip(SUBMISSION_FRACTIONS, circuits):
        write_eap_ig_json(folder / f"circuit_{k:g}.json", 2, scores, {tuple(e.split("->")) for e in circuit})
    (folder / "README.md").write_text("not read\n")
    result = score_submission(model, task, folder).results["ioi_tiny"]
    f = naive_faithfulness(model, task, circuits) + [1.0]
    (curve,) = result.curves
    assert curve.cuts == list(MIB_FRACTIONS) and curve.basis == "circuits"
    assert curve.faithfulness == pytest.approx(f, abs=1e-9)
    assert result.mib.cpr == pytest.approx(naive_area(MIB_FRACTIONS, f), abs=1e-9)


def test_a_circuit_over_its_budget_is_refused_naming_the_file(setting, tmp_path):
    model, task, scores = setting
    folder = tmp_path / "ioi_tiny"
    folder.mkdir()
    top = sorted(scores, key=lambda e: -abs(scores[e]))
    for k in SUBMISSION_FRACTIONS:
        write_eap_ig_json(folder / f"circuit_{k:g}.json", 2, scores, naive_prune(top[:40]))
    with pytest.raises(AcdcError, match=r"ioi_tiny: the circuit for k = 0.001 has \d+ edges, more than the int\(0.001 \* \d+\) = 0 MIB allows"):
        score_submission(model, task, folder)


def test_a_folder_that_is_neither_one_file_nor_the_nine_circuits_is_refused(tmp_path):
    for k in (0.001, 0.01, 0.1):
        (tmp_path / f"circuit_{k:g}.json").write_text("{}")
    with pytest.raises(AcdcError, match=r"MIB reads one importances file or 9 circuit files .* found 3 .json / .pt files \(circuits for k = 0.001, 0.01, 0.1\)"):
        score_submission(small_model(attn_only=True), random_task(), tmp_path)


def test_an_importances_file_with_an_unscored_edge_is_refused(setting, tmp_path):
    model, task, scores = setting
    path = write_eap_ig_json(tmp_path / "importances.json", 2, {**scores, ("input", "logits"): None})
    with pytest.raises(AcdcError, match="importances.json: edge 'input->logits' has no finite score"):
        score_submission(model, task, path)


def test_an_attention_only_model_refuses_a_file_that_scores_mlp_edges(tmp_path):
    model = small_model(attn_only=True, n_heads=N_HEADS, d_head=8)
    _, _, edges = eap_ig_graph(2, N_HEADS)
    path = write_eap_ig_json(tmp_path / "importances.json", 2, dict.fromkeys(edges, 1.0))
    with pytest.raises(AcdcError, match=r"importances.json: its graph .*has_mlp=True.* is not the model's .*has_mlp=False"):
        score_submission(model, random_task(), path)


# ----- acdc-evaluate --------------------------------------------------------------------------------


def test_acdc_evaluate_prints_mib_cpr_and_cmd_of_an_importances_file_naming_their_rankings(tmp_path, monkeypatch, capsys):
    from test_run_folder import command

    from acdc_engine.commands import evaluate as evaluate_cli

    g = torch.Generator().manual_seed(0)
    _, _, edges = eap_ig_graph(2, N_HEADS)  # toy-induction-2l: 2 layers of 4 heads, attention-only
    scores = {e: 0.0 if e[0].startswith("m") or e[1].startswith("m") else float(torch.randn((), generator=g)) for e in edges}
    path = write_eap_ig_json(tmp_path / "importances.json", 2, scores)
    args = (f"submission={path}", "model=toy-induction-2l", "task=jsonl-example")
    assert command(monkeypatch, tmp_path, *args, main=evaluate_cli.main, prog="acdc-evaluate") == 0
    out = capsys.readouterr().out
    (folder,) = {p.parent for p in (tmp_path / "outputs").rglob("faithfulness.json")}
    saved = json.loads((folder / "faithfulness.json").read_text())["importances.json"]
    assert "81 edges (MIB's N: 110, EAP-IG's graph); logit_diff" in out
    assert f"| importances.json | {saved['cpr']:.3f} (signed) | {saved['cmd']:.3f} (absolute) | 20 |" in out
    assert {(row["ranking"], row["cut"]) for row in saved["points"]} == {(r, k) for r in ("signed", "absolute") for k in MIB_FRACTIONS}


def test_acdc_evaluate_refuses_a_malformed_submission_in_one_line_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from test_run_folder import command

    from acdc_engine.commands import evaluate as evaluate_cli

    (tmp_path / "ioi_gpt2").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "ioi_gpt2" / name).write_text("{}")
    args = (f"submission={tmp_path / 'ioi_gpt2'}", "model.name=no-such-model")
    assert command(monkeypatch, tmp_path, *args, main=evaluate_cli.main, prog="acdc-evaluate") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("acdc-evaluate: error: ") and "a.json: not a circuit file of a MIB submission" in line


# ----- MIB's node track ---------------------------------------------------------------------------------


NODE_FRACTIONS = (0.3, 0.5, 0.7, 0.9, 1.0)  # with 11 nodes, MIB's own fractions up to 0.5 keep at most 5


def naive_node_circuits(model, node_scores, absolute):
    """MIB's node-track circuits (EAP-IG's apply_topn at level "node", then prune): for each fraction
    k, every edge out of the first int(k * n_nodes) nodes by score (or |score|; ties in forward
    order), pruned; as edge names."""
    _, _, real = graph_names(model.cfg)
    names = list(node_scores)
    order = sorted(range(len(names)), key=lambda i: (-(abs(node_scores[names[i]]) if absolute else node_scores[names[i]]), i))
    circuits = []
    for k in NODE_FRACTIONS:
        kept = {names[i] for i in order[: int(k * len(names))]}
        chosen = [tuple(e.split("->")) for e in real if e.split("->")[0] in kept]
        circuits.append({f"{u}->{v}" for u, v in naive_prune(chosen)})
    return circuits


@pytest.mark.parametrize("absolute", [False, True], ids=["signed", "absolute"])
def test_node_track_cpr_and_cmd_of_node_scores_equal_the_naive_mib_evaluation(setting, absolute):
    model, task, _ = setting
    nodes = list(discover(model, task, method="eap-nodes", top_n=0, metric="logit_diff", progress=False).method["node_scores"])
    noise = torch.randn(len(nodes), generator=torch.Generator().manual_seed(0)).tolist()
    node_scores = {name: 10.0 if name == "input" else value for name, value in zip(nodes, noise)}  # mixed signs
    ranking = "absolute" if absolute else "signed"
    scores = mib_node_scores(CircuitEvaluator(model, task, "logit_diff"), node_scores, NODE_FRACTIONS, ranking, ranking)
    circuits = naive_node_circuits(model, node_scores, absolute)
    assert len({len(c) for c in circuits}) >= 3  # circuits of several sizes: the comparison means something
    f = naive_faithfulness(model, task, circuits)
    assert scores.cpr_curve.edges == [len(c) for c in circuits]
    assert scores.cpr_curve.faithfulness == pytest.approx(f, abs=1e-9)
    assert scores.cpr == pytest.approx(naive_area(NODE_FRACTIONS, f), abs=1e-9)
    assert scores.cmd == pytest.approx(naive_area(NODE_FRACTIONS, [abs(1 - v) for v in f]), abs=1e-9)
    assert scores.cpr_curve.basis == f"{ranking} nodes"


def test_a_node_method_is_compared_on_mibs_node_track():
    from acdc_engine.evaluation.method_comparison import compare_methods

    model, task = small_model(attn_only=False, n_heads=N_HEADS, d_head=8, seed=11), random_task(n_prompts=6, seed=4)
    result = compare_methods(model, task, methods=["eap-nodes"], metric="logit_diff", progress=False).results["eap-nodes"]
    assert (result.mib.cpr_curve.basis, result.mib.cmd_curve.basis) == ("signed nodes", "absolute nodes")
