"""How the graph and the circuit file scale to 1B-parameter shapes (no weights needed).

    python experiments/large_graph.py

For each shape: the edge count, seconds to build the graph, and for a circuit over it with random
decisions and scores: the circuit file's size and the seconds to write and to load it back.
Prints one JSON line per shape after a line describing the machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine import build_graph
from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.reader import load_circuit
from acdc_engine.formats.circuit_file import save_circuit

SHAPES = {  # name: (layers, query heads, parallel blocks)
    "gpt2": (12, 12, False),
    "pythia-1.4b": (24, 16, True),
    "Llama-3.2-1B": (16, 32, False),
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure(name: str, n_layers: int, n_heads: int, parallel: bool) -> dict:
    start = time.perf_counter()
    graph = build_graph(SimpleNamespace(n_layers=n_layers, n_heads=n_heads, attn_only=False, parallel_attn_mlp=parallel))
    build_seconds = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    kept = graph.edge_exists & (torch.rand(graph.edge_exists.shape, generator=g) < 0.1)
    heads = torch.rand(graph.full_head_input_mask().shape, generator=g) < 0.5
    scores = torch.where(graph.edge_exists, torch.rand(graph.edge_exists.shape, generator=g, dtype=torch.float64), float("nan"))
    circuit = Circuit.unscored(graph, CircuitMask(kept, heads), model={"name": name, "n_layers": n_layers, "n_heads": n_heads, "attn_only": False, "parallel_attn_mlp": parallel}, task={"name": "random"})
    circuit.scores = Scores(scores, circuit.scores.head_inputs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "circuit.json"
        start = time.perf_counter()
        save_circuit(circuit, path)
        write_seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = load_circuit(path)
        load_seconds = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
    assert torch.equal(loaded.kept.edges, circuit.kept.edges)
    return {"shape": name, "layers": n_layers, "heads": n_heads, "parallel": parallel, "edges": graph.n_edges,
            "graph_seconds": round(build_seconds, 3), "file_mb": round(size_mb, 1),
            "write_seconds": round(write_seconds, 2), "load_seconds": round(load_seconds, 2)}


def main() -> None:
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}))
    for name, shape in SHAPES.items():
        print(json.dumps(measure(name, *shape)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
