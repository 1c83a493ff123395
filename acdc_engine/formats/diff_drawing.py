"""Graphviz drawing of two circuits compared: shared, only-A and only-B nodes and edges in distinct
colours (and line styles), with one legend.

What differs is decided by the comparison (``acdc_engine.evaluation.overlap``): ``Comparison.diff``
gives a ``Diff``, the nodes and edges of both circuits at one level with each circuit's count;
this module only draws it. At role level every node and edge is labelled with both counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import graphviz

from acdc_engine.core.nodes import NodeKind
from acdc_engine.formats.drawing import LABEL_LIMIT, NODE_STYLE, graph_attributes

STATUS_COLOURS = {"shared": "#4d4d4d", "only_a": "#d95f02", "only_b": "#1b9e77"}
STATUS_FILLS = {"shared": "#e6e6e6", "only_a": "#fdd0a2", "only_b": "#c2e8dc"}
STATUS_STYLES = {"shared": "solid", "only_a": "dashed", "only_b": "dashed"}


def status_of(count_a: int, count_b: int) -> str:
    """``shared``, ``only_a`` or ``only_b``: where a node or edge with these counts is."""
    return "shared" if count_a and count_b else "only_a" if count_a else "only_b"


@dataclass(frozen=True)
class DiffNode:
    """A node drawn: a node name or a role slot, its kind (its ``NODE_STYLE``), its vertical rank
    (input lowest, logits ``inf``) and how many of it each circuit has."""

    name: str
    kind: NodeKind
    rank: float
    count_a: int
    count_b: int


@dataclass(frozen=True)
class DiffEdge:
    """An edge drawn from ``sender`` to the node ``receiver``, entering its input ``inputs`` (q, k,
    v or ''); ``name`` is the edge as the comparison names it (the tooltip)."""

    name: str
    sender: str
    receiver: str
    inputs: str
    count_a: int
    count_b: int


@dataclass(frozen=True)
class Diff:
    """Circuit A against circuit B at one level (``name`` or ``role``): their labels, where each
    came from, and the nodes and edges either has."""

    level: str
    labels: tuple[str, str]
    sources: tuple[str, str]
    nodes: list[DiffNode]
    edges: list[DiffEdge]


class Diffable(Protocol):
    """What ``diff_dot`` draws from: ``acdc_engine.evaluation.overlap.Comparison``."""

    def diff(self, i: int = 0, j: int = 1, level: str | None = None) -> Diff: ...


def diff_dot(comparison: Diffable, i: int = 0, j: int = 1, level: str | None = None) -> str:
    """Graphviz source of circuit i against circuit j of a comparison; ``level``: the finest level
    that applies by default."""
    return diff_to_dot(comparison.diff(i, j, level))


def diff_to_dot(diff: Diff) -> str:
    """Graphviz source of a ``Diff`` (module docstring)."""
    dot = graphviz.Digraph("diff", graph_attr=graph_attributes(len(diff.edges)))
    dot.attr("node", style="filled,rounded", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6", fontname="Helvetica", fontsize="9")
    _draw_nodes(dot, diff)
    _draw_edges(dot, diff)
    _draw_legend(dot, diff)
    return dot.source


def _draw_nodes(dot: graphviz.Digraph, diff: Diff) -> None:
    """One subgraph per rank: the input's at the bottom, the logits' at the top."""
    label_a, label_b = diff.labels
    ranks: dict[float, list[DiffNode]] = {}
    for node in diff.nodes:
        ranks.setdefault(node.rank, []).append(node)
    for n, (rank, members) in enumerate(sorted(ranks.items(), key=lambda item: item[0])):
        with dot.subgraph(name=f"rank_{n}") as sub:
            sub.attr(rank="min" if rank < 0 else "max" if rank == float("inf") else "same")
            for node in sorted(members, key=lambda member: member.name):
                status = status_of(node.count_a, node.count_b)
                text = node.name if diff.level == "name" else f"{node.name}\\n{label_a} {node.count_a} · {label_b} {node.count_b}"
                style = {**NODE_STYLE[node.kind], "fillcolor": STATUS_FILLS[status]}
                sub.node(node.name, text, color=STATUS_COLOURS[status], penwidth="1.5", **style)


def _draw_edges(dot: graphviz.Digraph, diff: Diff) -> None:
    """Each edge in its status's colour and line style; labelled (the input entered, and at role
    level both counts) up to ``LABEL_LIMIT`` edges, the labels being most of a large layout's cost."""
    labelled = len(diff.edges) <= LABEL_LIMIT
    for edge in diff.edges:
        status = status_of(edge.count_a, edge.count_b)
        label = edge.inputs if diff.level == "name" else f"{edge.inputs} {edge.count_a}|{edge.count_b}".strip()
        labels = {"label": label, "fontcolor": STATUS_COLOURS[status]} if labelled and label else {}
        dot.edge(edge.sender, edge.receiver, color=STATUS_COLOURS[status], style=STATUS_STYLES[status], tooltip=edge.name, **labels)


def _draw_legend(dot: graphviz.Digraph, diff: Diff) -> None:
    (label_a, label_b), (source_a, source_b) = diff.labels, diff.sources
    with dot.subgraph(name="cluster_legend") as legend:
        legend.attr(label=f"{diff.level} level", fontsize="10", color="#cccccc")
        rows = "".join(
            f'<TR><TD><FONT COLOR="{STATUS_COLOURS[key]}">&#9472;&#9472;</FONT></TD><TD ALIGN="LEFT">{text}</TD></TR>'
            for key, text in (
                ("shared", f"in {label_a} and {label_b}"),
                ("only_a", f"only in {label_a}: {_escape(source_a)}"),
                ("only_b", f"only in {label_b}: {_escape(source_b)}"),
            )
        )
        legend.node("legend", f'<<TABLE BORDER="0" CELLSPACING="0">{rows}</TABLE>>', shape="plaintext", style="")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

