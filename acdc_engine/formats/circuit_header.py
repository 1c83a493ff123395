"""What a table of runs needs from a circuit file, read without building the circuit (no torch).

``read_circuit_header(path)`` returns the names, threshold, edge counts, metric and seconds of one of
this engine's circuit files, or None when the file is not one in the form ``save_circuit`` writes
(every edge listed, each with a boolean ``in_graph``): the caller then reads it with ``load_circuit``,
which validates every field and reads the other formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.shape import GraphShape, edge_count
from acdc_engine.formats.strict_json import parse_json

FORMAT = "acdc-engine/circuit"
VERSION = 1


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
    shape = GraphShape(
        model["n_layers"], model["n_heads"], not model["attn_only"],
        model.get("split_input") is True, model.get("parallel_attn_mlp") is True,
    )
    decisions = [entry.get("in_graph") if isinstance(entry, dict) else None for entry in edges.values()]
    if len(decisions) != edge_count(shape) or not all(_is(d, bool) for d in decisions):
        return None
    task, method, metric, run = sections
    return CircuitHeader(model, task, method, threshold, sum(decisions), len(decisions), metric, run)
