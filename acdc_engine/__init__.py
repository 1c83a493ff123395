"""acdc-engine: automated circuit discovery (exact ACDC, EAP, EAP-IG) in transformers.

    import acdc_engine
    circuit = acdc_engine.discover("toy-induction-2l", "induction", threshold=0.05)
    acdc_engine.save_circuit(circuit, "circuit.json"); circuit  # draws inline in Jupyter
"""

from acdc_engine.api import discover
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph, build_graph
from acdc_engine.core.task_data import TaskData
from acdc_engine.formats.circuit_file import save_circuit
from acdc_engine.viewer.notebook import register_notebook_display
from acdc_engine.formats.reader import load_circuit

register_notebook_display()

__all__ = ["AcdcError", "Circuit", "Graph", "TaskData", "build_graph", "discover", "load_circuit", "save_circuit"]
