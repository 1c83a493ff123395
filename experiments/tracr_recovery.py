"""Zero-ablation ACDC on every tracr program, against its structural ground truth and the ACDC paper.

    python experiments/tracr_recovery.py                   # threshold 1e-6 (tests use the same)
    python experiments/tracr_recovery.py --threshold 0.05  # the CLI's default

Prints one markdown row per task (model = task name, l2, split input): the edges ACDC keeps, the
structural ground truth's size, precision and recall against it, whether the circuit equals the ACDC
paper's (tracr-reverse, tracr-proportion), ACDC's seconds and forward passes, float32 and float64
agreement, and the structural edges ACDC drops with the residual dimensions each carries.
"""

from __future__ import annotations

import argparse

import torch

from acdc_engine import discover
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tracr import PROGRAMS, compiled_program

CASES = [(name, {}) for name in PROGRAMS] + [("tracr-proportion", {"reference_ids": False})]


def head_inputs_in(circuit) -> set[str]:
    g = circuit.graph
    return {name for name in g.head_input_names() if circuit.in_graph.head_inputs[g.parse_head_input(name)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=1e-6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = ["task and model", "data", "ACDC edges", "structural edges", "precision", "recall", "= ACDC paper",
              "seconds", "forward passes", "float64 same"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    drops = []
    for name, task_params in CASES:
        compiled = compiled_program(name)
        runs = {
            dtype: discover(
                compiled.model(dtype=dtype), name, threshold=args.threshold, ablation="zero", split_input=True,
                task_params=task_params, model_name=name, progress=False,
            )
            for dtype in (torch.float32, torch.float64)
        }
        found, truth = runs[torch.float32], reference_circuit(name)
        kept, true = set(found.edges()), set(truth.edges())
        paper = "-"
        if name in ("tracr-reverse", "tracr-proportion"):
            published = reference_circuit(f"{name}-acdc-paper")
            paper = "yes" if kept == set(published.edges()) and head_inputs_in(found) == head_inputs_in(published) else "no"
        data = ", ".join(f"{k}={v}" for k, v in task_params.items()) or "default"
        print(
            f"| {name} | {data} | {len(kept)} / {found.n_edges_total} | {len(true)} | {len(kept & true) / max(len(kept), 1):.2f} "
            f"| {len(kept & true) / len(true):.2f} | {paper} | {found.run['seconds']:.2f} | {found.run['forward_passes']} "
            f"| {'yes' if runs[torch.float64].edges() == found.edges() else 'NO'} |"
        )
        for edge in sorted(true - kept):
            drops.append(f"{name} ({data}): {edge} carries {truth.extra['subspaces'][edge]}")
        for head_input in sorted(head_inputs_in(truth) - head_inputs_in(found)):
            drops.append(f"{name} ({data}): head input {head_input} reads {truth.extra['subspaces'][head_input]}")
    print("\nStructural edges and head inputs ACDC drops:")
    print("\n".join(drops))


if __name__ == "__main__":
    main()
