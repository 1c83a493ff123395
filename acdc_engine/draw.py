"""Graphviz drawings of circuits: ranked by layer, input at the bottom, logits at the top.

Edges into a head's query, key and value inputs are drawn in distinct colours (legend included),
edges into MLPs and logits in grey; an edge's width grows with its effect size |score|. Only the
emitted circuit is drawn, so nodes off every input-to-logits path never appear.

Rendering uses Graphviz's ``dot`` when it is installed, else the ``graphviz-pure`` renderer that is
installed with this package; with neither, only the ``.dot`` source is written.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import graphviz

from acdc_engine.atomic_files import atomic_write_bytes
from acdc_engine.nodes import LOGITS, parse_node, split_edge

if TYPE_CHECKING:  # for annotations only: the Circuit class is built on this module
    from acdc_engine.circuit import Circuit

EDGE_COLOURS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728", "other": "#7f7f7f"}
NODE_STYLE = {
    "input": {"shape": "box", "fillcolor": "#fff2cc"},
    "head": {"shape": "ellipse", "fillcolor": "#dae8fc"},
    "mlp": {"shape": "box", "fillcolor": "#e1d5e7"},
    "logits": {"shape": "box", "fillcolor": "#d5e8d4"},
}


def node_style(node: str) -> dict[str, str]:
    """The drawing style of a component (``NODE_STYLE`` by its kind; the input senders share one)."""
    parsed = parse_node(node)
    return NODE_STYLE["input" if parsed.is_input else parsed.kind]


def circuit_to_dot(circuit: "Circuit") -> str:
    """Graphviz source for the emitted circuit."""
    g = circuit.graph
    dot = graphviz.Digraph("circuit", graph_attr={"rankdir": "BT", "ranksep": "0.6", "nodesep": "0.25", "fontname": "Helvetica"})
    dot.attr("node", style="filled,rounded", fontname="Helvetica", fontsize="11")
    dot.attr("edge", arrowsize="0.6")
    nodes = circuit.nodes()
    ranks: dict[int, list[str]] = {}
    for node in nodes:
        rank = g.receiver_layer[-1] + 1 if node == LOGITS else g.sender_layer[g.sender_index[node]]
        ranks.setdefault(rank, []).append(node)
    for rank, members in sorted(ranks.items()):
        with dot.subgraph(name=f"rank_{rank}") as sub:
            sub.attr(rank="min" if rank < 0 else "max" if LOGITS in members else "same")
            for node in members:
                sub.node(node, node, **node_style(node))

    scores = circuit.edge_scores[circuit.edge_in_graph].abs()
    scores = scores[~scores.isnan()]
    largest = float(scores.max()) if len(scores) else 0.0
    for name in circuit.edges():
        sender, receiver = split_edge(name)
        score = float(circuit.edge_scores[g.parse_edge(name)])
        width = 1.0 if math.isnan(score) or largest == 0 else 1.0 + 4.0 * abs(score) / largest
        into = parse_node(receiver)
        qkv = into.qkv or "other"
        label = into.qkv or ""
        tooltip = f"{name}  score={score:.4g}" if not math.isnan(score) else f"{name}  (not tested)"
        dot.edge(sender, into.component, color=EDGE_COLOURS[qkv], penwidth=f"{width:.2f}", label=label, fontcolor=EDGE_COLOURS[qkv], fontsize="9", tooltip=tooltip)

    with dot.subgraph(name="cluster_legend") as legend:
        legend.attr(label="edge into", fontsize="10", color="#cccccc")
        rows = "".join(
            f'<TR><TD><FONT COLOR="{EDGE_COLOURS[key]}">&#9472;&#9472;</FONT></TD><TD ALIGN="LEFT">{text}</TD></TR>'
            for key, text in (("q", "query"), ("k", "key"), ("v", "value"), ("other", "MLP / logits"))
        )
        legend.node("legend", f'<<TABLE BORDER="0" CELLSPACING="0">{rows}</TABLE>>', shape="plaintext", style="")
    return dot.source


def find_renderer() -> list[str] | None:
    """The command that lays out dot source: Graphviz's ``dot``, else ``graphviz-pure``, else None."""
    for program in ("dot", "graphviz-pure"):
        path = shutil.which(program)
        if path:
            return [path]
    return None


def render(dot_source: str, fmt: str) -> bytes | None:
    """Render dot source to ``fmt`` ("svg" or "png"); None, with one warning, if no renderer exists."""
    command = find_renderer()
    if command is None:
        warnings.warn(
            "no Graphviz renderer found (install Graphviz's 'dot' or 'pip install graphviz-pure'): "
            "wrote circuit.dot only, no SVG/PNG",
            stacklevel=2,
        )
        return None
    result = subprocess.run(command + [f"-T{fmt}"], input=dot_source.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed to render the circuit: {result.stderr.decode(errors='replace')[:500]}")
    return result.stdout


def render_svg(dot_source: str) -> str | None:
    svg = render(dot_source, "svg")
    return None if svg is None else svg.decode()


def write_drawings(circuit: "Circuit", directory: str | Path, stem: str = "circuit") -> list[Path]:
    """Write ``{stem}.dot`` always and ``.svg`` / ``.png`` when a renderer exists; returns the paths."""
    return write_dot_files(circuit_to_dot(circuit), directory, stem)


def write_dot_files(source: str, directory: str | Path, stem: str) -> list[Path]:
    """Write dot ``source`` as ``{stem}.dot``, and ``.svg`` / ``.png`` when a renderer exists; returns the paths."""
    directory = Path(directory)
    written = [atomic_write_bytes(directory / f"{stem}.dot", source.encode())]
    command = find_renderer()
    if command is None:
        render(source, "svg")  # emits the one warning
        return written
    for fmt in ("svg", "png"):
        data = render(source, fmt)
        written.append(atomic_write_bytes(directory / f"{stem}.{fmt}", data))
    return written
