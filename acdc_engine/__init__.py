"""acdc-engine: automated circuit discovery (exact ACDC, EAP, EAP-IG) in transformers.

    import acdc_engine
    circuit = acdc_engine.discover("toy-induction-2l", "induction", threshold=0.05)
    acdc_engine.save_circuit(circuit, "circuit.json"); circuit  # draws inline in Jupyter

``import acdc_engine`` imports neither torch nor the engine: each name below is imported on first
use (module ``__getattr__``), so light commands (``acdc-summary``, ``--help``) start fast. In an
IPython shell (IPython already imported), the import registers the inline display of a Circuit
(``acdc_engine.viewer.notebook``), which imports the engine.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from acdc_engine.core.errors import AcdcError

if TYPE_CHECKING:
    from acdc_engine.api import discover
    from acdc_engine.core.circuit import Circuit
    from acdc_engine.core.graph import Graph, build_graph
    from acdc_engine.core.task_data import TaskData
    from acdc_engine.formats.circuit_file import save_circuit
    from acdc_engine.formats.reader import load_circuit

_LAZY = {
    "discover": "acdc_engine.api",
    "Circuit": "acdc_engine.core.circuit",
    "Graph": "acdc_engine.core.graph",
    "build_graph": "acdc_engine.core.graph",
    "TaskData": "acdc_engine.core.task_data",
    "save_circuit": "acdc_engine.formats.circuit_file",
    "load_circuit": "acdc_engine.formats.reader",
}
"""Public name -> the module that defines it, imported when the name is first read."""

__all__ = ["AcdcError", "Circuit", "Graph", "TaskData", "build_graph", "discover", "load_circuit", "save_circuit"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'acdc_engine' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if "IPython" in sys.modules:  # a notebook or IPython shell: show Circuits inline
    from acdc_engine.viewer.notebook import register_notebook_display

    register_notebook_display()
