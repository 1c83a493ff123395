"""Regenerate the tracr files shipped in the package: compiled weights and reference circuits.

    python experiments/tracr_ground_truth.py

For every program in ``acdc_engine.tracr.PROGRAMS`` (needs tracr-pypi):
  acdc_engine/tracr/compiled/<name>.safetensors          compiled with tracr, converted, checked
                                                         against tracr on every input (the package
                                                         cache, see acdc_engine/tracr/cache.py)
  acdc_engine/reference_circuits/<name>.json             the structural ground truth, derived from the
                                                         weights (acdc_engine/tracr/ground_truth.py)
and for the ACDC paper's two tracr tasks:
  acdc_engine/reference_circuits/<name>-acdc-paper.json  the canonical circuit the reference
                                                         implementation publishes, in this engine's names

Every file's ``metric`` block is measured on the task's default data under zero ablation with the l2
metric: ``full`` (0 by definition), ``circuit`` (the file's circuit) and ``empty``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.graph import build_graph
from acdc_engine.measure.metrics import make_metric
from acdc_engine.patching import EdgePatcher
from acdc_engine.reference_circuits import FOLDER as REFERENCE_FOLDER
from acdc_engine.tasks import make_task
from acdc_engine.tracr import PROGRAMS, structural_circuit
from acdc_engine.tracr.ground_truth import describe_model
from acdc_engine.tracr.cache import SHIPPED_DIR, cache_key, write_compiled
from acdc_engine.tracr.compiler import compile_program
from acdc_engine.formats.circuit_file import save_circuit

REFERENCE_SOURCE = (
    "ArthurConmy/Automatic-Circuit-Discovery, acdc/tracr_task/utils.py, {function}(): the edges ACDC found "
    "with the l2 metric, zero ablation and threshold epsilon (the reference's commit e612e50), in this engine's "
    "names: hook_embed -> tok_embed, hook_pos_embed -> pos_embed, blocks.L.hook_q_input -> aL.h0<q> (k, v "
    "alike), blocks.L.hook_mlp_in -> mL, and an edge hook_q <- hook_q_input -> the head input aL.h0<q>"
)

# The reference's canonical circuits, edge for edge (its placeholder edges hook_result <- hook_q/k/v and
# mlp_out <- mlp_in are internal to a node here; hook_q <- hook_q_input is the head input).
ACDC_PAPER: dict[str, dict[str, Any]] = {
    "tracr-reverse": {
        "function": "get_tracr_reverse_edges",
        "edges": [
            "a3.h0->logits",
            "m2->a3.h0<q>",
            "pos_embed->a3.h0<k>",
            "tok_embed->a3.h0<v>",
            "m1->m2",
            "m0->m1",
            "tok_embed->m1",
            "pos_embed->m1",
            "a0.h0->m0",
            "tok_embed->m0",
            "tok_embed->a0.h0<v>",
        ],
        "head_inputs": ["a3.h0<q>", "a3.h0<k>", "a3.h0<v>", "a0.h0<v>"],
    },
    "tracr-proportion": {
        "function": "get_tracr_proportion_edges",
        "edges": [
            "a1.h0->logits",
            "tok_embed->a1.h0<q>",
            "pos_embed->a1.h0<q>",
            "tok_embed->a1.h0<k>",
            "pos_embed->a1.h0<k>",
            "m0->a1.h0<v>",
            "tok_embed->m0",
        ],
        "head_inputs": ["a1.h0<q>", "a1.h0<k>", "a1.h0<v>"],
    },
}


def measure(model: torch.nn.Module, name: str, circuit: Circuit) -> None:
    """Set ``circuit``'s task block (task ``name``, default data) and metric block: l2 of the full
    model, the circuit and the empty circuit under zero ablation."""
    task = make_task(name, model)
    circuit.task = {"name": name, **task.params}
    graph = circuit.graph
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, "zero", split_input=graph.shape.split_input)
    full_edges, full_heads = graph.full_edge_mask(), graph.full_head_input_mask()
    metric = make_metric("l2", task, patcher.logits(CircuitMask(full_edges, full_heads)))

    def value(edges: torch.Tensor, heads: torch.Tensor) -> float:
        return float(metric(patcher.logits(CircuitMask(edges[None], heads[None])))[0])

    circuit.metric = {
        "name": "l2",
        "ablation": "zero",
        "full": value(full_edges, full_heads),
        "circuit": value(circuit.in_graph.edges, circuit.in_graph.head_inputs),
        "empty": value(torch.zeros_like(full_edges), torch.zeros_like(full_heads)),
    }


def paper_circuit(model: torch.nn.Module, name: str) -> Circuit:
    """The ACDC paper's canonical circuit for ``name`` as a Circuit over the model's split-input graph."""
    paper = ACDC_PAPER[name]
    graph = build_graph(model.cfg, split_input=True)
    edges = torch.zeros_like(graph.edge_exists)
    for edge in paper["edges"]:
        edges[graph.parse_edge(edge)] = True
    heads = torch.zeros(graph.shape.n_layers, graph.shape.n_heads, 3, dtype=torch.bool)
    for head_input in paper["head_inputs"]:
        heads[graph.parse_head_input(head_input)] = True
    circuit = Circuit.unscored(
        graph, CircuitMask(edges, heads),
        model=describe_model(model, split_input=True),
        method={"name": "acdc-paper", "source": REFERENCE_SOURCE.format(function=paper["function"])},
    )
    if not (torch.equal(circuit.in_graph.edges, edges) and torch.equal(circuit.in_graph.head_inputs, heads)):
        raise SystemExit(f"{name}: the translated paper circuit has parts off every input-to-logits path")
    return circuit


def main() -> None:
    for name, program in PROGRAMS.items():
        start = time.perf_counter()
        compiled = compile_program(program)
        write_compiled(compiled, cache_key(program), SHIPPED_DIR / f"{name}.safetensors")
        model = compiled.model()
        truth = structural_circuit(model, compiled.residual_labels)
        measure(model, name, truth)
        save_circuit(truth, REFERENCE_FOLDER / f"{name}.json")
        line = f"{name}: compiled in {time.perf_counter() - start:.1f} s, {compiled.provenance['check_against_tracr']}; "
        line += f"structural ground truth {truth.n_edges} / {truth.n_edges_total} edges, l2 {truth.metric}"
        if name in ACDC_PAPER:
            paper = paper_circuit(model, name)
            measure(model, name, paper)
            save_circuit(paper, REFERENCE_FOLDER / f"{name}-acdc-paper.json")
            line += f"; ACDC paper {paper.n_edges} edges, l2 {paper.metric}"
        print(line)


if __name__ == "__main__":
    main()
