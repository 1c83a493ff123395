"""The engine on a GPU: patching and ACDC checks against the CPU, then the benchmark, in one command.

    python experiments/gpu_check.py                        # on CUDA (refuses without it); < 8 min on one H200
    python experiments/gpu_check.py --device cpu --dry-run # every step on the CPU, tiny sizes

Prints JSON lines: the machine, then one line per check and measurement, and a last line with
``all_passed``. Checks, in float32 and float64:

1. patching: the device's patched logits against the naive hook-based reference (tests/) on random
   edge and head-input subsets of small random models (attention-only and with MLPs), under every
   ablation; resuming at a layer against the full pass; how many circuits of speculative batches
   differ in any bit from their lone pass (reported: a GPU's kernels need not be batch invariant,
   and exact ACDC re-measures near-ties alone, so its decisions do not depend on that).
2. ACDC: the decisions of exact ACDC on the device equal the CPU's, candidate for candidate, on
   the default case (toy-induction-2l, induction; batch sizes 1 and 32) and on a prefix of the
   visiting order of the GPT-2-shape case (benchmark.py's ``gpt2-shape``).

Then the benchmark on the device (``benchmark.run_one``): fast ACDC (decisions per second,
achieved GFLOP/s and its fraction of the device's measured float32 matrix-product rate) on the
default and GPT-2-shape cases, EAP seconds on both, peak GPU memory of each.

Exit status: 0 when every check passed, 1 when one failed, 2 when the device is not there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the naive reference and the model factories live with the tests
sys.path.insert(0, str(ROOT / "experiments"))

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}  # |device - naive| on the small models' logits


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def select_device(device: str) -> str:
    """``device`` if torch can use it; otherwise a one-line refusal and exit status 2."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: device '{device}' asked for, but torch sees no CUDA GPU "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu --dry-run "
              "to check the script on the CPU", file=sys.stderr)
        raise SystemExit(2)
    return device


def patching_checks(device: str, dtype: torch.dtype) -> dict:
    """Check 1 for one dtype: largest |device - naive| logit difference, resume difference, and the
    batch-invariance count."""
    from factories import random_task, small_model, speculative_batch
    from naive_reference import naive_patched_logits

    from acdc_engine import build_graph
    from acdc_engine.core.mask import CircuitMask
    from acdc_engine.patching import EdgePatcher

    worst, resume_worst, compared, differing = 0.0, 0.0, 0, 0
    generator = torch.Generator().manual_seed(0)
    for attn_only in (True, False):
        reference = small_model(attn_only, seed=5, dtype=dtype)  # the naive reference runs on the CPU
        model = small_model(attn_only, seed=5, dtype=dtype).to(device)
        task = random_task(seed=1, n_prompts=6, n_pos=7, positions=[3, 6])
        graph = build_graph(model.cfg)
        for ablation in ("resample", "zero", "mean"):
            patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, ablation, split_input=graph.shape.split_input)
            for _ in range(3):
                edges = (torch.rand(graph.edge_exists.shape, generator=generator) < 0.5) & graph.edge_exists
                heads = torch.rand(graph.full_head_input_mask().shape, generator=generator) < 0.8
                removed_edges = {f"{s}->{r}" for s, r in graph.edges() if not edges[graph.sender_index[s], graph.receiver_index[r]]}
                removed_heads = {n for n in graph.head_input_names() if not heads[graph.parse_head_input(n)]}
                expected = naive_patched_logits(reference, task.clean, task.corrupted, removed_edges, removed_heads, ablation=ablation)
                got = patcher.logits(CircuitMask(edges, heads)).cpu()
                worst = max(worst, float((got - expected[:, task.positions]).abs().max()))
        patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
        for start_layer in range(1, graph.shape.n_layers + 1):  # lower receivers intact, the rest random
            edges = (torch.rand(graph.edge_exists.shape, generator=generator) < 0.5) & graph.edge_exists
            heads = torch.rand(graph.full_head_input_mask().shape, generator=generator) < 0.8
            below = torch.tensor(graph.receiver_layer) < graph.shape.attention_reads(start_layer)
            edges[:, below] = graph.edge_exists[:, below]
            heads[:start_layer] = True
            full = patcher.logits(CircuitMask(edges, heads))
            resume_worst = max(resume_worst, float((patcher.logits(CircuitMask(edges, heads), start_layer) - full).abs().max()))
        for start_layer in range(graph.shape.n_layers):
            for n_circuits in (2, 8):
                edges, heads = speculative_batch(graph, generator, n_circuits, start_layer)
                batched = patcher.logits(CircuitMask(edges, heads), start_layer)
                for c in range(n_circuits):
                    compared += 1
                    differing += not torch.equal(batched[c], patcher.logits(CircuitMask(edges[c], heads[c]), start_layer))
    tolerance = TOLERANCE[dtype]
    return {"check": "patching", "dtype": str(dtype).removeprefix("torch."), "max_abs_diff_vs_naive": worst,
            "max_abs_diff_resumed_vs_full": resume_worst, "tolerance": tolerance,
            "batch_circuits_compared": compared, "batch_circuits_differing_in_any_bit": differing,
            "passed": worst <= tolerance and resume_worst <= tolerance}


