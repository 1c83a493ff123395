"""EAP-IG / MIB graph files: read as EAP-IG writes them (JSON, old boolean nodes, .pt), written as
EAP-IG's reader expects them, and round trips that keep every edge, decision and score.

The files here are built the way EAP-IG's ``Graph`` lays them out, from its index arithmetic
(forward index of a sender, backward index of a receiver, ``prev_index``), independently of the
engine's own enumeration of EAP-IG's edges."""

import json
import math

import pytest
import torch

from acdc_engine.core.mask import CircuitMask
from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.formats.eap_ig import circuit_from_eap_ig, circuit_to_eap_ig, circuit_to_eap_ig_pt
from acdc_engine.commands.convert import main as acdc_convert
from acdc_engine.reference_circuits import reference_circuit
from factories import random_task, small_model
from acdc_engine.formats.circuit_file import save_circuit

# ----- EAP-IG's layout, from its index arithmetic -------------------------------------------------


def forward_index(name, n_heads):
    if name == "input":
        return 0
    layer = int(name[1:].split(".")[0])
    if name.startswith("m"):
        return 1 + layer * (n_heads + 1) + n_heads
    return 1 + layer * (n_heads + 1) + int(name.split(".h")[1])


def backward_index(name, n_layers, n_heads):
    if name == "logits":
        return n_layers * (3 * n_heads + 1)
    layer = int(name[1:].split(".")[0].split("<")[0])
    if name.startswith("m"):
        return layer * (3 * n_heads + 1) + 3 * n_heads
    head, qkv = int(name.split(".h")[1].split("<")[0]), name[-2]
    return layer * (3 * n_heads + 1) + "qkv".index(qkv) * n_heads + head


def eap_ig_layout(n_layers, n_heads):
    """(src names by forward index, dst names by backward index, edges in EAP-IG's insertion order)."""
    src = ["input"] + [n for l in range(n_layers) for n in [f"a{l}.h{h}" for h in range(n_heads)] + [f"m{l}"]]
    dst = [None] * (n_layers * (3 * n_heads + 1) + 1)
    for l in range(n_layers):
        for h in range(n_heads):
            for x in "qkv":
                dst[backward_index(f"a{l}.h{h}<{x}>", n_layers, n_heads)] = f"a{l}.h{h}<{x}>"
        dst[backward_index(f"m{l}", n_layers, n_heads)] = f"m{l}"
    dst[-1] = "logits"

    def prev_index(receiver):  # EAP-IG: senders with a forward index below this feed the receiver
        if receiver == "logits":
            return len(src)
        layer = int(receiver[1:].split(".")[0].split("<")[0])
        return 1 + layer * (n_heads + 1) + (n_heads if receiver.startswith("m") else 0)

    edges = []
    for l in range(n_layers):
        heads = [f"a{l}.h{h}<{x}>" for h in range(n_heads) for x in "qkv"]
        for s in src[: prev_index(heads[0])]:
            edges += [(s, r) for r in heads]
        edges += [(s, f"m{l}") for s in src[: prev_index(f"m{l}")]]
    edges += [(s, "logits") for s in src]
    return src, dst, edges


def prune(in_graph, edges):
    """EAP-IG's prune: drop edges whose sender has no incoming or receiver node no outgoing edge."""
    in_graph = dict(in_graph)
    while True:
        chosen = [e for e in edges if in_graph[e]]
        outgoing = {s for s, _ in chosen}
        incoming = {r.split("<")[0] for _, r in chosen} | {"input"}
        nodes = outgoing & incoming
        pruned = {e: in_graph[e] and e[0] in nodes and (e[1] == "logits" or e[1].split("<")[0] in nodes) for e in edges}
        if pruned == in_graph:
            return in_graph, nodes
        in_graph = pruned


def eap_ig_graph(n_layers, n_heads, attn_only=False, fraction=0.3, seed=0, d_model=64):
    """A graph as EAP-IG holds it after scoring, apply_topn and prune: float32 scores, the top
    ``fraction`` of edges by |score|, pruned; attention-only models have MLP edges scored 0."""
    src, dst, edges = eap_ig_layout(n_layers, n_heads)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(edges), generator=g, dtype=torch.float32)
    is_mlp = torch.tensor([s.startswith("m") or r.startswith("m") for s, r in edges])
    if attn_only:
        scores[is_mlp] = 0.0
    top = set(torch.argsort(scores.abs(), descending=True, stable=True)[: int(fraction * len(edges))].tolist())
    in_graph, nodes = prune({e: i in top for i, e in enumerate(edges)}, edges)
    cfg = {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False, "d_model": d_model}
    return {"cfg": cfg, "src": src, "dst": dst, "edges": edges, "scores": scores.tolist(), "in_graph": in_graph, "nodes": nodes}


