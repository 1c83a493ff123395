"""Graphviz drawings of circuits: ranked by layer, input at the bottom, logits at the top.

Edges into a head's query, key and value inputs are drawn in distinct colours (legend above the drawing),
edges into MLPs and logits in grey; an edge's width grows with its effect size |score|. Only the
emitted circuit is drawn, so nodes off every input-to-logits path never appear.

Rendering uses Graphviz's ``dot`` when it is installed, else the ``graphviz-pure`` renderer (the
``draw`` extra: ``pip install 'acdc-engine[draw]'``), each looked for on ``PATH`` and next to the
running interpreter (a virtual environment's ``bin/``, activated or not); with neither, only the
``.dot`` source is written, with one warning line.

Drawings that scale (layout time grows steeply with the number of edges, and edge labels are most
of it):
  * above ``LABEL_LIMIT`` edges the q/k/v edge labels are left out (the colours and the legend
    still say which input an edge enters);
  * above ``FAST_LAYOUT`` edges crossing minimisation makes fewer passes (``mclimit``);
  * above ``PNG_LIMIT`` edges no PNG is written (it would be tens of megapixels): the SVG and the
    interactive ``circuit.html`` show it;
  * above ``RENDER_LIMIT`` edges nothing is rendered, only the ``.dot`` source is written.
Each limit that applies is said in one line (``notes``, or a ``DrawingNote`` warning).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import graphviz

from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.nodes import LOGITS, NodeKind, parse_node, split_edge

EDGE_COLOURS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728", "other": "#7f7f7f"}
LABEL_LIMIT = 100  # edges: above, no q/k/v edge labels
FAST_LAYOUT = 500  # edges: above, fewer crossing-minimisation passes
PNG_LIMIT = 400  # edges: above, no PNG
RENDER_LIMIT = 2500  # edges: above, the .dot source only
PNG_DPI = 180  # PNGs at a resolution fit for slides (Graphviz's default is 96)
FONT = "Helvetica"  # every text of a drawing: nodes, edge labels, legend (SVG: "Helvetica,sans-Serif")
LEGEND_PLACE = {"labelloc": "t", "labeljust": "r"}  # the legend (the graph's label): above the drawing, at the right
NODE_STYLE = {  # by the kind of a node drawn; the input senders are all drawn as NodeKind.INPUT
    NodeKind.INPUT: {"shape": "box", "fillcolor": "#fff2cc"},
    NodeKind.HEAD: {"shape": "ellipse", "fillcolor": "#dae8fc"},
    NodeKind.MLP: {"shape": "box", "fillcolor": "#e1d5e7"},
    NodeKind.LOGITS: {"shape": "box", "fillcolor": "#d5e8d4"},
}


def node_style(node: str) -> dict[str, str]:
    """The drawing style of a component (``NODE_STYLE`` by its kind; the input senders share one)."""
    parsed = parse_node(node)
    return NODE_STYLE[NodeKind.INPUT if parsed.is_input else parsed.kind]


class DrawingNote(UserWarning):
    """A drawing limit applied (module docstring)."""


def legend_label(title: str, rows: list[tuple[str, str]]) -> str:
    """A colour legend (``rows``: (colour, text)) as an HTML-like graph label: Graphviz puts a
    graph's label outside the drawing (with ``LEGEND_PLACE``: above it, at the right), so the legend
    never sits among the nodes."""
    lines = "".join(
        f'<TR><TD><FONT COLOR="{colour}">&#9472;&#9472;</FONT></TD><TD ALIGN="LEFT">{text}</TD></TR>' for colour, text in rows
    )
    return f'<<TABLE BORDER="1" COLOR="#cccccc" CELLBORDER="0" CELLSPACING="0"><TR><TD COLSPAN="2">{title}</TD></TR>{lines}</TABLE>>'


def graph_attributes(n_edges: int) -> dict[str, str]:
    """The drawing's graph attributes: ranked bottom to top, one sans-serif font (``FONT``) for the
    graph's own texts, fewer layout passes when large."""
    attributes = {"rankdir": "BT", "ranksep": "0.6", "nodesep": "0.25", "fontname": FONT, "fontsize": "10"}
    if n_edges > FAST_LAYOUT:
        attributes["mclimit"] = "0.1"
    return attributes


