"""The circuit file format: JSON close to the EAP-IG / MIB layout, written atomically, read with validation.

    {"format": "acdc-engine/circuit", "version": 1,
     "model": {"name", "n_layers", "n_heads", "attn_only", "split_input", "parallel_attn_mlp", ...}, "task": {...},
     "method": {"name", "ablation", ...}, "threshold": float | null,
     "metric": {"name", "full", "circuit", "empty"},
     "nodes": {name: {"in_graph": bool}},
     "edges": {name: {"in_graph": bool, "kept": bool, "score": float | null}},
     "head_inputs": {name: {"in_graph": bool, "kept": bool, "score": float | null}},
     "run": {"seed", "versions", "seconds", "forward_passes", ...}}

``kept`` is ACDC's raw decision, ``in_graph`` the emitted circuit (kept and on an input-to-logits
path), ``score`` the metric change measured when the candidate was tested (null: not tested).
Reading accepts files without ``kept``, ``score``, ``nodes`` or ``head_inputs`` (as MIB files are);
unknown fields are kept and written back. This module knows the format, not the ``Circuit`` class:
it writes any object with a Circuit's fields and reads a file into the Circuit constructor's
arguments (``acdc_engine.core.circuit.load_circuit`` builds the Circuit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.formats.circuit_header import FORMAT, VERSION
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph, GraphShape, build_graph
from acdc_engine.core.shape import edge_count
from acdc_engine.core.nodes import LOGITS, edge_name
from acdc_engine.core.pruning import emitted_nodes, on_input_to_logits_paths


KNOWN_FIELDS = {"format", "version", "model", "task", "method", "threshold", "metric", "nodes", "edges", "head_inputs", "run"}
# A file whose model shape implies more edges than this, but which does not list them all, is
# rejected before the graph is built: its dense masks would take memory the file never paid for.
LARGEST_UNLISTED_GRAPH = 1_000_000


def _score(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def circuit_to_dict(circuit: Circuit) -> dict[str, Any]:
    """The file's JSON object for ``circuit`` (module docstring)."""
    g = circuit.graph
    nodes_in = set(circuit.nodes())
    # read the masks into Python lists once, not a tensor index per edge (slow on large graphs)
    senders, receivers = g.edge_exists.T.nonzero().T.flip(0)  # the order of g.edges()
    edge_columns = zip(
        circuit.in_graph.edges.bool()[senders, receivers].tolist(),
        circuit.kept.edges.bool()[senders, receivers].tolist(),
        circuit.scores.edges.double()[senders, receivers].tolist(),
    )
    edges = {
        name: {"in_graph": in_graph, "kept": kept, "score": _score(score)}
        for name, (in_graph, kept, score) in zip(g.edge_names(), edge_columns)
    }
    head_columns = zip(  # head_input_names() is in mask order: layer, head, q/k/v
        circuit.in_graph.head_inputs.bool().reshape(-1).tolist(),
        circuit.kept.head_inputs.bool().reshape(-1).tolist(),
        circuit.scores.head_inputs.double().reshape(-1).tolist(),
    )
    head_inputs = {
        name: {"in_graph": in_graph, "kept": kept, "score": _score(score)}
        for name, (in_graph, kept, score) in zip(g.head_input_names(), head_columns)
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": circuit.model,
        "task": circuit.task,
        "method": circuit.method,
        "threshold": circuit.threshold,
        "metric": circuit.metric,
        "nodes": {name: {"in_graph": name in nodes_in} for name in g.senders + [LOGITS]},
        "edges": edges,
        "head_inputs": head_inputs,
        "run": circuit.run,
        **circuit.extra,
    }


def circuit_to_json(circuit: Circuit, indent: int | None = 1) -> str:
    return json.dumps(circuit_to_dict(circuit), indent=indent, allow_nan=False)


def save_circuit(circuit: Circuit, path: str | Path) -> Path:
    return atomic_write_bytes(path, (circuit_to_json(circuit) + "\n").encode())


