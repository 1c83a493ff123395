"""Does a circuit's metric depend on the batch it is evaluated in? Counts, per model shape, the
circuits whose logits or metric differ (in any bit) between a speculative batch and a lone pass.

    python experiments/batch_invariance.py            # toy, small float32, GPT-2-wide shapes
    python experiments/batch_invariance.py --threads 1

Batches are built as ACDC builds them: one circuit, copies of it each missing a few more edges
(and, in some copies, head inputs) at or above the layer the pass resumes from. Every ablation and
both input splits are tried on the small models. Prints one line per case and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from factories import random_task, small_model, speculative_batch  # noqa: E402  (the test suite's)

from cases import machine_line  # noqa: E402

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.graph import build_graph  # noqa: E402
from acdc_engine.measure.metrics import make_metric  # noqa: E402
from acdc_engine.patching import EdgePatcher  # noqa: E402


def count_differences(model, task, split_input: bool, ablation: str, sizes=(2, 3, 8, 17)) -> tuple[int, int, int]:
    """(circuits compared, logits differing, metric differing) over every start layer and size."""
    graph = build_graph(model.cfg, split_input=split_input)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, ablation, split_input=graph.shape.split_input)
    metric = make_metric("kl", task, patcher.logits(graph.full_mask()).float())
    generator = torch.Generator().manual_seed(0)
    compared = logits_differ = metric_differ = 0
    for start_layer in range(graph.shape.n_layers):
        for n_circuits in sizes:
            edges, heads = speculative_batch(graph, generator, n_circuits, start_layer)
            batched = patcher.logits(CircuitMask(edges, heads), start_layer)
            batched_metric = metric(batched.float())
            for c in range(n_circuits):
                alone = patcher.logits(CircuitMask(edges[c], heads[c]), start_layer)
                compared += 1
                logits_differ += not torch.equal(alone, batched[c])
                metric_differ += not torch.equal(metric(alone[None].float())[0], batched_metric[c])
    return compared, logits_differ, metric_differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    float32 = dict(dtype=torch.float32)
    cases = []
    for attn_only in (True, False):
        model = small_model(attn_only, seed=3, **float32)
        task = random_task(d_vocab=20, seed=3, n_prompts=8, n_pos=9, positions=[4, 8])
        for split_input in (False, True):
            for ablation in ("resample", "zero", "mean"):
                cases.append((f"small attn_only={attn_only}", model, task, split_input, ablation))
    cases.append(("4 layers x 4 heads", small_model(False, seed=4, n_layers=4, n_heads=4, **float32), random_task(seed=4), False, "resample"))
    wide = small_model(False, seed=5, n_layers=2, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=500, n_ctx=32, **float32)
    cases.append(("GPT-2 widths, 2 layers", wide, random_task(d_vocab=500, seed=5, n_prompts=8, n_pos=16), False, "resample"))
    for name, model, task, split_input, ablation in cases:
        start = time.perf_counter()
        compared, logits_differ, metric_differ = count_differences(model, task, split_input, ablation)
        print(f"{name}, split_input={split_input}, {ablation}: {compared} circuits, logits differ in {logits_differ}, "
              f"metric differs in {metric_differ} ({time.perf_counter() - start:.1f} s)")
    print(f"Measured on {machine_line()}.")


if __name__ == "__main__":
    main()