def acdc_decisions(case: str, device: str, dtype: str, batch_size: int | None, stop_after: int | None) -> dict:
    """{candidate index in the visiting order: (kept, score)} of exact ACDC on ``case``."""
    import benchmark

    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import run_acdc, visiting_order
    from acdc_engine.measure.metrics import kl_divergence
    from acdc_engine.patching import EdgePatcher

    spec = benchmark.CASES[case]
    model, task = benchmark.build(case, device, dtype)
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    metric = kl_divergence(patcher.logits(graph.full_mask()))
    result = run_acdc(graph, lambda mask, s=0: metric(patcher.logits(mask, s)).double(), spec["threshold"],
                      batch_size=batch_size or patcher.auto_batch_size(), progress=False, stop_after=stop_after)
    decisions = {}
    for i, candidate in enumerate(visiting_order(graph)):
        if candidate.edge is not None:
            score, kept = result.scores.edges[candidate.edge], result.kept.edges[candidate.edge]
        else:
            score, kept = result.scores.head_inputs[candidate.head_input], result.kept.head_inputs[candidate.head_input]
        if not math.isnan(float(score)):
            decisions[i] = (bool(kept), float(score))
    return decisions


def acdc_check(case: str, device: str, dtype: str, batch_size: int | None, stop_after: int | None) -> dict:
    """Check 2: the device's decisions against the CPU's."""
    start = time.perf_counter()
    on_cpu = acdc_decisions(case, "cpu", dtype, batch_size, stop_after)
    on_device = acdc_decisions(case, device, dtype, batch_size, stop_after)
    same_tested = on_cpu.keys() == on_device.keys()
    same_decisions = same_tested and all(on_cpu[i][0] == on_device[i][0] for i in on_cpu)
    score_diff = max((abs(on_cpu[i][1] - on_device[i][1]) for i in on_cpu.keys() & on_device.keys()), default=0.0)
    return {"check": "acdc_decisions", "case": case, "dtype": dtype, "batch_size": batch_size or "auto",
            "prefix_candidates": stop_after, "tested": len(on_cpu), "kept": sum(k for k, _ in on_cpu.values()),
            "identical_to_cpu": same_decisions, "max_abs_score_diff": score_diff,
            "seconds": round(time.perf_counter() - start, 1), "passed": same_decisions and len(on_cpu) > 0}


def benchmark_on(device: str, dry_run: bool) -> list[dict]:
    """The benchmark's fast and EAP measurements on ``device``."""
    import benchmark

    rate = benchmark.matmul_gflops(device, 1024 if dry_run else 8192)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, prefix in (("default", None), ("gpt2-shape", 20 if dry_run else 800)):
            for method in ("fast", "eap"):
                line = benchmark.run_one(case, method, Path(tmp) / "decisions.json", device=device,
                                         fast_candidates=prefix if method == "fast" else None)
                if method == "fast":
                    line["matmul_fraction"] = round(line["achieved_gflops"] / rate, 3)
                line.update(check="benchmark", device=device, device_matmul_gflops=round(rate, 1))
                lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes (a GPT-2-shape prefix of 10 candidates)")
    parser.add_argument("--prefix", type=int, default=200, help="GPT-2-shape candidates compared with the CPU (default 200)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = select_device(args.device)
    import benchmark

    started = time.perf_counter()
    emit({**benchmark.machine("cpu"), "check_device": device,
          **({"gpu": torch.cuda.get_device_name(device)} if device != "cpu" else {})})
    results = []
    for dtype in (torch.float32, torch.float64):
        results.append(patching_checks(device, dtype))
        emit(results[-1])
    prefix = 10 if args.dry_run else args.prefix
    for dtype in ("float32", "float64"):
        for batch_size in (1, None):
            results.append(acdc_check("default", device, dtype, batch_size, None))
            emit(results[-1])
        results.append(acdc_check("gpt2-shape", device, dtype, None, prefix))
        emit(results[-1])
    for line in benchmark_on(device, args.dry_run):
        emit(line)
    passed = all(r["passed"] for r in results)
    emit({"all_passed": passed, "seconds": round(time.perf_counter() - started, 1)})
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
