"""Circuits in Jupyter: the interactive view inline, registered with IPython's display formatters.

A ``Circuit`` is data and knows no format; ``register_notebook_display`` tells a running IPython
shell to show each Circuit as its interactive page (``notebook_html``: an isolated iframe, so two
views coexist) and, where HTML is not shown, as its SVG drawing. ``import acdc_engine`` calls it
when IPython is running, so a notebook needs no setup.
"""

from __future__ import annotations

from typing import Any, Callable

from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.drawing import circuit_svg
from acdc_engine.viewer.page import notebook_html

DISPLAYS: dict[str, Callable[[Circuit], str | None]] = {"text/html": notebook_html, "image/svg+xml": circuit_svg}
"""MIME type -> the function that renders a Circuit in it (None: not available, e.g. no renderer)."""


def register_notebook_display(shell: Any = None) -> bool:
    """Register ``DISPLAYS`` for Circuit with ``shell`` (default: the running IPython shell, if any);
    True when registered."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    for mime, render in DISPLAYS.items():
        shell.display_formatter.formatters[mime].for_type(Circuit, render)
    return True
