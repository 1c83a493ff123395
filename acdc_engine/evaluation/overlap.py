"""Comparing circuits: node and edge overlap, and metrics side by side.

Two levels of comparison:

``name``: circuits over graphs of one shape (same layers, heads, MLPs, input split) compare node by
node and edge by edge by name (``a0.h3``, ``a0.h3->a1.h2<k>``). A node is in a circuit when it has
an in-graph edge (``Circuit.nodes()``: the input, heads, MLPs, logits).

``role``: circuits over any graphs compare by what each component is and how deep it sits. Each
component maps to a slot:
    ``embed``      the input sender(s) (``input``, or ``tok_embed`` and ``pos_embed``: one slot, one unit)
    ``heads@b``    the attention heads of layer L
    ``mlp@b``      the MLP of layer L
    ``logits``
where the depth bin b = floor(L * n / n_L) places layer L of an n_L-layer model among n bins, n the
smallest layer count among the circuits compared (equal layer counts: b = L; 2 vs 4 layers: layers
0-1 of the deeper model are bin 0, layers 2-3 bin 1). A circuit is a multiset of slots: how many of
its components sit in each. Its edges map to role edges ``heads@0->heads@1<k>`` (sender slot, receiver
slot, and the input they enter: q, k or v for heads), counted as distinct (sender, receiver) pairs
with the input senders as one unit. Head indices carry no meaning across independently trained
models, so the role level is the one to read for, e.g., induction circuits of different seeds; for
circuits of one shape it is reported beside the name level.

Overlap of multisets A and B (sets are multisets with counts of 1): shared = sum of the smaller
counts, Jaccard = shared / sum of the larger counts, and with A as the reference, precision of B =
shared / |B|, recall of B = shared / |A|. A ratio with nothing to divide by is None.

Metrics are read from the files (``metric``: name, full, circuit, empty) and normalised faithfulness
f = (circuit - empty) / (full - empty) is computed from them.

``Comparison.diff`` gives what a diff drawing of two of the circuits shows (the nodes and edges of
either, placed, with each circuit's count); ``acdc_engine.formats.diff_drawing`` draws it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.nodes import LOGITS, NodeKind, edge_name, parse_node, split_edge
from acdc_engine.formats.diff_drawing import Diff, DiffEdge, DiffNode
from acdc_engine.formats.tables import markdown_table, number

LEVELS = ("name", "role")


# ----- keys: what a circuit is made of, at each level ------------------------------------------


EMBED = "embed"  # the role slot (and role-level unit) of the input senders
_ROLE_PREFIXES = {NodeKind.HEAD: "heads", NodeKind.MLP: "mlp"}  # node kind -> the prefix of its role slots
_ROLE_KINDS = {prefix: kind for kind, prefix in _ROLE_PREFIXES.items()}  # role slot prefix -> the node kind it holds


def role_of(component: str, n_layers: int, n_bins: int) -> str:
    """The role slot of a component (module docstring): ``embed``, ``heads@b``, ``mlp@b``, ``logits``."""
    if component == EMBED:
        return EMBED
    node = parse_node(component)
    if node.kind is NodeKind.LOGITS:
        return LOGITS
    if node.is_input:
        return EMBED
    return f"{_ROLE_PREFIXES[node.kind]}@{node.layer * n_bins // n_layers}"


def _unit(component: str) -> str:
    """Components as counted at role level: the input senders are one unit."""
    return EMBED if parse_node(component).is_input else component


def _role_receiver(slot: str, inputs: str) -> str:
    """A role edge's receiver: the slot, and for heads the input it enters (``heads@1<k>``)."""
    return f"{slot}<{inputs}>" if inputs else slot


def _receiver_parts(receiver: str, level: str) -> tuple[str, str]:
    """(the node drawn, the input entered: q, k, v or '') of a name-level or role-level receiver."""
    if level == "name":
        node = parse_node(receiver)
        return node.component, node.qkv or ""
    slot, _, inputs = receiver.partition("<")
    return slot, inputs.removesuffix(">")


def placement(node: str, level: str) -> tuple[NodeKind, float]:
    """(kind, as drawn: the input senders are all ``NodeKind.INPUT``; vertical rank) of a name-level
    node or a role slot: input at the bottom, layer L's heads at 2L and its MLP at 2L + 1, logits at
    the top."""
    if level == "name":
        parsed = parse_node(node)
        kind, depth = (NodeKind.INPUT if parsed.is_input else parsed.kind), parsed.layer
    elif node in (EMBED, LOGITS):
        kind, depth = (NodeKind.INPUT if node == EMBED else NodeKind.LOGITS), None
    else:
        prefix, _, depth_text = node.partition("@")
        kind, depth = _ROLE_KINDS[prefix], int(depth_text)
    if kind is NodeKind.INPUT:
        return kind, -1
    if kind is NodeKind.LOGITS:
        return kind, float("inf")
    return kind, 2 * depth + (1 if kind is NodeKind.MLP else 0)


