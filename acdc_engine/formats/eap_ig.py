"""EAP-IG graph files, JSON and ``.pt``, as EAP-IG's ``Graph.to_json`` / ``to_pt`` write them (and the
MIB circuit track reads them), to and from this engine's circuits.

EAP-IG JSON::

    {"cfg": {"n_layers": int, "n_heads": int, "parallel_attn_mlp": bool, "d_model": int},
     "nodes": {name: {"in_graph": bool, "score"?: float, "neurons"?: [bool], "neurons_scores"?: [float]}},
     "edges": {name: {"score": float, "in_graph": bool}}}

Older EAP-IG files store nodes as plain booleans (``{name: bool}``), may lack ``d_model`` and may
hold ``null`` scores. EAP-IG ``.pt`` files (``torch.save`` of a dict of tensors, lists and numbers,
loaded here with ``torch.load(weights_only=True)``: nothing is unpickled)::

    {"cfg": {...}, "src_nodes": [name], "dst_nodes": [name],
     "edges_scores": float [n_src, n_dst], "edges_in_graph": bool [n_src, n_dst],
     "nodes_in_graph": bool [n_src], "nodes_scores"?: [n_src], "neurons_in_graph"?, "neurons_scores"?}

with ``src_nodes`` = input, then per layer its heads and its MLP; ``dst_nodes`` = per layer the q
inputs of its heads, then their k inputs, their v inputs and the MLP; then logits. Node and edge
names are this engine's (``a1.h2``, ``m0``, ``a0.h1->a1.h2<k>``). EAP-IG's graph always has an MLP
node per layer, also for attention-only models, and an MLP reads the heads of its own layer
(``parallel_attn_mlp: false``, the only layout this engine's graph has; ``true`` is refused).

Reading (``circuit_from_eap_ig``, ``circuit_from_eap_ig_pt``):
  * an edge's ``in_graph`` is read as its decision (``kept``); the emitted circuit is the part on
    input-to-logits paths, which is what EAP-IG's ``prune()`` leaves before every evaluation. Node
    flags follow from the edges (``prune()`` recomputes them too) and are not read; the ``logits``
    node is always in the graph. Edges a file does not list are out of the circuit, unscored.
  * ``score`` null (older files), NaN (``.pt``) or absent: not scored. Node scores are kept in
    ``Circuit.extra["node_scores"]`` and written back. A neuron-level circuit (a node with edges in
    the circuit but some of its neurons out) is refused: this engine's circuits are edge-level.
  * attention-only: the cfg does not say. A file this engine wrote says it in its ``acdc_engine``
    block; otherwise the model is read as attention-only when no MLP edge is in the circuit and
    every MLP edge's score is 0 or absent (what EAP-IG's graph holds for a model without MLPs).
    ``attn_only=True/False`` overrides the rule.

Writing (``circuit_to_eap_ig``, ``circuit_to_eap_ig_pt``):
  * ``cfg``: exactly ``n_layers``, ``n_heads``, ``parallel_attn_mlp`` (false), ``d_model`` (the
    model block's, or given; EAP-IG's reader needs it);
  * every node of EAP-IG's graph, as an object, in EAP-IG's order, ``logits`` included (always in the
    graph, as EAP-IG writes it); MLP nodes of attention-only models too (never in the graph);
  * every edge of EAP-IG's graph, in EAP-IG's order: ``in_graph`` = the emitted circuit, ``score`` =
    the metric change measured for it. **Untested edges** (``score: null`` in this engine's files:
    removed without a test) are written with score 0.0 (no effect was measured; they rank last by
    |score|, beside edges measured at exactly 0) and ``"tested": false``; MLP edges of
    attention-only models with score 0.0 and ``in_graph`` false;
  * node scores, as EAP-IG's ``attribute_node`` fills ``nodes_scores`` (MIB's node track reads
    them): a node-level method's (its method block's ``node_scores``) or those read from a file,
    as each node's ``score`` (``.pt``: ``nodes_scores`` [n_src], NaN = unscored); MLP nodes of an
    attention-only model score 0.0;
  * neuron scores, as ``attribute_node(neuron=True)`` fills ``neurons_scores`` (MIB's neuron track):
    a neuron-level method's (its method block's ``neuron_scores``) as each node's
    ``neurons_scores`` [d_model] and ``neurons`` (every neuron of a node in the graph: this engine
    keeps nodes whole) (``.pt``: ``neurons_scores`` and ``neurons_in_graph`` [n_src, d_model]);
  * what EAP-IG has no field for goes where its readers ignore it: ``"kept": true`` on an edge kept
    but off every input-to-logits path, and the ``acdc_engine`` block (format, version, model, task,
    method, threshold, metric, run, head inputs, other fields). Reading the file back gives the
    circuit exactly: every edge, decision and score. In ``.pt`` files the per-edge flags are the
    block's ``edges_kept``, ``edges_tested`` and (float64) ``edges_scores`` tensors.
  * a circuit whose graph splits the input (``split_input``: ``tok_embed``, ``pos_embed``) has no
    EAP-IG form (EAP-IG's graph has one ``input`` node) and is refused.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import torch

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import QKV, GraphShape, build_graph
from acdc_engine.core.shape import edge_count
from acdc_engine.core.nodes import INPUT, LOGITS, NodeKind, edge_name, head_name, head_receiver_name, mlp_name, parse_node, split_edge
from acdc_engine.formats.circuit_file import circuit_fields, circuit_to_dict
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.formats.strict_json import parse_json

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive

BLOCK = "acdc_engine"  # the top-level key of this engine's fields in an exported file
CFG_KEYS = ("n_layers", "n_heads", "parallel_attn_mlp", "d_model")
PT_KEYS = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph")


# ----- EAP-IG's graph: node and edge names in its order ----------------------------------------


def eap_ig_src_nodes(n_layers: int, n_heads: int) -> list[str]:
    """EAP-IG's sender (forward) nodes in order: input, then per layer its heads and its MLP."""
    names = [INPUT]
    for layer in range(n_layers):
        names += [head_name(layer, head) for head in range(n_heads)] + [mlp_name(layer)]
    return names


