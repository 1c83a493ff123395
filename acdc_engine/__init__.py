"""acdc-engine: automated circuit discovery (exact ACDC) in transformers.

    import acdc_engine
    circuit = acdc_engine.discover("toy-induction-2l", "induction", threshold=0.05)
    circuit.save("circuit.json"); circuit  # draws inline in Jupyter
"""

from acdc_engine.api import discover
from acdc_engine.circuit import Circuit
from acdc_engine.errors import AcdcError
from acdc_engine.graph import Graph, build_graph
from acdc_engine.circuit import load_circuit
from acdc_engine.tasks import TaskData

__all__ = ["AcdcError", "Circuit", "Graph", "TaskData", "build_graph", "discover", "load_circuit"]
