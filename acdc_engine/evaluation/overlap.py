"""Comparing circuits: node and edge overlap, metrics side by side, and a diff drawing.

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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import graphviz

from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.drawing import LABEL_LIMIT, NODE_STYLE, graph_attributes
from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.tables import markdown_table, number
from acdc_engine.core.nodes import LOGITS, edge_name, parse_node, split_edge

LEVELS = ("name", "role")
STATUS_COLOURS = {"shared": "#4d4d4d", "only_a": "#d95f02", "only_b": "#1b9e77"}
STATUS_FILLS = {"shared": "#e6e6e6", "only_a": "#fdd0a2", "only_b": "#c2e8dc"}
STATUS_STYLES = {"shared": "solid", "only_a": "dashed", "only_b": "dashed"}


# ----- keys: what a circuit is made of, at each level ------------------------------------------


EMBED = "embed"  # the role slot (and role-level unit) of the input senders
_ROLE_KINDS = {"heads": "head", "mlp": "mlp"}  # role slot prefix -> the node kind it holds


def role_of(component: str, n_layers: int, n_bins: int) -> str:
    """The role slot of a component (module docstring): ``embed``, ``heads@b``, ``mlp@b``, ``logits``."""
    if component == EMBED:
        return EMBED
    node = parse_node(component)
    if node.kind == LOGITS:
        return LOGITS
    if node.is_input:
        return EMBED
    kind = "heads" if node.kind == "head" else "mlp"
    return f"{kind}@{node.layer * n_bins // n_layers}"


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


def _placement(node: str, level: str) -> tuple[str, float]:
    """(kind for ``NODE_STYLE``, vertical rank) of a name-level node or a role slot: input at the
    bottom, layer L's heads at 2L and its MLP at 2L + 1, logits at the top."""
    if level == "name":
        parsed = parse_node(node)
        kind, depth = ("input" if parsed.is_input else parsed.kind), parsed.layer
    elif node in (EMBED, LOGITS):
        kind, depth = ("input" if node == EMBED else LOGITS), None
    else:
        prefix, _, depth_text = node.partition("@")
        kind, depth = _ROLE_KINDS[prefix], int(depth_text)
    if kind == "input":
        return kind, -1
    if kind == LOGITS:
        return kind, float("inf")
    return kind, 2 * depth + (1 if kind == "mlp" else 0)


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


# ----- the diff drawing -------------------------------------------------------------------------


def _status(count_a: int, count_b: int) -> str:
    return "shared" if count_a and count_b else "only_a" if count_a else "only_b"


def diff_dot(comparison: Comparison, i: int = 0, j: int = 1, level: str | None = None) -> str:
    """Graphviz source of circuit i against circuit j: shared, only-i and only-j nodes and edges in
    distinct colours (and line styles), with one legend. ``level``: the finest level that applies
    by default; role-level nodes and edges are labelled with each circuit's count."""
    level = level or comparison.levels[0]
    if level not in comparison.levels:
        raise AcdcError(f"level '{level}' does not apply to these circuits; choose one of {', '.join(comparison.levels)}")
    a, b = comparison.circuits[i], comparison.circuits[j]
    label_a, label_b = comparison.labels[i], comparison.labels[j]
    nodes_a, nodes_b = node_keys(a, level, comparison.n_bins), node_keys(b, level, comparison.n_bins)
    edges_a, edges_b = edge_keys(a, level, comparison.n_bins), edge_keys(b, level, comparison.n_bins)

    edges_drawn = sorted(set(edges_a) | set(edges_b))
    labelled = len(edges_drawn) <= LABEL_LIMIT  # edge labels are most of a large layout's cost (acdc_engine.formats.drawing)
    dot = graphviz.Digraph("diff", graph_attr=graph_attributes(len(edges_drawn)))
    dot.attr("node", style="filled,rounded", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6", fontname="Helvetica", fontsize="9")
    ranks: dict[float, list[str]] = {}
    for node in set(nodes_a) | set(nodes_b):
        ranks.setdefault(_placement(node, level)[1], []).append(node)
    for n, (rank, members) in enumerate(sorted(ranks.items())):
        with dot.subgraph(name=f"rank_{n}") as sub:
            sub.attr(rank="min" if rank < 0 else "max" if rank == float("inf") else "same")
            for node in sorted(members):
                status = _status(nodes_a[node], nodes_b[node])
                text = node if level == "name" else f"{node}\\n{label_a} {nodes_a[node]} · {label_b} {nodes_b[node]}"
                style = {**NODE_STYLE[_placement(node, level)[0]], "fillcolor": STATUS_FILLS[status]}
                sub.node(node, text, color=STATUS_COLOURS[status], penwidth="1.5", **style)
    for edge in edges_drawn:
        sender, receiver = split_edge(edge)
        status = _status(edges_a[edge], edges_b[edge])
        drawn, inputs = _receiver_parts(receiver, level)
        label = inputs if level == "name" else f"{inputs} {edges_a[edge]}|{edges_b[edge]}".strip()
        labels = {"label": label, "fontcolor": STATUS_COLOURS[status]} if labelled and label else {}
        dot.edge(sender, drawn, color=STATUS_COLOURS[status], style=STATUS_STYLES[status], tooltip=edge, **labels)
    with dot.subgraph(name="cluster_legend") as legend:
        legend.attr(label=f"{level} level", fontsize="10", color="#cccccc")
        rows = "".join(
            f'<TR><TD><FONT COLOR="{STATUS_COLOURS[key]}">&#9472;&#9472;</FONT></TD><TD ALIGN="LEFT">{text}</TD></TR>'
            for key, text in (
                ("shared", f"in {label_a} and {label_b}"),
                ("only_a", f"only in {label_a}: {_escape(comparison.sources[i])}"),
                ("only_b", f"only in {label_b}: {_escape(comparison.sources[j])}"),
            )
        )
        legend.node("legend", f'<<TABLE BORDER="0" CELLSPACING="0">{rows}</TABLE>>', shape="plaintext", style="")
    return dot.source


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
