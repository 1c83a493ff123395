"""Circuits in Jupyter: the drawing shown inline, registered with IPython's display formatters.

A ``Circuit`` is data and knows no format; ``register_notebook_display`` tells a running IPython
shell to show each Circuit as its SVG drawing (``acdc_engine.formats.drawing.circuit_svg``).
``import acdc_engine`` calls it when IPython is already running, so a notebook needs no setup.
"""

from __future__ import annotations

from typing import Any

from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.drawing import circuit_svg

DISPLAYS = {"image/svg+xml": circuit_svg}
"""MIME type -> the function that renders a Circuit in it (None: this representation is not available)."""


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