def to_json_text(graph, boolean_nodes=False, null_scores=False):
    """EAP-IG's to_json of the graph (``boolean_nodes``/``null_scores``: as older versions wrote)."""
    names = graph["src"] + ["logits"]
    in_nodes = graph["nodes"] | {"logits"}
    nodes = {n: (n in in_nodes) if boolean_nodes else {"in_graph": n in in_nodes} for n in names}
    edges = {
        f"{s}->{r}": {"score": None if null_scores else score, "in_graph": graph["in_graph"][(s, r)]}
        for (s, r), score in zip(graph["edges"], graph["scores"])
    }
    cfg = graph["cfg"] if not boolean_nodes else {k: v for k, v in graph["cfg"].items() if k != "d_model"}
    return json.dumps({"cfg": cfg, "nodes": nodes, "edges": edges})


def to_pt(graph, path, **extra):
    """EAP-IG's to_pt of the graph: score and membership matrices by forward x backward index."""
    cfg = graph["cfg"]
    scores = torch.zeros(len(graph["src"]), len(graph["dst"]))
    in_graph = torch.zeros(len(graph["src"]), len(graph["dst"]), dtype=torch.bool)
    for (s, r), score in zip(graph["edges"], graph["scores"]):
        i, j = forward_index(s, cfg["n_heads"]), backward_index(r, cfg["n_layers"], cfg["n_heads"])
        scores[i, j], in_graph[i, j] = score, graph["in_graph"][(s, r)]
    nodes = torch.tensor([n in graph["nodes"] for n in graph["src"]])
    data = {"cfg": dict(cfg), "src_nodes": graph["src"], "dst_nodes": graph["dst"], "edges_scores": scores,
            "edges_in_graph": in_graph, "nodes_in_graph": nodes, **extra}
    torch.save(data, path)
    return path


def read_like_eap_ig(data):
    """What EAP-IG's from_json needs and takes from a file: {edge: (in_graph, score)}; asserts the
    fields it reads are there with the types its tensors take."""
    assert set(data) >= {"cfg", "nodes", "edges"}
    cfg = data["cfg"]
    _, _, edges = eap_ig_layout(cfg["n_layers"], cfg["n_heads"])
    names = {f"{s}->{r}" for s, r in edges}
    for name, node in data["nodes"].items():
        assert isinstance(node, dict) and isinstance(node["in_graph"], bool), name
    read = {}
    for name, info in data["edges"].items():
        assert name in names, name
        assert isinstance(info["score"], float) and math.isfinite(info["score"]), name
        assert isinstance(info["in_graph"], bool), name
        read[name] = (info["in_graph"], info["score"])
    return read


def in_graph_edges(graph):
    return {f"{s}->{r}" for (s, r), chosen in graph["in_graph"].items() if chosen}


def same_circuit(a: Circuit, b: Circuit) -> bool:
    return (
        a.graph.shape == b.graph.shape
        and torch.equal(a.in_graph.edges, b.in_graph.edges)
        and torch.equal(a.kept.edges, b.kept.edges)
        and torch.equal(a.in_graph.head_inputs, b.in_graph.head_inputs)
        and torch.equal(a.kept.head_inputs, b.kept.head_inputs)
        and torch.equal(a.scores.edges.nan_to_num(7.5), b.scores.edges.nan_to_num(7.5))
        and torch.equal(a.scores.edges.isnan(), b.scores.edges.isnan())
        and torch.equal(a.scores.head_inputs.isnan(), b.scores.head_inputs.isnan())
        and a.metric == b.metric and a.model == b.model and a.method == b.method and a.threshold == b.threshold
    )


@pytest.fixture(scope="module")
def attn_only_circuit():
    return discover(small_model(attn_only=True, seed=4), random_task(), threshold=0.002, progress=False)