def read_circuit_bytes(path: str | Path) -> bytes:
    """A circuit file's bytes; AcdcError naming the file when it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AcdcError(f"cannot read circuit file {path}: {error.strerror}") from None
    except ValueError as error:  # a path no file system accepts, e.g. with a NUL byte
        raise AcdcError(f"cannot read circuit file {str(path)!r}: {error}") from None
    return raw


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if key not in data:
        if required:
            raise AcdcError(f"{where}: missing field '{key}'")
        return None
    value = data[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _is_finite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise AcdcError(f"{where}: field '{key}' must be {name}, got {value!r:.80}")
    return value


def _is_finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer beyond the float range
        return False


def _decisions(section: Any, names: list[str], parse, shape, where: str, required: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Read {name: {"in_graph", "kept"?, "score"?}} into (in_graph, kept, scores) tensors."""
    if section is None:
        if required:
            raise AcdcError(f"{where}: missing")
        return None
    if not isinstance(section, dict):
        raise AcdcError(f"{where}: must be an object mapping names to decisions")
    indices, in_graph_values, kept_values, score_values = [], [], [], []
    for name, entry in section.items():
        try:
            indices.append(parse(name))
        except AcdcError as error:
            raise AcdcError(f"{where}: {error}") from None
        here = f"{where}['{name}']"
        if not isinstance(entry, dict):
            raise AcdcError(f"{here}: must be an object with 'in_graph'")
        in_graph_value = _field(entry, "in_graph", bool, here)
        kept_value = _field(entry, "kept", bool, here, required=False)
        if kept_value is False and in_graph_value:
            raise AcdcError(f"{here}: 'in_graph' is true but 'kept' is false; the emitted circuit is part of what was kept")
        in_graph_values.append(in_graph_value)
        kept_values.append(in_graph_value if kept_value is None else kept_value)
        score_values.append(math.nan if entry.get("score") is None else float(_field(entry, "score", float, here)))
    missing = [name for name in names if name not in section]
    if missing:
        raise AcdcError(f"{where}: {len(missing)} entries missing, e.g. '{missing[0]}'")
    in_graph = torch.zeros(shape, dtype=torch.bool)
    kept = torch.zeros(shape, dtype=torch.bool)
    scores = torch.full(shape, math.nan, dtype=torch.float64)
    if indices:
        index = tuple(torch.tensor(indices).T)
        in_graph[index] = torch.tensor(in_graph_values)
        kept[index] = torch.tensor(kept_values)
        scores[index] = torch.tensor(score_values, dtype=torch.float64)
    return in_graph, kept, scores


def circuit_fields(data: Any, source: str = "circuit") -> dict[str, Any]:
    """Validate a parsed circuit file and return the Circuit constructor's arguments; AcdcError
    names the bad field."""
    _check_header(data, source)
    graph = _read_graph(data, source)
    kept, in_graph, scores = _read_decisions(data, graph, source)
    nodes = _read_nodes(data, graph, source)
    metric = _field(data, "metric", dict, source, required=False) or {}
    for key in ("full", "circuit", "empty"):
        if metric.get(key) is not None:
            _field(metric, key, float, f"{source}: metric")
    threshold = data.get("threshold")
    if threshold is not None:
        _field(data, "threshold", float, source)
    emitted = set(emitted_nodes(graph, in_graph.edges))
    for name, entry in nodes.items():
        if entry["in_graph"] != (name in emitted):
            raise AcdcError(f"{source}: nodes['{name}'].in_graph disagrees with the edges in the file")
    return dict(
        graph=graph,
        kept=kept,
        in_graph=in_graph,
        scores=scores,
        metric=metric,
        threshold=threshold,
        model=data["model"],
        task=data.get("task") or {},
        method=data.get("method") or {},
        run=data.get("run") or {},
        extra={k: v for k, v in data.items() if k not in KNOWN_FIELDS},
    )


def _check_header(data: Any, source: str) -> None:
    """A JSON object of this format and version, whose task, method and run are objects or absent."""
    if not isinstance(data, dict):
        raise AcdcError(f"{source}: a circuit file must hold a JSON object")
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        raise AcdcError(f"{source}: field 'format' is {fmt!r:.80}, expected {FORMAT!r}")
    version = data.get("version", VERSION)
    if type(version) is not int or version != VERSION:
        raise AcdcError(f"{source}: field 'version' is {version!r:.80}; this engine reads version {VERSION}")
    for key in ("task", "method", "run"):
        if data.get(key) is not None:
            _field(data, key, dict, source)


