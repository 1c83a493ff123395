"""A discovered circuit: ACDC's raw decisions, the emitted circuit, its scores and metrics.

The emitted circuit (``in_graph``) is the part of the raw result (``kept``) that lies on a path from
the input to ``logits``. A head receiver ``a{L}.h{H}<q>`` reaches its head only through its head
input; an MLP's receiver and sender are one node. ``metric["circuit"]`` is always measured on exactly
the emitted circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from acdc_engine.graph import QKV, Graph, component_of, head_name


def on_input_to_logits_paths(graph: Graph, edge_mask: Tensor, head_input_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The parts of (edge_mask, head_input_mask) on some path from an input sender to ``logits``."""
    g = graph.to_networkx(edge_mask, head_input_mask)
    from_input: set[str] = set()
    for source in graph.input_senders:
        from_input |= nx.descendants(g, source) | {source}
    to_logits = nx.ancestors(g, "logits") | {"logits"}
    senders_ok = torch.tensor([name in from_input for name in graph.senders])
    receivers_ok = torch.tensor([name in to_logits for name in graph.receivers])
    edges = edge_mask & graph.edge_exists & senders_ok[:, None] & receivers_ok[None, :]
    heads = head_input_mask.clone()
    for layer, head, x in head_input_mask.nonzero().tolist():
        receiver = f"{head_name(layer, head)}<{QKV[x]}>"
        heads[layer, head, x] = receiver in from_input and head_name(layer, head) in to_logits
    return edges, heads


@dataclass
class Circuit:
    """A circuit over ``graph``; masks are bool (True = in), scores float64 (NaN = not tested).

    edge_kept / head_input_kept: ACDC's raw decisions, [S, R] / [L, H, 3].
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
        return [f"{s}->{r}" for s, r in g.edges() if self.edge_in_graph[g.sender_index[s], g.receiver_index[r]]]

    def nodes(self) -> list[str]:
        """Components (input, heads, MLPs, logits) of the emitted circuit, in forward order."""
        g = self.graph
        used = set()
        for s, r in self.edge_in_graph.nonzero().tolist():
            used |= {g.senders[s], component_of(g.receivers[r])}
        return [name for name in g.senders + ["logits"] if name in used]

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
        from acdc_engine.io import circuit_to_dict

        return circuit_to_dict(self)

    def to_json(self, indent: int | None = 1) -> str:
        from acdc_engine.io import circuit_to_json

        return circuit_to_json(self, indent=indent)

    def to_eap_ig(self, d_model: int | None = None) -> dict[str, Any]:
        """The circuit in EAP-IG's graph JSON layout, which EAP-IG's ``Graph.from_json`` and MIB read
        (``acdc_engine.interchange.eap_ig``; ``d_model``: when the model block lacks it)."""
        from acdc_engine.interchange import circuit_to_eap_ig

        return circuit_to_eap_ig(self, d_model=d_model)

    def save(self, path: str | Path) -> Path:
        """Write the circuit file (atomically: a temporary name, then renamed)."""
        from acdc_engine.io import save_circuit

        return save_circuit(self, path)

    def to_dot(self) -> str:
        """Graphviz source of the drawing (see ``acdc_engine.draw``)."""
        from acdc_engine.draw import circuit_to_dot

        return circuit_to_dot(self)

    def _repr_svg_(self) -> str | None:
        """Jupyter draws the circuit inline through this."""
        from acdc_engine.draw import render_svg

        return render_svg(self.to_dot())
