"""How the viewer orders nodes within a rank: Graphviz's order when a renderer exists.

A view's rows (ranks) are fixed by layer (``data.place``); what makes a large circuit readable is
the left-to-right order within each row, which decides how many edges cross. ``add_graphviz_x``
lays out the edges shown when the page opens with the renderer the drawings use
(``acdc_engine.formats.drawing.find_renderer``: Graphviz's ``dot`` or ``graphviz-pure``), one rank per row,
and stores each node's x (points) as the last field of its ``view["nodes"]`` row. The page's script
keeps that order in every row whose nodes all have an x, and orders the other rows itself by
barycenter sweeps (no renderer, too many edges, or nodes shown later by ticking a state); in both
cases it then places the nodes compactly (``viewer.assets``): Graphviz's own x, which spreads a
large circuit very wide around its long edges, only orders.
"""

from __future__ import annotations

import subprocess
from typing import Any

from acdc_engine.formats.drawing import find_renderer

LARGEST_LAYOUT = 2500  # edges: above, no Graphviz layout (it takes minutes; the script orders the nodes)


def layout_source(view: dict[str, Any]) -> str | None:
    """Dot source for the edges shown when the page opens: nodes ``n<index>``, one rank per
    view rank (kept in order by an invisible chain of anchors); None when there are none."""
    shown = [k for k, state in enumerate(view["states"]) if state["shown"]]
    edges = sorted({(e[0], e[1]) for e in view["edges"] if e[3] in shown})
    if not edges:
        return None
    nodes = sorted({i for edge in edges for i in edge})
    ranks: dict[int, list[int]] = {}
    for i in nodes:
        ranks.setdefault(view["nodes"][i][2], []).append(i)
    lines = [
        "digraph layout {",
        "rankdir=BT; nodesep=0.2; ranksep=0.5;" + (" mclimit=0.3;" if len(edges) > 500 else ""),
        'node [shape=box, fixedsize=true, height=0.3, fontsize=11, label=""];',
    ]
    for rank, members in sorted(ranks.items()):
        widths = " ".join(f"n{i} [width={(7 * len(view['nodes'][i][0]) + 14) / 72:.2f}];" for i in members)
        lines.append(f"{{ rank=same; r{rank} [style=invis, width=0.01]; {widths} }}")
    ordered = sorted(ranks)
    lines += [f"r{a} -> r{b} [style=invis];" for a, b in zip(ordered, ordered[1:])]
    lines += [f"n{s} -> n{t};" for s, t in edges]
    lines.append("}")
    return "\n".join(lines)


def graphviz_x(source: str) -> dict[int, float] | None:
    """{node index: x in points} from laying out ``layout_source``'s source; None without a renderer
    or when the renderer fails (the script then orders the nodes itself)."""
    command = find_renderer()
    if command is None:
        return None
    result = subprocess.run(command + ["-Tplain"], input=source.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        return None
    placed = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[0] == "node" and fields[1].startswith("n"):
            placed[int(fields[1][1:])] = round(float(fields[2]) * 72, 1)
    return placed


def add_graphviz_x(view: dict[str, Any]) -> None:
    """Set the x of the nodes of the edges shown at first (``view["nodes"][i][5]``) from Graphviz's
    layout, when a renderer exists and they are at most ``LARGEST_LAYOUT`` edges; else leave them null."""
    source = layout_source(view)
    if source is None or source.count(" -> ") > LARGEST_LAYOUT:
        return
    for i, x in (graphviz_x(source) or {}).items():
        view["nodes"][i][5] = x
