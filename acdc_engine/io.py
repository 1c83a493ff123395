"""The circuit file: JSON close to the EAP-IG / MIB layout, written atomically, read with validation.

    {"format": "acdc-engine/circuit", "version": 1,
     "model": {"name", "n_layers", "n_heads", "attn_only", "split_input", ...}, "task": {...},
     "method": {"name", "ablation", ...}, "threshold": float | null,
     "metric": {"name", "full", "circuit", "empty"},
     "nodes": {name: {"in_graph": bool}},
     "edges": {name: {"in_graph": bool, "kept": bool, "score": float | null}},
     "head_inputs": {name: {"in_graph": bool, "kept": bool, "score": float | null}},
     "run": {"seed", "versions", "seconds", "forward_passes", ...}}

``kept`` is ACDC's raw decision, ``in_graph`` the emitted circuit (kept and on an input-to-logits
path), ``score`` the metric change measured when the candidate was tested (null: not tested).
Reading accepts files without ``kept``, ``score``, ``nodes`` or ``head_inputs`` (as MIB files are);
unknown fields are kept and written back.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from acdc_engine.circuit import Circuit, on_input_to_logits_paths
from acdc_engine.errors import AcdcError
from acdc_engine.graph import GraphShape, build_graph

FORMAT = "acdc-engine/circuit"
VERSION = 1
KNOWN_FIELDS = {"format", "version", "model", "task", "method", "threshold", "metric", "nodes", "edges", "head_inputs", "run"}


def _score(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def circuit_to_dict(circuit: Circuit) -> dict[str, Any]:
    g = circuit.graph
    nodes_in = set(circuit.nodes())
    edges = {}
    for s, r in g.edges():
        i, j = g.sender_index[s], g.receiver_index[r]
        edges[f"{s}->{r}"] = {
            "in_graph": bool(circuit.edge_in_graph[i, j]),
            "kept": bool(circuit.edge_kept[i, j]),
            "score": _score(float(circuit.edge_scores[i, j])),
        }
    head_inputs = {}
    for name in g.head_input_names():
        index = g.parse_head_input(name)
        head_inputs[name] = {
            "in_graph": bool(circuit.head_input_in_graph[index]),
            "kept": bool(circuit.head_input_kept[index]),
            "score": _score(float(circuit.head_input_scores[index])),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": circuit.model,
        "task": circuit.task,
        "method": circuit.method,
        "threshold": circuit.threshold,
        "metric": circuit.metric,
        "nodes": {name: {"in_graph": name in nodes_in} for name in g.senders + ["logits"]},
        "edges": edges,
        "head_inputs": head_inputs,
        "run": circuit.run,
        **circuit.extra,
    }


def circuit_to_json(circuit: Circuit, indent: int | None = 1) -> str:
    return json.dumps(circuit_to_dict(circuit), indent=indent, allow_nan=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_circuit(circuit: Circuit, path: str | Path) -> Path:
    return atomic_write_bytes(path, (circuit_to_json(circuit) + "\n").encode())


def load_circuit(path: str | Path) -> Circuit:
    """Read and validate a circuit file; AcdcError naming the file and field if it is malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise AcdcError(f"cannot read circuit file {path}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise AcdcError(f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    return circuit_from_dict(data, source=str(path))


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if key not in data:
        if required:
            raise AcdcError(f"{where}: missing field '{key}'")
        return None
    value = data[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise AcdcError(f"{where}: field '{key}' must be {name}, got {value!r:.80}")
    return value


def _decisions(section: Any, names: list[str], parse, shape, where: str, required: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Read {name: {"in_graph", "kept"?, "score"?}} into (in_graph, kept, scores) tensors."""
    if section is None:
        if required:
            raise AcdcError(f"{where}: missing")
        return None
    if not isinstance(section, dict):
        raise AcdcError(f"{where}: must be an object mapping names to decisions")
    in_graph = torch.zeros(shape, dtype=torch.bool)
    kept = torch.zeros(shape, dtype=torch.bool)
    scores = torch.full(shape, math.nan, dtype=torch.float64)
    for name, entry in section.items():
        try:
            index = parse(name)
        except AcdcError as error:
            raise AcdcError(f"{where}: {error}") from None
        here = f"{where}['{name}']"
        if not isinstance(entry, dict):
            raise AcdcError(f"{here}: must be an object with 'in_graph'")
        in_graph[index] = _field(entry, "in_graph", bool, here)
        kept_value = _field(entry, "kept", bool, here, required=False)
        kept[index] = in_graph[index] if kept_value is None else kept_value
        if entry.get("score") is not None:
            scores[index] = _field(entry, "score", float, here)
    missing = [name for name in names if name not in section]
    if missing:
        raise AcdcError(f"{where}: {len(missing)} entries missing, e.g. '{missing[0]}'")
    return in_graph, kept, scores


def circuit_from_dict(data: Any, source: str = "circuit") -> Circuit:
    """Validate a parsed circuit file and build the Circuit; AcdcError names the bad field."""
    if not isinstance(data, dict):
        raise AcdcError(f"{source}: a circuit file must hold a JSON object")
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        raise AcdcError(f"{source}: field 'format' is {fmt!r}, expected {FORMAT!r}")
    version = data.get("version", VERSION)
    if version != VERSION:
        raise AcdcError(f"{source}: field 'version' is {version!r}; this engine reads version {VERSION}")
    model = _field(data, "model", dict, source)
    where = f"{source}: model"
    shape = GraphShape(
        n_layers=_field(model, "n_layers", int, where),
        n_heads=_field(model, "n_heads", int, where),
        has_mlp=not _field(model, "attn_only", bool, where),
        split_input=bool(_field(model, "split_input", bool, where, required=False)),
    )
    if shape.n_layers < 1 or shape.n_heads < 1:
        raise AcdcError(f"{where}: n_layers and n_heads must be positive")
    graph = build_graph(shape, split_input=shape.split_input)
    edges = _decisions(data.get("edges"), graph.edge_names(), graph.parse_edge, graph.edge_exists.shape, f"{source}: edges", True)
    edge_in_graph, edge_kept, edge_scores = edges
    heads = _decisions(
        data.get("head_inputs"), graph.head_input_names(), graph.parse_head_input,
        (shape.n_layers, shape.n_heads, 3), f"{source}: head_inputs", False,
    )
    if heads is None:  # MIB-style file: q/k/v receivers are reached by edges alone
        head_kept = graph.full_head_input_mask()
        head_in_graph = on_input_to_logits_paths(graph, edge_in_graph, head_kept)[1]
        head_scores = torch.full(head_kept.shape, math.nan, dtype=torch.float64)
    else:
        head_in_graph, head_kept, head_scores = heads
    nodes = _field(data, "nodes", dict, source, required=False) or {}
    for name, entry in nodes.items():
        if name not in graph.senders and name != "logits":
            raise AcdcError(f"{source}: nodes: unknown node '{name}'")
        _field(entry if isinstance(entry, dict) else {}, "in_graph", bool, f"{source}: nodes['{name}']")
    metric = _field(data, "metric", dict, source, required=False) or {}
    for key in ("full", "circuit", "empty"):
        if metric.get(key) is not None:
            _field(metric, key, float, f"{source}: metric")
    threshold = data.get("threshold")
    if threshold is not None:
        _field(data, "threshold", float, source)
    circuit = Circuit(
        graph=graph,
        edge_kept=edge_kept,
        head_input_kept=head_kept,
        edge_in_graph=edge_in_graph,
        head_input_in_graph=head_in_graph,
        edge_scores=edge_scores,
        head_input_scores=head_scores,
        metric=metric,
        threshold=threshold,
        model=model,
        task=data.get("task") or {},
        method=data.get("method") or {},
        run=data.get("run") or {},
        extra={k: v for k, v in data.items() if k not in KNOWN_FIELDS},
    )
    emitted_nodes = set(circuit.nodes())
    for name, entry in nodes.items():
        if entry["in_graph"] != (name in emitted_nodes):
            raise AcdcError(f"{source}: nodes['{name}'].in_graph disagrees with the edges in the file")
    return circuit
