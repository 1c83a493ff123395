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

import hashlib
import json
import math
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from acdc_engine.circuit import Circuit, on_input_to_logits_paths
from acdc_engine.errors import AcdcError
from acdc_engine.graph import GraphShape, build_graph
from acdc_engine.strict_json import parse_json

FORMAT = "acdc-engine/circuit"
VERSION = 1
KNOWN_FIELDS = {"format", "version", "model", "task", "method", "threshold", "metric", "nodes", "edges", "head_inputs", "run"}
# A file whose model shape implies more edges than this, but which does not list them all, is
# rejected before the graph is built: its dense masks would take memory the file never paid for.
LARGEST_UNLISTED_GRAPH = 1_000_000


def edge_count(shape: GraphShape) -> int:
    """The number of edges of ``build_graph(shape)``, in closed form (cheap for any shape).

    Every receiver reads every sender that writes strictly before it: layer l's head receivers
    (3 per head) read the I input senders and the H heads (+ MLP) of each earlier layer; layer l's
    MLP also reads layer l's heads; the logits read every sender.
    """
    inputs = 2 if shape.split_input else 1
    mlp = 1 if shape.has_mlp else 0
    layers, heads = shape.n_layers, shape.n_heads
    per_layer = heads + mlp  # senders each layer adds
    earlier = layers * inputs + per_layer * layers * (layers - 1) // 2  # summed over l of senders before layer l
    return (3 * heads + mlp) * earlier + mlp * layers * heads + inputs + layers * per_layer


def _score(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def circuit_to_dict(circuit: Circuit) -> dict[str, Any]:
    g = circuit.graph
    nodes_in = set(circuit.nodes())
    # read the masks into Python lists once: indexing a tensor per edge costs microseconds each
    senders, receivers = g.edge_exists.T.nonzero().T.flip(0)  # the order of g.edges()
    edge_columns = zip(
        circuit.edge_in_graph.bool()[senders, receivers].tolist(),
        circuit.edge_kept.bool()[senders, receivers].tolist(),
        circuit.edge_scores.double()[senders, receivers].tolist(),
    )
    edges = {
        name: {"in_graph": in_graph, "kept": kept, "score": _score(score)}
        for name, (in_graph, kept, score) in zip(g.edge_names(), edge_columns)
    }
    head_columns = zip(  # head_input_names() is in mask order: layer, head, q/k/v
        circuit.head_input_in_graph.bool().reshape(-1).tolist(),
        circuit.head_input_kept.bool().reshape(-1).tolist(),
        circuit.head_input_scores.double().reshape(-1).tolist(),
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
        "nodes": {name: {"in_graph": name in nodes_in} for name in g.senders + ["logits"]},
        "edges": edges,
        "head_inputs": head_inputs,
        "run": circuit.run,
        **circuit.extra,
    }


def circuit_to_json(circuit: Circuit, indent: int | None = 1) -> str:
    return json.dumps(circuit_to_dict(circuit), indent=indent, allow_nan=False)


# A temporary file of atomic_write_bytes: .<name>.<host>-<pid>.<random>.tmp (host: a digest of the
# machine's name, so that a folder shared between machines never has a live writer's file removed).
_TEMP_NAME = re.compile(r"\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp")


def _host_tag() -> str:
    return hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()


def _process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (alive, a zombie, or another user's)."""
    try:
        os.kill(pid, 0)  # signal 0: only the existence and permission checks
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):  # not a pid this system can have
        return False
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that ``atomic_write_bytes`` left in ``folder`` when its writer died
    mid-write (killed, or out of power): those made on this machine by a process that no longer
    exists. Another machine's, or a live writer's, are kept. Returns the paths removed."""
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder (yet), or one we cannot list: nothing of ours to remove
        return removed
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and match["host"] == host and not _process_exists(int(match["pid"])) and entry.is_file(follow_symlinks=False):
            try:
                Path(entry.path).unlink(missing_ok=True)
            except OSError:  # another user's, say: cleaning up is best effort and never fails a write
                continue
            removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place. The temporary
    file's name says whose it is (``_TEMP_NAME``), and every write first removes the stale ones of
    writers that died in the same folder (``remove_stale_temporaries``), so a run or resumed run
    that writes into a run folder clears what a killed one left there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    prefix = f".{path.name}.{_host_tag()}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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
    """Read and validate a circuit file (this engine's JSON, or an EAP-IG / MIB graph file, JSON or
    ``.pt``: ``acdc_engine.interchange``); AcdcError naming the file and field if it is malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AcdcError(f"cannot read circuit file {path}: {error.strerror}") from None
    except ValueError as error:  # a path no file system accepts, e.g. with a NUL byte
        raise AcdcError(f"cannot read circuit file {str(path)!r}: {error}") from None
    from acdc_engine import interchange  # EAP-IG / MIB graph files (.pt, or JSON with EAP-IG's 'cfg')

    if interchange.is_torch_file(path, raw):
        return interchange.circuit_from_eap_ig_pt(raw, source=str(path))
    data = parse_json(raw, source=str(path))
    if interchange.is_eap_ig_json(data):
        return interchange.circuit_from_eap_ig(data, source=str(path))
    return circuit_from_dict(data, source=str(path))


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


def circuit_from_dict(data: Any, source: str = "circuit") -> Circuit:
    """Validate a parsed circuit file and build the Circuit; AcdcError names the bad field."""
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
    listed = data.get("edges")
    expected = edge_count(shape)
    if isinstance(listed, dict) and len(listed) != expected and expected > LARGEST_UNLISTED_GRAPH:
        raise AcdcError(
            f"{source}: edges: the model (n_layers {shape.n_layers}, n_heads {shape.n_heads}) has "
            f"{expected} edges, the file lists {len(listed)}"
        )
    graph = build_graph(shape, split_input=shape.split_input)
    edge_index = {f"{s}->{r}": (graph.sender_index[s], graph.receiver_index[r]) for s, r in graph.edges()}

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
        head_in_graph = on_input_to_logits_paths(graph, edge_in_graph, head_kept)[1]
        head_scores = torch.full(head_kept.shape, math.nan, dtype=torch.float64)
    else:
        head_in_graph, head_kept, head_scores = heads
    nodes = _field(data, "nodes", dict, source, required=False) or {}
    for name, entry in nodes.items():
        if name not in graph.senders and name != "logits":
            raise AcdcError(f"{source}: nodes: unknown node '{name}'")
        if not isinstance(entry, dict):
            raise AcdcError(f"{source}: nodes['{name}']: must be an object with 'in_graph'")
        _field(entry, "in_graph", bool, f"{source}: nodes['{name}']")
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
