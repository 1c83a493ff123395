"""The viewer page: one self-contained HTML file (stylesheet, script and data inline; nothing is
fetched), for a circuit (``circuit.html``) or a diff of two circuits; ``notebook_html`` puts the same
page inline in Jupyter."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc_engine.viewer.assets import CSS, JS
from acdc_engine.viewer.data import circuit_title, circuit_view, diff_view

if TYPE_CHECKING:
    from acdc_engine.core.circuit import Circuit
    from acdc_engine.evaluation.overlap import Comparison

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<div class="sub">{subtitle}</div>
<div class="controls">
<label title="hide edges whose |value| is below the slider's">filter <input id="slider" type="range" min="0" max="0" value="0" step="1"> <span id="slider-text"></span></label>
<label>node <input id="search" type="search" placeholder="e.g. a9.h6 or m" autocomplete="off"> <span id="search-count"></span></label>
<span><button id="zoom-out" title="zoom out">&minus;</button> <button id="zoom-in" title="zoom in">+</button> <button id="fit">fit</button></span>
<span title="pin nodes from their panel (click a node)">pinned: <b id="pin-count">0</b> <label><input id="only-pinned" type="checkbox"> only pinned</label> <button id="export" title="download the pinned nodes and the drawn edges between them">download JSON</button> <button id="clear-pins">clear</button></span>
<span class="sub">drag to pan, wheel to zoom, hover for details, click a node for its edges</span>
</div>
<div class="legend" id="legend"></div>
{note}
</header>
<main>
<div id="stage">
<svg id="canvas" xmlns="http://www.w3.org/2000/svg"><g id="viewport"><g id="edges"></g><g id="nodes"></g></g></svg>
<div id="tip"></div>
</div>
<aside id="panel" hidden></aside>
</main>
<script type="application/json" id="view">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def page(view: dict[str, Any]) -> str:
    """The HTML page of a view (``acdc_engine.viewer.data``)."""
    data = json.dumps(view, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")  # no '</script>' inside
    note = f'<div class="note">{html.escape(view["note"])}</div>' if view.get("note") else ""
    return TEMPLATE.format(
        title=html.escape(view["title"]), subtitle=html.escape(view["subtitle"]), note=note, css=CSS, js=JS, data=data
    )


def circuit_html(
    circuit: "Circuit", title: str | None = None, source: str | Path | None = None, attention: dict[str, Any] | None = None
) -> str:
    """The interactive page of one circuit (``circuit_view``'s arguments)."""
    return page(circuit_view(circuit, title, source, attention))


def notebook_html(circuit: "Circuit", height: int = 640) -> str:
    """The circuit's page for Jupyter (``Circuit._repr_html_``): an iframe holding the whole page in
    ``srcdoc``, so that any number of views coexist in one notebook (each has its own document: no
    shared element ids or script state) and the page's no-network policy still applies."""
    return (
        f'<iframe srcdoc="{html.escape(circuit_html(circuit), quote=True)}" title="{html.escape(circuit_title(circuit))}" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #ddd" sandbox="allow-scripts allow-downloads"></iframe>'
    )


def diff_html(comparison: "Comparison", i: int = 0, j: int = 1, level: str | None = None) -> str:
    """The interactive diff page of circuits i and j of a comparison."""
    return page(diff_view(comparison, i, j, level))


def write_circuit_html(
    circuit: "Circuit", path: str | Path, title: str | None = None, source: str | Path | None = None,
    attention: dict[str, Any] | None = None,
) -> Path:
    """Write ``circuit_html`` to ``path`` (atomically); returns the path."""
    from acdc_engine.formats.atomic_files import atomic_write_bytes

    return atomic_write_bytes(path, circuit_html(circuit, title, source, attention).encode())


def write_diff_html(comparison: "Comparison", path: str | Path, i: int = 0, j: int = 1, level: str | None = None) -> Path:
    """Write ``diff_html`` to ``path`` (atomically); returns the path."""
    from acdc_engine.formats.atomic_files import atomic_write_bytes

    return atomic_write_bytes(path, diff_html(comparison, i, j, level).encode())
