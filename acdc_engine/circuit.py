"""A discovered circuit: a method's raw decisions, the emitted circuit, its scores and metrics.

The emitted circuit (``in_graph``) is the part of the raw result (``kept``) that lies on a path from
the input to ``logits`` (``acdc_engine.pruning``). ``metric["circuit"]`` is always measured on
exactly the emitted circuit. The file format is ``acdc_engine.io``'s; ``load_circuit`` and
``circuit_from_dict`` read it back into a Circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from acdc_engine.draw import circuit_to_dot, render_svg
from acdc_engine.graph import Graph
from acdc_engine.io import circuit_fields, circuit_to_dict, circuit_to_json, read_circuit_bytes, save_circuit
from acdc_engine.nodes import edge_name
from acdc_engine.pruning import emitted_nodes, on_input_to_logits_paths


@dataclass
class Circuit:
    """A circuit over ``graph``; masks are bool (True = in), scores float64 (NaN = not tested).

    edge_kept / head_input_kept: the method's raw decisions, [S, R] / [L, H, 3].
    edge_in_graph / head_input_in_graph: the emitted circuit (kept and on an input-to-logits path).
    metric: {"name", "full", "circuit", "empty"} (lower is better).
    model, task, method, run: descriptive dicts written to the circuit file; extra: unknown fields
    read from a file, kept so that they are written back.
    """

    graph: Graph
    edge_kept: Tensor
    head_input_kept: Tensor
    edge_in_graph: Tensor
    head_input_in_graph: Tensor
    edge_scores: Tensor
    head_input_scores: Tensor
    metric: dict[str, Any]
    threshold: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unscored(cls, graph: Graph, edge_kept: Tensor, head_input_kept: Tensor, **fields: Any) -> Circuit:
        """A circuit given by its masks alone (a ground truth, a published circuit): its emitted
        part is computed, its scores are NaN, ``metric`` is {} unless given; ``fields`` are the
        constructor's descriptive ones (metric, model, task, method, extra, ...)."""
        edge_in_graph, head_input_in_graph = on_input_to_logits_paths(graph, edge_kept, head_input_kept)
        fields.setdefault("metric", {})
        return cls(
            graph=graph,
            edge_kept=edge_kept,
            head_input_kept=head_input_kept,
            edge_in_graph=edge_in_graph,
            head_input_in_graph=head_input_in_graph,
            edge_scores=torch.full(edge_kept.shape, math.nan, dtype=torch.float64),
            head_input_scores=torch.full(head_input_kept.shape, math.nan, dtype=torch.float64),
            **fields,
        )

    @property
    def n_edges(self) -> int:
        """Edges of the emitted circuit."""
        return int(self.edge_in_graph.sum())

    @property
    def n_edges_total(self) -> int:
        return self.graph.n_edges

    def edges(self) -> list[str]:
        """Names of the emitted circuit's edges, receivers in forward order."""
        g = self.graph
        return [edge_name(s, r) for s, r in g.edges() if self.edge_in_graph[g.sender_index[s], g.receiver_index[r]]]

    def nodes(self) -> list[str]:
        """Components (input, heads, MLPs, logits) of the emitted circuit, in forward order."""
        return emitted_nodes(self.graph, self.edge_in_graph)

    def summary(self) -> str:
        m = self.metric or {}
        edges = f"{self.n_edges} / {self.n_edges_total} edges"
        if not all(isinstance(m.get(key), (int, float)) for key in ("circuit", "full", "empty")):
            return f"{edges}; no metric recorded"
        return (
            f"{edges}; {m.get('name', 'metric')}: circuit {m['circuit']:.6g}, "
            f"full model {m['full']:.6g}, empty circuit {m['empty']:.6g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The circuit file's JSON object (``acdc_engine.io``)."""
        return circuit_to_dict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return circuit_to_json(self, indent=indent)

    def to_eap_ig(self, d_model: int | None = None) -> dict[str, Any]:
        """The circuit in EAP-IG's graph JSON layout, which EAP-IG's ``Graph.from_json`` and MIB read
        (``acdc_engine.interchange.eap_ig``; ``d_model``: when the model block lacks it)."""
        from acdc_engine.interchange.eap_ig import circuit_to_eap_ig

        return circuit_to_eap_ig(self, d_model=d_model)

    def save(self, path: str | Path) -> Path:
        """Write the circuit file (atomically: a temporary name, then renamed)."""
        return save_circuit(self, path)

    def to_dot(self) -> str:
        """Graphviz source of the drawing (see ``acdc_engine.draw``)."""
        return circuit_to_dot(self)

    def _repr_svg_(self) -> str | None:
        """Jupyter draws the circuit inline through this."""
        return render_svg(self.to_dot())


def circuit_from_dict(data: Any, source: str = "circuit") -> Circuit:
    """Validate a parsed circuit file and build the Circuit; AcdcError names the bad field."""
    return Circuit(**circuit_fields(data, source))


def load_circuit(path: str | Path, attn_only: bool | None = None) -> Circuit:
    """Read and validate a circuit file: this engine's JSON, or an EAP-IG / MIB graph file (JSON or
    ``.pt``: ``acdc_engine.interchange.eap_ig``; ``attn_only`` decides a model kind such a file
    does not state); AcdcError naming the file and field if it is malformed."""
    from acdc_engine.interchange.eap_ig import any_circuit_fields

    path = Path(path)
    return Circuit(**any_circuit_fields(path, read_circuit_bytes(path), attn_only))