# ----- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), (12, 12)], ids=["small", "gpt2-shape"])
def test_eap_ig_json_of_an_mlp_model_loads_with_its_edges_and_scores(tmp_path, shape):
    graph = eap_ig_graph(*shape, fraction=0.03 if shape[0] == 12 else 0.3)
    path = tmp_path / "graph.json"
    path.write_text(to_json_text(graph))
    circuit = load_circuit(path)
    assert circuit.graph.shape == GraphShape(*shape, has_mlp=True)
    assert set(circuit.edges()) == in_graph_edges(graph)
    g = circuit.graph
    for (s, r), score in zip(graph["edges"], graph["scores"]):
        assert circuit.scores.edges[g.sender_index[s], g.receiver_index[r]].item() == score


def test_gpt2_shape_file_has_the_gpt2_edge_count(tmp_path):
    path = tmp_path / "gpt2.json"
    path.write_text(to_json_text(eap_ig_graph(12, 12, fraction=0.01)))
    assert load_circuit(path).n_edges_total == 32491


def test_attention_only_file_with_mlp_nodes_loads_as_attention_only(tmp_path):
    graph = eap_ig_graph(2, 3, attn_only=True)
    path = tmp_path / "attn.json"
    path.write_text(to_json_text(graph))
    circuit = load_circuit(path)
    assert not circuit.graph.shape.has_mlp and circuit.model["attn_only"] is True
    assert set(circuit.edges()) == in_graph_edges(graph)


def test_attention_only_can_be_overridden_by_the_caller():
    data = json.loads(to_json_text(eap_ig_graph(2, 3, attn_only=True)))
    assert circuit_from_eap_ig(data, attn_only=False).graph.shape.has_mlp


def test_older_files_with_boolean_nodes_no_d_model_and_null_scores_load(tmp_path):
    graph = eap_ig_graph(2, 3)
    path = tmp_path / "old.json"
    path.write_text(to_json_text(graph, boolean_nodes=True, null_scores=True))
    circuit = load_circuit(path)
    assert set(circuit.edges()) == in_graph_edges(graph)
    assert circuit.scores.edges[circuit.graph.edge_exists].isnan().all()
    assert "d_model" not in circuit.model


@pytest.mark.parametrize("attn_only", [False, True], ids=["mlp", "attn-only"])
def test_eap_ig_pt_file_loads_as_its_json_does(tmp_path, attn_only):
    graph = eap_ig_graph(2, 3, attn_only=attn_only)
    (tmp_path / "g.json").write_text(to_json_text(graph))
    from_pt = load_circuit(to_pt(graph, tmp_path / "g.pt"))
    from_json = load_circuit(tmp_path / "g.json")
    assert set(from_pt.edges()) == set(from_json.edges()) == in_graph_edges(graph)
    torch.testing.assert_close(from_pt.scores.edges, from_json.scores.edges, rtol=0, atol=0, equal_nan=True)
    assert from_pt.graph.shape == from_json.graph.shape


SIDE_EFFECTS = []


def record_side_effect(text):
    SIDE_EFFECTS.append(text)
    return text


class Payload:
    def __reduce__(self):
        return record_side_effect, ("unpickled",)


def test_pt_file_with_arbitrary_objects_is_refused_without_unpickling(tmp_path):
    path = to_pt(eap_ig_graph(2, 3), tmp_path / "evil.pt", payload=Payload())
    with pytest.raises(AcdcError, match="refused.*weights_only"):
        load_circuit(path)
    assert SIDE_EFFECTS == []