def eap_ig_dst_nodes(n_layers: int, n_heads: int) -> list[str]:
    """EAP-IG's receiver (backward) nodes in order: per layer the q, k, v inputs of its heads
    (every head's q first) and its MLP; then logits."""
    names = []
    for layer in range(n_layers):
        names += [head_receiver_name(layer, head, x) for x in QKV for head in range(n_heads)] + [mlp_name(layer)]
    return names + [LOGITS]


def eap_ig_node_names(n_layers: int, n_heads: int) -> list[str]:
    """The nodes of EAP-IG's ``to_json``, in its order: the senders, then logits."""
    return eap_ig_src_nodes(n_layers, n_heads) + [LOGITS]


def eap_ig_edges(n_layers: int, n_heads: int) -> list[tuple[str, str]]:
    """EAP-IG's edges as (sender, receiver), in the order its graph (and ``to_json``) lists them:
    per layer, every earlier sender into each head's q, k, v, then every sender so far (the layer's
    heads included) into the MLP; last, every sender into logits."""
    edges: list[tuple[str, str]] = []
    written = [INPUT]
    for layer in range(n_layers):
        heads = [head_name(layer, head) for head in range(n_heads)]
        edges += [(s, head_receiver_name(layer, head, x)) for s in written for head in range(n_heads) for x in QKV]
        written += heads
        edges += [(s, mlp_name(layer)) for s in written]
        written.append(mlp_name(layer))
    return edges + [(s, LOGITS) for s in written]


def _touches_mlp(edge: str) -> bool:
    """Whether an edge of EAP-IG's graph has an MLP at either end. EAP-IG names nodes and edges as
    this engine does, so ``parse_node`` reads them (callers pass only names of EAP-IG's graph)."""
    return any(parse_node(end).kind is NodeKind.MLP for end in split_edge(edge))


# ----- writing ------------------------------------------------------------------------------------


