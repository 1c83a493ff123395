"""What a table of runs needs from a circuit file, read without building the circuit (no torch).

``read_circuit_header(path)`` returns the names, threshold, edge counts, metric and seconds of one of
this engine's circuit files, or None when the file is not one in the form ``save_circuit`` writes
(every edge listed, each with a boolean ``in_graph``): the caller then reads it with ``load_circuit``,
which validates every field and reads the other formats. ``edge_count`` is the graph's edge count in
closed form, shared with ``circuit_file``'s reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.strict_json import parse_json

FORMAT = "acdc-engine/circuit"
VERSION = 1


class ShapeLike(Protocol):
    n_layers: int
    n_heads: int
    has_mlp: bool
    split_input: bool
    parallel_attn_mlp: bool


def edge_count(shape: ShapeLike) -> int:
    """The number of edges of ``build_graph(shape)``, in closed form (cheap for any shape).

    Every receiver reads every sender that writes strictly before it: layer l's head receivers
    (3 per head) read the I input senders and the H heads (+ MLP) of each earlier layer; layer l's
    MLP also reads layer l's heads, except in a parallel block; the logits read every sender.
    """
    inputs = 2 if shape.split_input else 1
    mlp = 1 if shape.has_mlp else 0
    layers, heads = shape.n_layers, shape.n_heads
    per_layer = heads + mlp  # senders each layer adds
    earlier = layers * inputs + per_layer * layers * (layers - 1) // 2  # summed over l of senders before layer l
    same_layer = 0 if shape.parallel_attn_mlp else mlp * layers * heads
    return (3 * heads + mlp) * earlier + same_layer + inputs + layers * per_layer


@dataclass(frozen=True)
class FileShape:
    """A graph's shape as a circuit file's model block states it."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    split_input: bool
    parallel_attn_mlp: bool


@dataclass(frozen=True)
class CircuitHeader:
    """The fields of a circuit file that a table of runs shows (``Circuit``'s of the same names)."""

    model: dict[str, Any]
    task: dict[str, Any]
    method: dict[str, Any]
    threshold: float | None
    n_edges: int
    n_edges_total: int
    metric: dict[str, Any]
    run: dict[str, Any]


def _is(value: Any, kind: type) -> bool:
    return type(value) is kind or (kind is float and type(value) is int)


def read_circuit_header(path: str | Path) -> CircuitHeader | None:
    """The header of this engine's circuit file at ``path``; None when the file is not in the form
    ``save_circuit`` writes (module docstring). AcdcError when it cannot be read or is not JSON."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AcdcError(f"cannot read circuit file {path}: {error.strerror}") from None
    data = parse_json(raw, source=str(path))
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        return None
    model, edges = data.get("model"), data.get("edges")
    sections = [data.get(key) or {} for key in ("task", "method", "metric", "run")]
    if not isinstance(model, dict) or not isinstance(edges, dict) or not all(isinstance(s, dict) for s in sections):
        return None
    if not (_is(model.get("n_layers"), int) and _is(model.get("n_heads"), int) and _is(model.get("attn_only"), bool)):
        return None
    threshold = data.get("threshold")
    if threshold is not None and not _is(threshold, float):
        return None
    shape = FileShape(
        model["n_layers"], model["n_heads"], not model["attn_only"],
        model.get("split_input") is True, model.get("parallel_attn_mlp") is True,
    )
    decisions = [entry.get("in_graph") if isinstance(entry, dict) else None for entry in edges.values()]
    if len(decisions) != edge_count(shape) or not all(_is(d, bool) for d in decisions):
        return None
    task, method, metric, run = sections
    return CircuitHeader(model, task, method, threshold, sum(decisions), len(decisions), metric, run)
