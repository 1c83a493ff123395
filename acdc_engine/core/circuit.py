"""A discovered circuit: a method's raw decisions, the emitted circuit, its scores and metrics.

The emitted circuit (``in_graph``) is the part of the raw result (``kept``) that lies on a path from
the input to ``logits`` (``acdc_engine.core.pruning``). ``metric["circuit"]`` is always measured on
exactly the emitted circuit. A Circuit is data only: its file format, its EAP-IG / MIB export and
its drawing live with their formats (``acdc_engine.formats``: ``save_circuit``, ``load_circuit``,
``circuit_to_eap_ig``, ``circuit_to_dot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.nodes import edge_name
from acdc_engine.core.pruning import emitted_nodes, on_input_to_logits_paths


METHOD_NAMES = {
    "acdc": "ACDC", "acdc-eap": "ACDC (EAP-IG skips)", "eap": "EAP", "eap-ig": "EAP-IG",
    "eap-ig-activations": "EAP-IG-activations", "clean-corrupted": "Clean-corrupted", "exact": "Exact",
    "edge-pruning": "Edge pruning", "information-flow-routes": "Information flow routes", "ugs": "UGS",
    "subnetwork-probing": "SP", "acdc-nodes": "ACDC (nodes)", "eap-nodes": "EAP (nodes)", "eap-ig-nodes": "EAP-IG (nodes)",
    "eap-ig-activations-nodes": "EAP-IG-activations (nodes)", "exact-nodes": "Exact (nodes)",
    "eap-neurons": "EAP (neurons)", "eap-ig-neurons": "EAP-IG (neurons)", "eap-ig-activations-neurons": "EAP-IG-activations (neurons)",
}
"""Display names of the registered methods (others are shown by their own name)."""


@dataclass(repr=False)
class Circuit:
    """A circuit over ``graph``; masks are bool (True = in), scores float64 (NaN = not tested).

    kept: the method's raw decisions (``CircuitMask``: edges [S, R], head inputs [L, H, 3]).
    in_graph: the emitted circuit (kept and on an input-to-logits path).
    scores: the method's score of every edge and head input (``Scores``, same layout).
    metric: {"name", "full", "circuit", "empty"} (lower is better).
    model, task, method, run: descriptive dicts written to the circuit file; extra: unknown fields
    read from a file, kept so that they are written back.
    """

    graph: Graph
    kept: CircuitMask
    in_graph: CircuitMask
    scores: Scores
    metric: dict[str, Any]
    threshold: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unscored(cls, graph: Graph, kept: CircuitMask, **fields: Any) -> Circuit:
        """A circuit given by its masks alone (a ground truth, a published circuit): its emitted
        part is computed, its scores are NaN, ``metric`` is {} unless given; ``fields`` are the
        constructor's descriptive ones (metric, model, task, method, extra, ...)."""
        fields.setdefault("metric", {})
        return cls(graph=graph, kept=kept, in_graph=on_input_to_logits_paths(graph, kept), scores=Scores.unscored(kept), **fields)

    @property
    def n_edges(self) -> int:
        """Edges of the emitted circuit."""
        return int(self.in_graph.edges.sum())

    @property
    def n_edges_total(self) -> int:
        return self.graph.n_edges

    def edges(self) -> list[str]:
        """Names of the emitted circuit's edges, receivers in forward order."""
        g = self.graph
        return [edge_name(s, r) for s, r in g.edges() if self.in_graph.edges[g.sender_index[s], g.receiver_index[r]]]

    def nodes(self) -> list[str]:
        """Components (input, heads, MLPs, logits) of the emitted circuit, in forward order."""
        return emitted_nodes(self.graph, self.in_graph.edges)

    def summary(self) -> str:
        m = self.metric or {}
        edges = f"{self.n_edges} / {self.n_edges_total} edges"
        if not all(isinstance(m.get(key), (int, float)) for key in ("circuit", "full", "empty")):
            return f"{edges}; no metric recorded"
        return (
            f"{edges}; {m.get('name', 'metric')}: circuit {m['circuit']:.6g}, "
            f"full model {m['full']:.6g}, empty circuit {m['empty']:.6g}"
        )

    def method_label(self) -> str | None:
        """The method's display name with its cut ("ACDC threshold 0.05", "EAP-IG top 20"), or None
        when the circuit does not name its method."""
        name = self.method.get("name")
        if not name:
            return None
        label = METHOD_NAMES.get(str(name), str(name))
        if self.method.get("top_n") is not None:
            return f"{label} top {self.method['top_n']}"
        if self.method.get("score_threshold") is not None:
            return f"{label} |score| ≥ {self.method['score_threshold']:g}"
        if self.threshold is not None:
            return f"{label} threshold {self.threshold:g}"
        return label

    def __repr__(self) -> str:
        """One line: method, model, task, edges kept / total and the metric, e.g.
        ``<Circuit ACDC threshold 0.05 · toy-induction-2l · induction: 22 / 81 edges · kl 0.314 (full 0, empty 1.87)>``."""
        parts = [self.method_label() or "method not recorded"]
        parts += [str(part) for part in (self.model.get("name"), self.task.get("name")) if part]
        text = f"<Circuit {' · '.join(parts)}: {self.n_edges} / {self.n_edges_total} edges"
        m = self.metric or {}
        if all(isinstance(m.get(key), (int, float)) for key in ("circuit", "full", "empty")):
            text += f" · {m.get('name', 'metric')} {m['circuit']:.3g} (full {m['full']:.3g}, empty {m['empty']:.3g})"
        return text + ">"