def _cfg(circuit: Circuit, d_model: int | None) -> dict[str, Any]:
    shape = circuit.graph.shape
    if shape.split_input:
        raise AcdcError(
            "this circuit's graph splits the input into tok_embed and pos_embed (split_input); EAP-IG's graph "
            "has one 'input' node, so the circuit has no EAP-IG form"
        )
    d_model = circuit.model.get("d_model") if d_model is None else d_model
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
        raise AcdcError(
            "EAP-IG's cfg needs the model's d_model, and the circuit's model block has none: give it "
            "(acdc-convert --d-model N, or to_eap_ig(d_model=N))"
        )
    return {"n_layers": shape.n_layers, "n_heads": shape.n_heads, "parallel_attn_mlp": False, "d_model": d_model}


def _block(native: dict[str, Any]) -> dict[str, Any]:
    """This engine's fields of a circuit file that EAP-IG's layout has no place for."""
    return {key: value for key, value in native.items() if key not in ("nodes", "edges", "node_scores")}


def circuit_node_scores(circuit: Circuit, cfg: dict[str, Any]) -> dict[str, float | None]:
    """The circuit's node scores, {node: score or None}: those read from a file (``extra``), as
    read; else a node-level method's (its method block's ``node_scores``), with score 0.0 for the
    MLP nodes of an attention-only model (as its MLP edges); {} when it has none."""
    if circuit.extra.get("node_scores"):
        return dict(circuit.extra["node_scores"])
    scores = dict(circuit.method.get("node_scores") or {})
    if not scores or circuit.graph.shape.has_mlp:
        return scores
    return {**{mlp_name(layer): 0.0 for layer in range(cfg["n_layers"])}, **scores}


def circuit_neuron_scores(circuit: Circuit, cfg: dict[str, Any]) -> dict[str, list[float]]:
    """A neuron-level method's scores (its method block's ``neuron_scores``), {node: [d_model
    scores]}, with zeros for the MLP nodes of an attention-only model; {} when it has none."""
    scores = dict(circuit.method.get("neuron_scores") or {})
    if not scores or circuit.graph.shape.has_mlp:
        return scores
    return {**{mlp_name(layer): [0.0] * cfg["d_model"] for layer in range(cfg["n_layers"])}, **scores}


def circuit_to_eap_ig(circuit: Circuit, d_model: int | None = None) -> dict[str, Any]:
    """The circuit as EAP-IG's ``to_json`` lays a graph out, plus this engine's fields where EAP-IG's
    readers ignore them (module docstring). AcdcError if it has no EAP-IG form or d_model is unknown."""
    cfg = _cfg(circuit, d_model)
    native = circuit_to_dict(circuit)
    ours = native["edges"]
    edges: dict[str, dict[str, Any]] = {}
    for sender, receiver in eap_ig_edges(cfg["n_layers"], cfg["n_heads"]):
        name = edge_name(sender, receiver)
        entry = ours.get(name)
        if entry is None:  # an MLP edge of an attention-only model
            edges[name] = {"score": 0.0, "in_graph": False}
            continue
        edge = {"score": 0.0 if entry["score"] is None else entry["score"], "in_graph": entry["in_graph"]}
        if entry["score"] is None:
            edge["tested"] = False
        if entry["kept"] and not entry["in_graph"]:
            edge["kept"] = True
        edges[name] = edge
    in_graph = set(circuit.nodes()) | {LOGITS}
    node_scores, neuron_scores = circuit_node_scores(circuit, cfg), circuit_neuron_scores(circuit, cfg)
    nodes = {}
    for name in eap_ig_node_names(cfg["n_layers"], cfg["n_heads"]):
        nodes[name] = {"in_graph": name in in_graph}
        if name in node_scores and node_scores[name] is not None:
            nodes[name]["score"] = node_scores[name]
        if name in neuron_scores:  # this engine keeps nodes whole: every neuron of a node in the graph
            nodes[name].update(neurons=[nodes[name]["in_graph"]] * cfg["d_model"], neurons_scores=neuron_scores[name])
    return {"cfg": cfg, "nodes": nodes, "edges": edges, BLOCK: _block(native)}