def circuit_to_dot(circuit: Circuit) -> str:
    """Graphviz source for the emitted circuit (q/k/v edge labels up to ``LABEL_LIMIT`` edges)."""
    g = circuit.graph
    labelled = circuit.n_edges <= LABEL_LIMIT
    dot = graphviz.Digraph("circuit", graph_attr=graph_attributes(circuit.n_edges))
    keys = (("q", "query"), ("k", "key"), ("v", "value"), ("other", "MLP / logits"))
    dot.attr(label=legend_label("edge into", [(EDGE_COLOURS[key], text) for key, text in keys]), **LEGEND_PLACE)
    dot.attr("node", style="filled,rounded", fontname=FONT, fontsize="11")
    dot.attr("edge", arrowsize="0.6", fontname=FONT)
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

    scores = circuit.scores.edges[circuit.in_graph.edges].abs()
    scores = scores[~scores.isnan()]
    largest = float(scores.max()) if len(scores) else 0.0
    for name in circuit.edges():
        sender, receiver = split_edge(name)
        score = float(circuit.scores.edges[g.parse_edge(name)])
        width = 1.0 if math.isnan(score) or largest == 0 else 1.0 + 4.0 * abs(score) / largest
        into = parse_node(receiver)
        qkv = into.qkv or "other"
        label = into.qkv if into.qkv and labelled else ""
        tooltip = f"{name}  score={score:.4g}" if not math.isnan(score) else f"{name}  (not tested)"
        labels = {"label": label, "fontcolor": EDGE_COLOURS[qkv], "fontsize": "9"} if label else {}
        dot.edge(sender, into.component, color=EDGE_COLOURS[qkv], penwidth=f"{width:.2f}", tooltip=tooltip, **labels)

    return dot.source


def find_renderer() -> list[str] | None:
    """The command that lays out dot source: Graphviz's ``dot``, else ``graphviz-pure``, each on
    ``PATH`` or next to the running interpreter; None if neither is found."""
    beside = str(Path(sys.executable).parent)
    for program in ("dot", "graphviz-pure"):
        path = shutil.which(program) or shutil.which(program, path=beside)
        if path:
            return [path]
    return None


def render(dot_source: str, fmt: str) -> bytes | None:
    """Render dot source to ``fmt`` ("svg", or "png" at ``PNG_DPI``); None, with one warning, if no
    renderer exists."""
    command = find_renderer()
    if command is None:
        warnings.warn(
            "no Graphviz renderer found (install Graphviz's 'dot', or pip install 'acdc-engine[draw]'): "
            "wrote circuit.dot only, no SVG/PNG",
            stacklevel=2,
        )
        return None
    resolution = [f"-Gdpi={PNG_DPI}"] if fmt == "png" else []
    result = subprocess.run(command + [f"-T{fmt}", *resolution], input=dot_source.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed to render the drawing: {result.stderr.decode(errors='replace')[:500]}")
    return result.stdout


def render_svg(dot_source: str) -> str | None:
    """SVG of dot source; None when no renderer exists or the drawing is above ``RENDER_LIMIT`` edges."""
    if dot_source.count(" -> ") > RENDER_LIMIT:
        return None
    svg = render(dot_source, "svg")
    return None if svg is None else svg.decode()


def circuit_svg(circuit: Circuit) -> str | None:
    """The drawing as SVG text (what a notebook shows), or None without a renderer."""
    return render_svg(circuit_to_dot(circuit))


def write_drawings(circuit: Circuit, directory: str | Path, stem: str = "circuit", notes: list[str] | None = None) -> list[Path]:
    """Write ``{stem}.dot`` always and ``.svg`` / ``.png`` when a renderer exists and the limits
    allow (module docstring); returns the paths. ``notes``: where the limits applied are said."""
    return write_dot_files(circuit_to_dot(circuit), directory, stem, notes)


def formats_for(n_edges: int) -> tuple[list[str], str | None]:
    """The formats rendered for a drawing of ``n_edges`` edges, and the one line saying why not all."""
    if n_edges > RENDER_LIMIT:
        return [], f"{n_edges} edges > {RENDER_LIMIT}: no SVG/PNG rendered (layout would take minutes); open the .dot or the .html"
    if n_edges > PNG_LIMIT:
        return ["svg"], f"{n_edges} edges > {PNG_LIMIT}: no PNG written (too large to read); the SVG and the .html show it"
    return ["svg", "png"], None


def write_dot_files(source: str, directory: str | Path, stem: str, notes: list[str] | None = None) -> list[Path]:
    """Write dot ``source`` as ``{stem}.dot``, and ``.svg`` / ``.png`` when a renderer exists and the
    limits allow; returns the paths. A limit that applied is appended to ``notes`` as one line (or,
    with ``notes`` None, warned as a ``DrawingNote``)."""
    directory = Path(directory)
    written = [atomic_write_bytes(directory / f"{stem}.dot", source.encode())]
    formats, note = formats_for(source.count(" -> "))
    if note is not None:
        note = f"{stem}: {note}"
        if notes is None:
            warnings.warn(note, DrawingNote, stacklevel=2)
        else:
            notes.append(note)
    if not formats:
        return written
    command = find_renderer()
    if command is None:
        render(source, "svg")  # emits the one warning
        return written
    for fmt in formats:
        data = render(source, fmt)
        written.append(atomic_write_bytes(directory / f"{stem}.{fmt}", data))
    return written