def _read_graph(data: dict[str, Any], source: str) -> Graph:
    """The graph of the file's model; refused before it is built when the model is large and the
    file does not list its edges (``LARGEST_UNLISTED_GRAPH``)."""
    model = _field(data, "model", dict, source)
    where = f"{source}: model"
    shape = GraphShape(
        n_layers=_field(model, "n_layers", int, where),
        n_heads=_field(model, "n_heads", int, where),
        has_mlp=not _field(model, "attn_only", bool, where),
        split_input=bool(_field(model, "split_input", bool, where, required=False)),
        parallel_attn_mlp=bool(_field(model, "parallel_attn_mlp", bool, where, required=False)),
    )
    if shape.n_layers < 1 or shape.n_heads < 1:
        raise AcdcError(f"{where}: n_layers and n_heads must be positive")
    listed = data.get("edges")
    expected = edge_count(shape)
    if isinstance(listed, dict) and len(listed) != expected and expected > LARGEST_UNLISTED_GRAPH:
        raise AcdcError(
            f"{source}: edges: the model (n_layers {shape.n_layers}, n_heads {shape.n_heads}) has "
            f"{expected} edges, the file lists {len(listed)}"
        )
    graph = build_graph(shape, split_input=shape.split_input)
    if shape.parallel_attn_mlp and not shape.has_mlp:
        raise AcdcError(f"{where}: parallel_attn_mlp is true but attn_only is true too")
    return graph


def _read_decisions(data: dict[str, Any], graph: Graph, source: str) -> tuple[CircuitMask, CircuitMask, Scores]:
    """(kept, in_graph, scores) from the file's edges and head inputs. Without head inputs (a MIB
    file) every head input is kept and in the circuit where edges reach its receiver."""
    shape = graph.shape
    edge_index = {edge_name(s, r): (graph.sender_index[s], graph.receiver_index[r]) for s, r in graph.edges()}

    def parse_edge(name: str) -> tuple[int, int]:
        return edge_index[name] if name in edge_index else graph.parse_edge(name)  # the latter names the problem

    edges = _decisions(data.get("edges"), list(edge_index), parse_edge, graph.edge_exists.shape, f"{source}: edges", True)
    edge_in_graph, edge_kept, edge_scores = edges
    heads = _decisions(
        data.get("head_inputs"), graph.head_input_names(), graph.parse_head_input,
        (shape.n_layers, shape.n_heads, 3), f"{source}: head_inputs", False,
    )
    if heads is None:  # MIB-style file: q/k/v receivers are reached by edges alone
        head_kept = graph.full_head_input_mask()
        head_in_graph = on_input_to_logits_paths(graph, CircuitMask(edge_in_graph, head_kept)).head_inputs
        head_scores = torch.full(head_kept.shape, math.nan, dtype=torch.float64)
    else:
        head_in_graph, head_kept, head_scores = heads
    return CircuitMask(edge_kept, head_kept), CircuitMask(edge_in_graph, head_in_graph), Scores(edge_scores, head_scores)


def _read_nodes(data: dict[str, Any], graph: Graph, source: str) -> dict[str, Any]:
    """The file's nodes ({name: {"in_graph": bool}}, optional), each a sender of the graph or logits."""
    nodes = _field(data, "nodes", dict, source, required=False) or {}
    for name, entry in nodes.items():
        if name not in graph.senders and name != LOGITS:
            raise AcdcError(f"{source}: nodes: unknown node '{name}'")
        if not isinstance(entry, dict):
            raise AcdcError(f"{source}: nodes['{name}']: must be an object with 'in_graph'")
        _field(entry, "in_graph", bool, f"{source}: nodes['{name}']")
    return nodes


def circuit_from_dict(data: Any, source: str = "circuit") -> Circuit:
    """Validate a parsed circuit file and build the Circuit; AcdcError names the bad field."""
    return Circuit(**circuit_fields(data, source))