def test_unpruned_in_graph_edges_are_kept_but_emitted_only_on_paths_as_eap_ig_prunes():
    graph = eap_ig_graph(2, 3)
    data = json.loads(to_json_text(graph))
    dangling = next(n for n, e in data["edges"].items() if n.endswith("->a1.h0<q>") and not e["in_graph"])
    for name, edge in data["edges"].items():
        if name.startswith("a1.h0->"):
            edge["in_graph"] = False  # a1.h0 writes nowhere: an edge into it is off every path
    data["edges"][dangling]["in_graph"] = True
    circuit = circuit_from_eap_ig(data)
    s, r = circuit.graph.parse_edge(dangling)
    assert circuit.kept.edges[s, r] and not circuit.in_graph.edges[s, r]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["cfg"].update(parallel_attn_mlp=True), "parallel_attn_mlp is true"),
        (lambda d: d["cfg"].pop("n_heads"), "cfg: missing field 'n_heads'"),
        (lambda d: d["edges"].update({"m1->a0.h0<q>": {"score": 1.0, "in_graph": True}}), "'m1->a0.h0<q>' is not an edge"),
        (lambda d: d["nodes"].update({"a9.h9": {"in_graph": True}}), "unknown node 'a9.h9'"),
        (lambda d: d["nodes"]["m0"].update(in_graph=True, neurons=[True, False]), "neuron-level circuit"),
        (lambda d: d["edges"]["input->m0"].update(score="high"), "'score' must be a number"),
    ],
    ids=["parallel", "cfg", "edge", "node", "neurons", "score"],
)
def test_malformed_eap_ig_files_are_refused_with_one_line_naming_the_problem(tmp_path, change, message):
    data = json.loads(to_json_text(eap_ig_graph(2, 3)))
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AcdcError, match=message.replace("[", r"\[").replace("(", r"\(")) as caught:
        load_circuit(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_an_mlp_edge_in_the_circuit_of_an_attention_only_model_is_refused():
    data = json.loads(to_json_text(eap_ig_graph(2, 3, attn_only=True)))
    data["edges"]["input->m0"]["in_graph"] = True
    with pytest.raises(AcdcError, match="attention-only"):
        circuit_from_eap_ig(data, attn_only=True)


# ----- writing ------------------------------------------------------------------------------------


@pytest.fixture(params=["attn-only", "mlp", "gpt2-ioi"])
def exportable(request, small_circuit, attn_only_circuit):
    if request.param == "gpt2-ioi":
        return reference_circuit("ioi"), 768
    return (attn_only_circuit if request.param == "attn-only" else small_circuit), None


def test_export_has_exactly_eap_ig_cfg_every_node_as_an_object_and_every_edge(exportable):
    circuit, d_model = exportable
    data = circuit_to_eap_ig(circuit, d_model=d_model)
    shape = circuit.graph.shape
    assert list(data["cfg"]) == ["n_layers", "n_heads", "parallel_attn_mlp", "d_model"]
    assert data["cfg"]["parallel_attn_mlp"] is False
    src, _, edges = eap_ig_layout(shape.n_layers, shape.n_heads)
    assert list(data["nodes"]) == src + ["logits"]  # MLP nodes also for attention-only models
    assert data["nodes"]["logits"] == {"in_graph": True}
    assert list(data["edges"]) == [f"{s}->{r}" for s, r in edges]  # EAP-IG's order


def test_exported_edges_read_back_by_eap_ig_format_are_the_circuit(exportable):
    circuit, d_model = exportable
    read = read_like_eap_ig(json.loads(json.dumps(circuit_to_eap_ig(circuit, d_model=d_model))))
    assert {name for name, (in_graph, _) in read.items() if in_graph} == set(circuit.edges())
    pruned, nodes = prune({tuple(n.split("->")): g for n, (g, _) in read.items()}, [tuple(n.split("->")) for n in read])
    assert {f"{s}->{r}" for (s, r), g in pruned.items() if g} == set(circuit.edges())  # EAP-IG's prune keeps it
    assert nodes | {"logits"} == set(circuit.nodes()) | {"logits"}


def test_untested_edges_are_exported_with_score_zero_and_marked_untested(small_circuit):
    data = circuit_to_eap_ig(small_circuit)
    g = small_circuit.graph
    untested = [f"{s}->{r}" for s, r in g.edges() if small_circuit.scores.edges[g.sender_index[s], g.receiver_index[r]].isnan()]
    assert untested, "the fixture should have edges removed untested"
    for name in untested:
        assert data["edges"][name]["score"] == 0.0 and data["edges"][name]["tested"] is False


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_round_trip_through_eap_ig_keeps_every_edge_decision_and_score(tmp_path, exportable, suffix):
    circuit, d_model = exportable
    path = tmp_path / f"circuit{suffix}"
    if suffix == ".pt":
        path.write_bytes(circuit_to_eap_ig_pt(circuit, d_model=d_model))
    else:
        path.write_text(json.dumps(circuit_to_eap_ig(circuit, d_model=d_model)))
    back = load_circuit(path)
    assert same_circuit(back, circuit)
    assert back.extra == circuit.extra


def test_exported_pt_has_eap_ig_matrices_by_forward_and_backward_index(small_circuit):
    import io

    data = torch.load(io.BytesIO(circuit_to_eap_ig_pt(small_circuit)), weights_only=True)
    shape = small_circuit.graph.shape
    for name in small_circuit.edges():
        s, r = name.split("->")
        assert data["edges_in_graph"][forward_index(s, shape.n_heads), backward_index(r, shape.n_layers, shape.n_heads)]
    assert int(data["edges_in_graph"].sum()) == small_circuit.n_edges


def test_eap_ig_file_round_trips_through_this_engines_format(tmp_path):
    graph = eap_ig_graph(2, 3)
    (tmp_path / "g.json").write_text(to_json_text(graph))
    save_circuit(load_circuit(tmp_path / "g.json"), tmp_path / "ours.json")
    read = read_like_eap_ig(circuit_to_eap_ig(load_circuit(tmp_path / "ours.json")))
    original = {f"{s}->{r}": (graph["in_graph"][(s, r)], score) for (s, r), score in zip(graph["edges"], graph["scores"])}
    assert read == original


def test_split_input_circuits_have_no_eap_ig_form():
    with pytest.raises(AcdcError, match="split_input"):
        circuit_to_eap_ig(reference_circuit("tracr-reverse"))


def test_a_missing_d_model_is_named():
    with pytest.raises(AcdcError, match="d_model"):
        circuit_to_eap_ig(reference_circuit("ioi"))


# ----- acdc-convert, acdc-compare, acdc-evaluate --------------------------------------------------


def test_acdc_convert_writes_eap_ig_and_reads_it_back(tmp_path, capsys):
    assert acdc_convert(["ioi", str(tmp_path / "ioi.json"), "--to", "eap-ig", "--d-model", "768"]) == 0
    assert acdc_convert([str(tmp_path / "ioi.json"), str(tmp_path / "back.json"), "--to", "acdc-engine"]) == 0
    assert json.loads((tmp_path / "ioi.json").read_text())["cfg"]["d_model"] == 768
    assert same_circuit(load_circuit(tmp_path / "back.json"), reference_circuit("ioi"))
    assert "963 / 32491 edges" in capsys.readouterr().out


def test_acdc_convert_errors_are_one_line(tmp_path, capsys):
    assert acdc_convert(["ioi", str(tmp_path / "x.json"), "--to", "eap-ig"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("acdc-convert: error:") and "d_model" in err and "\n" not in err


def test_acdc_compare_reads_eap_ig_json_and_pt_as_one_circuit(tmp_path, capsys):
    from acdc_engine.commands.compare import main as acdc_compare

    graph = eap_ig_graph(2, 3)
    (tmp_path / "g.json").write_text(to_json_text(graph))
    to_pt(graph, tmp_path / "g.pt")
    report = tmp_path / "comparison.json"
    assert acdc_compare([str(tmp_path / "g.json"), str(tmp_path / "g.pt"), "--json", str(report), "--out", str(tmp_path)]) == 0
    edges = json.loads(report.read_text())["pairs"][0]["name"]["edges"]
    assert edges["jaccard"] == 1.0 and edges["shared"] == len(in_graph_edges(graph))
    assert (tmp_path / "diff_A_B.html").is_file()


def test_acdc_evaluate_takes_an_eap_ig_pt_truth(tmp_path, toy_induction_model):
    from acdc_engine.evaluation.overlap import load_circuit_or_reference  # how acdc-evaluate reads truth=
    from acdc_engine.evaluation.method_comparison import compare_methods

    truth = tmp_path / "truth.pt"
    truth.write_bytes(circuit_to_eap_ig_pt(reference_circuit("toy-induction-2l")))
    result = compare_methods(toy_induction_model, "induction", truth=load_circuit_or_reference(str(truth)), methods=["eap"], fractions=[0.1, 1.0])
    assert 0.5 < result.results["eap"].roc["edge"].auc <= 1.0


def test_random_edge_sets_of_every_shape_survive_the_round_trip():
    for n_layers, n_heads, has_mlp in [(1, 1, False), (1, 2, True), (3, 1, True), (2, 5, False)]:
        graph = build_graph(GraphShape(n_layers, n_heads, has_mlp))
        g = torch.Generator().manual_seed(n_layers * 10 + n_heads)
        kept = graph.edge_exists & (torch.rand(graph.edge_exists.shape, generator=g) < 0.5)
        circuit = Circuit.unscored(graph, CircuitMask(kept, graph.full_head_input_mask()), model={"n_layers": n_layers, "n_heads": n_heads, "attn_only": not has_mlp, "d_model": 8})
        assert same_circuit(circuit_from_eap_ig(json.loads(json.dumps(circuit_to_eap_ig(circuit)))), circuit)