def node_keys(circuit: Circuit, level: str = "name", n_bins: int | None = None) -> Counter:
    """The circuit's nodes as a multiset: names, or role slots (``n_bins`` depth bins)."""
    nodes = circuit.nodes()
    if level == "name":
        return Counter(nodes)
    n_layers = circuit.graph.shape.n_layers
    units = {_unit(node) for node in nodes}
    return Counter(role_of(unit, n_layers, n_bins or n_layers) for unit in units)


def edge_keys(circuit: Circuit, level: str = "name", n_bins: int | None = None) -> Counter:
    """The circuit's edges as a multiset: names, or role edges (``n_bins`` depth bins)."""
    edges = circuit.edges()
    if level == "name":
        return Counter(edges)
    n_layers = circuit.graph.shape.n_layers
    pairs = set()
    for edge in edges:
        sender, receiver = split_edge(edge)
        pairs.add((_unit(sender), receiver))
    keys = Counter()
    for sender, receiver in pairs:
        into = parse_node(receiver)
        slot = role_of(into.component, n_layers, n_bins or n_layers)
        keys[edge_name(role_of(sender, n_layers, n_bins or n_layers), _role_receiver(slot, into.qkv or ""))] += 1
    return keys


# ----- overlap ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    """Overlap of multisets A (the reference) and B: sizes, shared count, and the ratios (or None)."""

    size_a: int
    size_b: int
    shared: int
    union: int

    @property
    def jaccard(self) -> float | None:
        return self.shared / self.union if self.union else None

    @property
    def precision(self) -> float | None:
        """Of B against A: the share of B's items that A has."""
        return self.shared / self.size_b if self.size_b else None

    @property
    def recall(self) -> float | None:
        """Of B against A: the share of A's items that B has."""
        return self.shared / self.size_a if self.size_a else None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.size_a, "b": self.size_b, "shared": self.shared, "jaccard": self.jaccard,
                "precision": self.precision, "recall": self.recall}


def overlap(a: Counter, b: Counter) -> Overlap:
    """Multiset overlap of a and b (module docstring)."""
    keys = set(a) | set(b)
    return Overlap(
        size_a=sum(a.values()),
        size_b=sum(b.values()),
        shared=sum(min(a[k], b[k]) for k in keys),
        union=sum(max(a[k], b[k]) for k in keys),
    )


def same_shape(circuits: Sequence[Circuit]) -> bool:
    """True when every circuit's graph has the first one's shape: name-level comparison applies."""
    return all(c.graph.shape == circuits[0].graph.shape for c in circuits)


def depth_bins(circuits: Sequence[Circuit]) -> int:
    """The depth bins of role-level comparison: the smallest layer count among the circuits."""
    return min(c.graph.shape.n_layers for c in circuits)