def circuit_to_eap_ig_pt(circuit: Circuit, d_model: int | None = None) -> bytes:
    """The circuit as EAP-IG's ``to_pt`` writes a graph (``torch.save`` bytes of tensors, lists and
    plain values only, so ``torch.load(weights_only=True)`` reads it), with this engine's block."""
    cfg = _cfg(circuit, d_model)
    src, dst = eap_ig_src_nodes(cfg["n_layers"], cfg["n_heads"]), eap_ig_dst_nodes(cfg["n_layers"], cfg["n_heads"])
    g = circuit.graph
    rows = torch.tensor([src.index(name) for name in g.senders])
    cols = torch.tensor([dst.index(name) for name in g.receivers])
    index = (rows[:, None].expand(-1, len(cols)), cols[None, :].expand(len(rows), -1))
    exists = g.edge_exists

    def matrix(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(len(src), len(dst), dtype=dtype)
        out[index[0][exists], index[1][exists]] = values[exists].to(dtype)
        return out

    tested = ~circuit.scores.edges.isnan()
    scores = torch.where(tested, circuit.scores.edges, torch.zeros_like(circuit.scores.edges))
    in_graph_nodes = set(circuit.nodes())
    block = _block(circuit_to_dict(circuit))
    block["edges_kept"] = matrix(circuit.kept.edges, torch.bool)
    block["edges_tested"] = matrix(tested, torch.bool)
    block["edges_scores"] = matrix(scores, torch.float64)  # EAP-IG's own matrix is float32
    data = {
        "cfg": cfg,
        "src_nodes": src,
        "dst_nodes": dst,
        "edges_scores": matrix(scores, torch.float32),
        "edges_in_graph": matrix(circuit.in_graph.edges, torch.bool),
        "nodes_in_graph": torch.tensor([name in in_graph_nodes for name in src]),
        BLOCK: block,
    }
    node_scores = circuit_node_scores(circuit, cfg)
    if node_scores:
        data["nodes_scores"] = torch.tensor([math.nan if node_scores.get(n) is None else node_scores[n] for n in src])
    neuron_scores = circuit_neuron_scores(circuit, cfg)
    if neuron_scores:
        nan_row = [math.nan] * cfg["d_model"]
        data["neurons_scores"] = torch.tensor([neuron_scores.get(n, nan_row) for n in src], dtype=torch.float32)
        data["neurons_in_graph"] = data["nodes_in_graph"][:, None].expand(-1, cfg["d_model"]).clone()
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


# ----- reading ------------------------------------------------------------------------------------


def _positive_int(cfg: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    if key not in cfg:
        if required:
            raise AcdcError(f"{where}: missing field '{key}'")
        return None
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AcdcError(f"{where}: field '{key}' must be a positive integer, got {value!r:.80}")
    return value


def _read_cfg(cfg: Any, source: str) -> dict[str, Any]:
    """EAP-IG's cfg checked, as the ``model`` block of the circuit (every cfg key kept)."""
    where = f"{source}: cfg"
    if not isinstance(cfg, dict):
        raise AcdcError(f"{where}: must be an object with n_layers, n_heads, parallel_attn_mlp (and d_model)")
    _positive_int(cfg, "n_layers", where)
    _positive_int(cfg, "n_heads", where)
    _positive_int(cfg, "d_model", where, required=False)
    if "parallel_attn_mlp" not in cfg:
        raise AcdcError(f"{where}: missing field 'parallel_attn_mlp'")
    if not isinstance(cfg["parallel_attn_mlp"], bool):
        raise AcdcError(f"{where}: field 'parallel_attn_mlp' must be true or false, got {cfg['parallel_attn_mlp']!r:.80}")
    if cfg["parallel_attn_mlp"]:
        raise AcdcError(
            f"{where}: parallel_attn_mlp is true (attention and MLP reading one residual, GPT-J / NeoX style): "
            "not supported by this engine's graph"
        )
    return dict(cfg)


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise AcdcError(f"{where}: field 'score' must be a number or null, got {value!r:.80}")
    return None if math.isnan(value) else float(value)


def _decide_attn_only(edges: dict[str, tuple[bool, bool, float | None]], attn_only: bool | None) -> bool:
    if attn_only is not None:
        return attn_only
    mlp = [entry for name, entry in edges.items() if _touches_mlp(name)]
    return not any(in_graph or kept or (score not in (None, 0.0)) for in_graph, kept, score in mlp)


def _build(
    cfg: dict[str, Any],
    edges: dict[str, tuple[bool, bool, float | None]],
    block: Any,
    node_scores: dict[str, float | None],
    source: str,
    attn_only: bool | None,
) -> dict[str, Any]:
    """The ``Circuit`` constructor's arguments for EAP-IG edges {name: (in_graph, kept, score)} and
    this engine's block, if any."""
    if block is not None and not isinstance(block, dict):
        raise AcdcError(f"{source}: field '{BLOCK}' must be an object")
    if block is not None and attn_only is None and isinstance(block.get("model"), dict):
        attn_only = block["model"].get("attn_only")
        attn_only = attn_only if isinstance(attn_only, bool) else None
    attn_only = _decide_attn_only(edges, attn_only)
    native_edges = {}
    for name, (in_graph, kept, score) in edges.items():
        if attn_only and _touches_mlp(name):
            if in_graph or kept:
                raise AcdcError(f"{source}: edges['{name}'] is in the circuit, but the model is attention-only")
            continue
        native_edges[name] = {"in_graph": in_graph, "kept": kept, "score": score}
    native = {} if block is None else {k: v for k, v in block.items() if k not in ("edges_kept", "edges_tested", "edges_scores")}
    model = native.get("model") if isinstance(native.get("model"), dict) else {**cfg, "split_input": False}
    native["model"] = {**model, "attn_only": attn_only}
    if node_scores:
        native["node_scores"] = node_scores
    native["edges"] = native_edges
    shape = GraphShape(cfg["n_layers"], cfg["n_heads"], has_mlp=not attn_only)
    listed = set(native_edges)
    if len(listed) < edge_count(shape):  # EAP-IG's reader takes files that list some edges only
        for sender, receiver in build_graph(shape).edges():
            native_edges.setdefault(edge_name(sender, receiver), {"in_graph": False, "kept": False, "score": None})
    fields = circuit_fields(native, source=source)
    if block is None:  # the file's in_graph is the decision; emit its part on input-to-logits paths
        fields["in_graph"] = on_input_to_logits_paths(fields["graph"], fields["kept"])
    return fields


def _read_nodes(nodes: Any, names: set[str], source: str) -> dict[str, float | None]:
    """Check the nodes section; refuse neuron-level circuits; return the node scores given."""
    if nodes is None:
        return {}
    if not isinstance(nodes, dict):
        raise AcdcError(f"{source}: nodes: must be an object mapping node names to {{\"in_graph\": ...}}")
    scores: dict[str, float | None] = {}
    for name, entry in nodes.items():
        where = f"{source}: nodes['{name}']"
        if name not in names:
            raise AcdcError(f"{source}: nodes: unknown node '{name}'")
        if isinstance(entry, bool):  # older EAP-IG files: {name: in_graph}
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("in_graph"), bool):
            raise AcdcError(f"{where}: must be true/false or an object with 'in_graph' true/false")
        if "score" in entry:
            scores[name] = _score(entry["score"], where)
        neurons = entry.get("neurons")
        if neurons is not None and entry["in_graph"] and not (isinstance(neurons, list) and all(n is True for n in neurons)):
            kept = sum(n is True for n in neurons) if isinstance(neurons, list) else "?"
            total = len(neurons) if isinstance(neurons, list) else "?"
            raise AcdcError(
                f"{where}: a neuron-level circuit ({kept} of {total} neurons in the graph); this engine's circuits are edge-level"
            )
    return scores


def eap_ig_fields(data: Any, source: str = "circuit", attn_only: bool | None = None) -> dict[str, Any]:
    """The ``Circuit`` constructor's arguments for a parsed EAP-IG / MIB graph JSON (module
    docstring); AcdcError names the bad field."""
    if not isinstance(data, dict):
        raise AcdcError(f"{source}: an EAP-IG graph file must hold a JSON object")
    cfg = _read_cfg(data.get("cfg"), source)
    n_layers, n_heads = cfg["n_layers"], cfg["n_heads"]
    node_scores = _read_nodes(data.get("nodes"), set(eap_ig_node_names(n_layers, n_heads)), source)
    section = data.get("edges")
    if not isinstance(section, dict):
        raise AcdcError(f"{source}: edges: missing, or not an object mapping edge names to {{\"score\", \"in_graph\"}}")
    known = {edge_name(s, r) for s, r in eap_ig_edges(n_layers, n_heads)}
    edges = {}
    for name, entry in section.items():
        where = f"{source}: edges['{name}']"
        if name not in known:
            raise AcdcError(f"{source}: edges: '{name}' is not an edge of EAP-IG's graph for {n_layers} layers of {n_heads} heads")
        if not isinstance(entry, dict) or not isinstance(entry.get("in_graph"), bool):
            raise AcdcError(f"{where}: must be an object with 'in_graph' true/false and 'score'")
        score = _score(entry.get("score"), where)
        if entry.get("tested") is False:
            score = None
        kept = entry.get("kept", entry["in_graph"])
        if not isinstance(kept, bool):
            raise AcdcError(f"{where}: field 'kept' must be true or false")
        edges[name] = (entry["in_graph"], kept, score)
    return _build(cfg, edges, data.get(BLOCK), node_scores, source, attn_only)


def _tensor(data: dict[str, Any], key: str, shape: tuple[int, ...], source: str) -> torch.Tensor:
    value = data[key]
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise AcdcError(f"{source}: '{key}' must be a tensor of shape {list(shape)}, got {got}")
    return value.detach().cpu()


def load_torch_dict(raw: bytes, source: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file's bytes: tensors, lists, dicts and plain values only."""
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise AcdcError(
            f"{source}: refused: the .pt file holds objects other than tensors, lists, dicts and plain values "
            "(read with torch.load(weights_only=True); nothing is unpickled)"
        ) from None
    except Exception as error:  # a truncated or foreign file: torch raises RuntimeError, EOFError, ...
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise AcdcError(f"{source}: not a readable torch .pt file ({type(error).__name__}{': ' + first if first else ''})") from None
    if not isinstance(data, dict):
        raise AcdcError(f"{source}: an EAP-IG .pt graph must hold a dict, got {type(data).__name__}")
    return data


def eap_ig_pt_fields(raw: bytes, source: str = "circuit", attn_only: bool | None = None) -> dict[str, Any]:
    """The ``Circuit`` constructor's arguments for an EAP-IG / MIB ``.pt`` graph file's bytes
    (module docstring)."""
    data = load_torch_dict(raw, source)
    missing = [key for key in PT_KEYS if key not in data]
    if missing:
        raise AcdcError(f"{source}: not an EAP-IG .pt graph: missing {', '.join(repr(k) for k in missing)}")
    cfg = _read_cfg(data["cfg"], source)
    n_layers, n_heads = cfg["n_layers"], cfg["n_heads"]
    src, dst = eap_ig_src_nodes(n_layers, n_heads), eap_ig_dst_nodes(n_layers, n_heads)
    for key, expected in (("src_nodes", src), ("dst_nodes", dst)):
        if list(data[key]) != expected:
            raise AcdcError(f"{source}: '{key}' is not EAP-IG's node order for {n_layers} layers of {n_heads} heads")
    shape = (len(src), len(dst))
    in_graph = _tensor(data, "edges_in_graph", shape, source).bool()
    scores = _tensor(data, "edges_scores", shape, source).double()
    block = data.get(BLOCK)
    kept = in_graph
    tested = torch.ones(shape, dtype=torch.bool)
    if isinstance(block, dict) and "edges_kept" in block:
        kept = _tensor(block, "edges_kept", shape, source).bool()
        tested = _tensor(block, "edges_tested", shape, source).bool()
        scores = _tensor(block, "edges_scores", shape, source).double()
    names = eap_ig_edges(n_layers, n_heads)
    rows = torch.tensor([src.index(s) for s, _ in names])
    cols = torch.tensor([dst.index(r) for _, r in names])
    real = torch.zeros(shape, dtype=torch.bool)
    real[rows, cols] = True
    stray = (in_graph | kept) & ~real
    if stray.any():
        i, j = stray.nonzero()[0].tolist()
        raise AcdcError(f"{source}: edges_in_graph marks ({src[i]}, {dst[j]}), which is no edge of EAP-IG's graph")
    _check_neurons(data, in_graph, src, source)
    edges = {
        edge_name(s, r): (bool(g), bool(k), None if not t or math.isnan(v) else v)
        for (s, r), g, k, t, v in zip(
            names, in_graph[rows, cols].tolist(), kept[rows, cols].tolist(), tested[rows, cols].tolist(), scores[rows, cols].tolist()
        )
    }
    node_scores = {}
    if data.get("nodes_scores") is not None:
        values = _tensor(data, "nodes_scores", (len(src),), source).double().tolist()
        node_scores = {name: None if math.isnan(v) else v for name, v in zip(src, values)}
    return _build(cfg, edges, block, node_scores, source, attn_only)


def _check_neurons(data: dict[str, Any], in_graph: torch.Tensor, src: list[str], source: str) -> None:
    """Refuse a neuron-level circuit: a sender with edges in the circuit but some neurons out."""
    neurons = data.get("neurons_in_graph")
    if neurons is None:
        return
    if not isinstance(neurons, torch.Tensor) or neurons.ndim != 2 or neurons.shape[0] != len(src):
        raise AcdcError(f"{source}: 'neurons_in_graph' must be a tensor [n_src_nodes, d_model]")
    partial = in_graph.any(dim=1) & ~neurons.bool().all(dim=1)
    if partial.any():
        i = int(partial.nonzero()[0])
        raise AcdcError(
            f"{source}: a neuron-level circuit (node '{src[i]}' has {int(neurons[i].bool().sum())} of "
            f"{neurons.shape[1]} neurons in the graph); this engine's circuits are edge-level"
        )


def is_torch_file(path: str | Path, raw: bytes) -> bool:
    """Whether a file is a torch ``.pt`` file (by its suffix or its zip header), not JSON."""
    return Path(path).suffix == ".pt" or raw[:4] == ZIP_MAGIC


def is_eap_ig_json(data: Any) -> bool:
    """Whether parsed JSON is shaped as an EAP-IG / MIB graph (it has EAP-IG's ``cfg``)."""
    return isinstance(data, dict) and "cfg" in data


def any_circuit_fields(path: str | Path, raw: bytes, attn_only: bool | None = None) -> dict[str, Any]:
    """The ``Circuit`` constructor's arguments for a circuit file's bytes in any format read here:
    an EAP-IG / MIB ``.pt`` file, EAP-IG / MIB JSON (it has ``cfg``), or this engine's JSON."""
    if is_torch_file(path, raw):
        return eap_ig_pt_fields(raw, source=str(path), attn_only=attn_only)
    data = parse_json(raw, source=str(path))
    if is_eap_ig_json(data):
        return eap_ig_fields(data, source=str(path), attn_only=attn_only)
    return circuit_fields(data, source=str(path))


def circuit_from_eap_ig(data: Any, source: str = "circuit", attn_only: bool | None = None) -> Circuit:
    """The circuit of a parsed EAP-IG / MIB graph JSON (``eap_ig_fields``)."""
    return Circuit(**eap_ig_fields(data, source, attn_only))


def circuit_from_eap_ig_pt(raw: bytes, source: str = "circuit", attn_only: bool | None = None) -> Circuit:
    """The circuit of an EAP-IG / MIB ``.pt`` graph file's bytes (``eap_ig_pt_fields``)."""
    return Circuit(**eap_ig_pt_fields(raw, source, attn_only))