@dataclass
class Comparison:
    """Circuits compared pairwise.

    labels: "A", "B", ... in the order given; sources: where each came from (file paths);
    levels: the levels compared (``name`` only when every graph has one shape, and ``role``);
    n_bins: role level's depth bins; overlaps[(i, j)][level] = {"nodes": Overlap, "edges": Overlap}
    for every pair i < j, circuit i the reference.
    """

    circuits: list[Circuit]
    labels: list[str]
    sources: list[str]
    levels: list[str]
    n_bins: int
    overlaps: dict[tuple[int, int], dict[str, dict[str, Overlap]]] = field(default_factory=dict)

    def metrics_table(self) -> str:
        """Markdown: each circuit's model, task, method, size and metric values side by side."""
        header = ["", "file", "model", "task", "method", "threshold", "edges", "metric", "circuit", "full", "empty", "faithfulness"]
        rows = []
        for label, source, c in zip(self.labels, self.sources, self.circuits):
            s = c.graph.shape
            model = f"{c.model.get('name', '?')} ({s.n_layers}L×{s.n_heads}H{', MLP' if s.has_mlp else ''})"
            m = c.metric
            rows.append([
                label, source, model, str(c.task.get("name", "–")), str(c.method.get("name", "–")),
                number(c.threshold, ".6g"), f"{c.n_edges} / {c.n_edges_total}", str(m.get("name", "–")),
                number(m.get("circuit"), ".6g"), number(m.get("full"), ".6g"), number(m.get("empty"), ".6g"),
                number(faithfulness_from_file(c)),
            ])
        return markdown_table(header, rows)

    def overlap_table(self) -> str:
        """Markdown: for each pair, level and kind, sizes, shared, Jaccard, precision and recall."""
        header = ["A", "B", "level", "of", "in A", "in B", "shared", "Jaccard", "precision of B", "recall of B"]
        rows = []
        for (i, j), by_level in self.overlaps.items():
            for level, kinds in by_level.items():
                for kind, o in kinds.items():
                    rows.append([
                        self.labels[i], self.labels[j], level, kind, str(o.size_a), str(o.size_b), str(o.shared),
                        number(o.jaccard), number(o.precision), number(o.recall),
                    ])
        return markdown_table(header, rows)

    def report(self) -> str:
        """The whole comparison as Markdown."""
        mapping = (
            "Precision of B: the share of B's nodes (edges) that A has; recall of B: the share of A's that B has. "
            f"Role level: components by role and depth, {self.n_bins} depth bins "
            "(layer L of an n-layer model is in bin floor(L * bins / n)); see acdc_engine/evaluation/overlap.py."
        )
        return "\n\n".join(["## Circuits", self.metrics_table(), "## Overlap", self.overlap_table(), mapping])

    def to_dict(self) -> dict[str, Any]:
        return {
            "circuits": [
                {"label": label, "source": source, "model": c.model.get("name"), "task": c.task.get("name"),
                 "method": c.method.get("name"), "threshold": c.threshold, "edges": c.n_edges,
                 "edges_total": c.n_edges_total, "metric": c.metric, "faithfulness": faithfulness_from_file(c)}
                for label, source, c in zip(self.labels, self.sources, self.circuits)
            ],
            "levels": self.levels,
            "depth_bins": self.n_bins,
            "pairs": [
                {"a": self.labels[i], "b": self.labels[j],
                 **{level: {kind: o.to_dict() for kind, o in kinds.items()} for level, kinds in by_level.items()}}
                for (i, j), by_level in self.overlaps.items()
            ],
        }

    def diff(self, i: int = 0, j: int = 1, level: str | None = None) -> Diff:
        """Circuit i against circuit j, as a diff drawing shows them: every node and edge either
        has, placed, with each one's count. ``level``: the finest level that applies by default."""
        level = level or self.levels[0]
        if level not in self.levels:
            raise AcdcError(f"level '{level}' does not apply to these circuits; choose one of {', '.join(self.levels)}")
        a, b = self.circuits[i], self.circuits[j]
        nodes_a, nodes_b = node_keys(a, level, self.n_bins), node_keys(b, level, self.n_bins)
        edges_a, edges_b = edge_keys(a, level, self.n_bins), edge_keys(b, level, self.n_bins)
        nodes = [DiffNode(node, *placement(node, level), nodes_a[node], nodes_b[node]) for node in sorted(set(nodes_a) | set(nodes_b))]
        edges = []
        for edge in sorted(set(edges_a) | set(edges_b)):
            sender, receiver = split_edge(edge)
            drawn, inputs = _receiver_parts(receiver, level)
            edges.append(DiffEdge(edge, sender, drawn, inputs, edges_a[edge], edges_b[edge]))
        return Diff(level, (self.labels[i], self.labels[j]), (self.sources[i], self.sources[j]), nodes, edges)


def faithfulness_from_file(circuit: Circuit) -> float | None:
    """(circuit - empty) / (full - empty) from the file's metric values; None if any is missing."""
    m = circuit.metric
    from acdc_engine.evaluation.faithfulness import normalised_faithfulness

    if any(m.get(k) is None for k in ("circuit", "full", "empty")) or m["full"] == m["empty"]:
        return None
    return normalised_faithfulness(m["circuit"], m["full"], m["empty"])


def load_circuit_or_reference(spec: str | Path) -> Circuit:
    """A circuit file, or a circuit shipped with the package (``acdc_engine.reference_circuits``) by name."""
    from acdc_engine.formats.reader import load_circuit
    from acdc_engine.reference_circuits import reference_circuit, reference_circuit_names

    path = Path(spec)
    if path.is_file():
        return load_circuit(path)
    if str(spec) in reference_circuit_names():
        return reference_circuit(str(spec))
    shipped = ", ".join(reference_circuit_names()) or "none"
    raise AcdcError(f"no circuit file '{spec}' (nor a shipped circuit of that name; shipped: {shipped})")


def compare_circuits(circuits: Sequence[Circuit], sources: Sequence[str] | None = None) -> Comparison:
    """Compare two or more circuits pairwise at every level that applies (module docstring)."""
    circuits = list(circuits)
    if len(circuits) < 2:
        raise AcdcError(f"comparing needs at least two circuits, got {len(circuits)}")
    labels = [chr(ord("A") + i) if i < 26 else f"C{i}" for i in range(len(circuits))]
    sources = list(sources) if sources is not None else labels
    levels = ["name", "role"] if same_shape(circuits) else ["role"]
    n_bins = depth_bins(circuits)
    comparison = Comparison(circuits, labels, sources, levels, n_bins)
    keys = {
        level: [(node_keys(c, level, n_bins), edge_keys(c, level, n_bins)) for c in circuits] for level in levels
    }
    for i, j in combinations(range(len(circuits)), 2):
        comparison.overlaps[(i, j)] = {
            level: {"nodes": overlap(keys[level][i][0], keys[level][j][0]), "edges": overlap(keys[level][i][1], keys[level][j][1])}
            for level in levels
        }
    return comparison
