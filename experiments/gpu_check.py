"""The engine on a GPU: patching, ACDC and every method checked against the CPU, bfloat16 against
float32, then the benchmark, in one command.

    python experiments/gpu_check.py                        # on CUDA (refuses without it); estimated 4-5 min on one H100
    python experiments/gpu_check.py --device cpu --dry-run # every step on the CPU, tiny sizes (about 3 min on 1 thread)

Prints JSON lines: the machine; then, step by step, one line per check or measurement and a line
``{"step": name, "step_seconds": s}`` when the step ends; last ``{"all_passed": ..., "seconds": ...}``.
A line with ``passed`` is a check against an independent result (the CPU's run, or the naive
hook-based reference of tests/naive_reference.py on the CPU); the others are measurements.

Steps:

1. patching (float32, float64): the device's patched logits against the naive reference on random
   edge and head-input subsets of small random models (attention-only and with MLPs), under every
   ablation, within ``TOLERANCE`` (float64 1e-10, float32 1e-4, absolute); resuming at a layer against
   the full pass (same tolerance); how many circuits of speculative batches differ in any bit from
   their lone pass (reported: a GPU's kernels need not be batch invariant, and exact ACDC
   re-measures near-ties alone, so its decisions do not depend on that).
2. patching-bf16: the comparison with the naive reference, with the device's pass in bfloat16 and the naive reference in
   float32 on the same weights (rounded to bfloat16 once, so only the arithmetic differs), within the
   engine's self-check tolerance ``self_check.TOLERANCE[bfloat16]`` (0.1) x max(1, max |reference logit|).
3. acdc-default (float32, float64): exact ACDC's decisions on the device equal the CPU's, candidate
   for candidate (and at least one tested), on the default case (toy-induction-2l, induction) with
   batch sizes 1 and auto; the largest score difference is reported.
4. methods: every method of ``acdc_engine.methods.METHODS`` through ``discover`` (the users' entry
   point) on a small float32 random model with MLPs (2 layers x 3 heads, d_model 32; 6 prompts x 7
   tokens, logit_diff; ``top_n`` 10 or ``threshold`` 0.01; learned-mask methods get
   ``tests/factories.quick_params``: 10 steps, 2 mask samples), on the CPU and on the device:
   - score methods (eap, eap-ig, eap-ig-activations, clean-corrupted, information-flow-routes, the
     node and neuron variants): the same entries unmeasured (NaN), and every other score within
     ``SCORE_TOLERANCE`` (1e-4) x scale of the CPU's, scale = the largest |CPU score| or |CPU metric
     value|: float32 rounding of a differently ordered sum is about 1e-6 of its terms, and 1e-4 is the
     self-check's float32 tolerance. Kept decisions that differ are reported, not checked (a top_n
     cut may break a near-tie either way). Node and neuron methods are compared on the edge and
     head-input scores their circuits carry.
   - decision methods (a threshold decides: acdc, acdc-eap, acdc-nodes; or every edge is measured
     exactly: exact, exact-nodes): the same score check, and identical kept edges and head inputs.
   - learned-mask methods (edge-pruning, ugs, subnetwork-probing: those ``quick_params`` shortens):
     the device's run ends with a finite score on every edge and finite metric values. Their
     distance from the CPU's scores is reported, not checked: the mask noise is the same (a CPU
     generator) but float rounding differs from the first step and gradient steps carry it on, so
     the GPU and CPU trajectories need not match bit for bit.
5. bf16-attribution: EAP and EAP-IG (5 steps) scores with the patcher in bfloat16 against float32 on
   the device, both on the same bfloat16-rounded weights, negative logit difference (the task's
   answers; seeded random tokens where it has none), on the default and the GPT-2-shape case
   (dry run: default only). Reported: Spearman rank correlation over the existing edges, overlap of
   the top-k edges by |score| (k = 1% of the edges, at least 10), Pearson correlation, largest
   difference relative to the largest |float32 score|, seconds of each dtype, peak GPU memory.
   Checked against a sanity bound only: Spearman >= 0.9 and top-k overlap >= 0.5. The CPU's
   bfloat16 gives 0.999 / 0.99 on the GPT-2-shape case and 1.0 / 1.0 on the default case; a broken
   bfloat16 path (wrong casts, lost gradients) gives about 0; the margin leaves room for GPU kernels
   that accumulate differently (e.g. bfloat16 reductions in reduced precision).
6. acdc-gpt2-shape (float32, float64): step 3's check on a prefix of the GPT-2-shape case's visiting
   order (benchmark.py's ``gpt2-shape``: 12 x 12 heads, d_model 768, 20 prompts x 16 tokens,
   32491 edges). The default prefix is every candidate resumed at the logits or in the top two
   layers (10428 candidates: the logits', MLP 11's, MLP 10's and layers 11 and 10's head inputs; in
   float32 about 450 are tested, the rest are moot in this random model); ``--prefix N`` for the
   first N. Each line also gives the device run's decisions per second (candidates tested /
   seconds, patcher set-up included, model build excluded), candidates visited per second, peak
   GPU memory, and the CPU's seconds.
7. benchmark (``benchmark.run_one`` on the device, measurements): fast ACDC (decisions per second,
   achieved GFLOP/s and its fraction of the device's measured float32 matrix-product rate) on the
   default case and an 800-candidate GPT-2-shape prefix, EAP seconds on both, peak GPU memory of each.

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
from typing import Any, Callable, Iterable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "tests"))  # the naive reference and the model factories live with the tests
sys.path.insert(0, str(ROOT))  # this checkout's acdc_engine, whatever else is installed

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}  # |device - naive| on the small models' logits
SCORE_TOLERANCE = 1e-4  # |device - CPU| method scores, relative to the scale of the CPU's scores and metric
BF16_MIN_SPEARMAN, BF16_MIN_TOP_K_OVERLAP = 0.9, 0.5  # sanity bounds of bfloat16 against float32 attribution
METHOD_TASK = dict(seed=1, n_prompts=6, n_pos=7, positions=[3, 6])  # random_task's arguments for step 4
METHOD_THRESHOLD, METHOD_TOP_N = 0.01, 10


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


def reset_peak_memory(device: str) -> None:
    """Start counting the peak GPU memory afresh (nothing on the CPU)."""
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> dict:
    """{"peak_gpu_mb": peak allocated since the last reset} on a GPU; {} on the CPU."""
    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device != "cpu" else {}


# ----- steps 1 and 2: the patched pass against the naive reference --------------------------------


def random_circuit(graph, generator: torch.Generator) -> tuple[Any, set[str], set[str]]:
    """A random circuit (about half the edges, 80% of the head inputs) as a ``CircuitMask`` and as the
    naive reference's arguments (the names of the removed edges and head inputs)."""
    from acdc_engine.core.mask import CircuitMask

    edges = (torch.rand(graph.edge_exists.shape, generator=generator) < 0.5) & graph.edge_exists
    heads = torch.rand(graph.full_head_input_mask().shape, generator=generator) < 0.8
    removed_edges = {f"{s}->{r}" for s, r in graph.edges() if not edges[graph.sender_index[s], graph.receiver_index[r]]}
    removed_heads = {n for n in graph.head_input_names() if not heads[graph.parse_head_input(n)]}
    return CircuitMask(edges, heads), removed_edges, removed_heads


def against_naive(model, reference, task, graph, generator: torch.Generator, circuits: int = 3) -> tuple[float, float]:
    """(largest |device - naive| logit difference, largest |naive logit|) over every ablation and
    ``circuits`` random circuits each: ``model`` patched on its device, ``reference`` (same weights,
    on the CPU) through the naive hook-based reference."""
    from naive_reference import naive_patched_logits

    from acdc_engine.patching import EdgePatcher

    worst, scale = 0.0, 0.0
    for ablation in ("resample", "zero", "mean"):
        patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, ablation, split_input=graph.shape.split_input)
        for _ in range(circuits):
            mask, removed_edges, removed_heads = random_circuit(graph, generator)
            expected = naive_patched_logits(reference, task.clean, task.corrupted, removed_edges, removed_heads, ablation=ablation)
            expected = expected[:, task.positions].double()
            got = patcher.logits(mask).cpu().double()
            worst, scale = max(worst, float((got - expected).abs().max())), max(scale, float(expected.abs().max()))
    return worst, scale


def resume_and_batch_differences(patcher, graph, generator: torch.Generator) -> tuple[float, int, int]:
    """(largest |resumed - full| logit difference over every start layer, circuits of speculative
    batches compared with their lone pass, how many of those differ in any bit)."""
    from factories import speculative_batch

    from acdc_engine.core.mask import CircuitMask

    resume_worst, compared, differing = 0.0, 0, 0
    for start_layer in range(1, graph.shape.n_layers + 1):  # lower receivers intact, the rest random
        mask, _, _ = random_circuit(graph, generator)
        below = torch.tensor(graph.receiver_layer) < graph.shape.attention_reads(start_layer)
        mask.edges[:, below] = graph.edge_exists[:, below]
        mask.head_inputs[:start_layer] = True
        full = patcher.logits(mask)
        resume_worst = max(resume_worst, float((patcher.logits(mask, start_layer) - full).abs().max()))
    for start_layer in range(graph.shape.n_layers):
        for n_circuits in (2, 8):
            edges, heads = speculative_batch(graph, generator, n_circuits, start_layer)
            batched = patcher.logits(CircuitMask(edges, heads), start_layer)
            for c in range(n_circuits):
                compared += 1
                differing += not torch.equal(batched[c], patcher.logits(CircuitMask(edges[c], heads[c]), start_layer))
    return resume_worst, compared, differing


def patching_checks(device: str, dtype: torch.dtype) -> dict:
    """Step 1 for one dtype: largest |device - naive| logit difference (within ``TOLERANCE``), resume
    difference (the same), and the batch-invariance count (reported)."""
    from factories import random_task, small_model

    from acdc_engine import build_graph
    from acdc_engine.patching import EdgePatcher

    worst, resume_worst, compared, differing = 0.0, 0.0, 0, 0
    generator = torch.Generator().manual_seed(0)
    for attn_only in (True, False):
        reference = small_model(attn_only, seed=5, dtype=dtype)  # the naive reference runs on the CPU
        model = small_model(attn_only, seed=5, dtype=dtype).to(device)
        task = random_task(seed=1, n_prompts=6, n_pos=7, positions=[3, 6])
        graph = build_graph(model.cfg)
        worst = max(worst, against_naive(model, reference, task, graph, generator)[0])
        patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
        resumed, n, d = resume_and_batch_differences(patcher, graph, generator)
        resume_worst, compared, differing = max(resume_worst, resumed), compared + n, differing + d
    tolerance = TOLERANCE[dtype]
    return {"check": "patching", "dtype": str(dtype).removeprefix("torch."), "max_abs_diff_vs_naive": worst,
            "max_abs_diff_resumed_vs_full": resume_worst, "tolerance": tolerance,
            "batch_circuits_compared": compared, "batch_circuits_differing_in_any_bit": differing,
            "passed": worst <= tolerance and resume_worst <= tolerance}


def bf16_patching_check(device: str) -> dict:
    """Step 2: the device's patched logits in bfloat16 against the naive reference in float32 on the
    same (bfloat16-rounded) weights, within the self-check's bfloat16 tolerance x max(1, max |logit|)."""
    from factories import random_task, small_model

    from acdc_engine import build_graph
    from acdc_engine.patching.self_check import TOLERANCE as SELF_CHECK_TOLERANCE

    worst, scale = 0.0, 0.0
    generator = torch.Generator().manual_seed(0)
    for attn_only in (True, False):
        reference = small_model(attn_only, seed=5, dtype=torch.float32).to(torch.bfloat16).to(torch.float32)
        model = small_model(attn_only, seed=5, dtype=torch.float32).to(torch.bfloat16).to(device)
        task = random_task(seed=1, n_prompts=6, n_pos=7, positions=[3, 6])
        diff, logits = against_naive(model, reference, task, build_graph(model.cfg), generator)
        worst, scale = max(worst, diff), max(scale, logits)
    tolerance = SELF_CHECK_TOLERANCE[torch.bfloat16] * max(1.0, scale)
    return {"check": "patching", "dtype": "bfloat16", "reference_dtype": "float32", "max_abs_diff_vs_naive": worst,
            "max_abs_reference_logit": scale, "tolerance": tolerance, "passed": worst <= tolerance}


# ----- step 3: exact ACDC's decisions against the CPU's ---------------------------------------------


def top_layers_prefix(case: str, layers: int = 2) -> int:
    """How many candidates of ``case``'s visiting order resume at the logits or in the top ``layers``
    layers (the GPT-2-shape default prefix: the cheapest passes, and every kind of receiver). The
    graph is built from the case's config alone, before any model."""
    from types import SimpleNamespace

    import benchmark

    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import visiting_segments

    graph = build_graph(SimpleNamespace(**{"parallel_attn_mlp": False, "attn_only": False, **benchmark.CASES[case]["config"]}))
    return sum(len(s.candidates) for s in visiting_segments(graph) if s.start_layer >= graph.shape.n_layers - layers)


def acdc_decisions(case: str, device: str, dtype: str, batch_size: int | None, stop_after: int | None) -> tuple[dict, dict]:
    """Exact ACDC on ``case``: ({candidate index in the visiting order: (kept, score)} of the tested
    candidates, {"seconds": the run's, patcher set-up included and model build excluded, "visited":
    candidates visited, and on a GPU "peak_gpu_mb"})."""
    import benchmark

    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import run_acdc, visiting_order
    from acdc_engine.measure.metrics import kl_divergence
    from acdc_engine.patching import EdgePatcher

    spec = benchmark.CASES[case]
    model, task = benchmark.build(case, device, dtype)
    graph = build_graph(model.cfg)
    reset_peak_memory(device)
    start = time.perf_counter()
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    metric = kl_divergence(patcher.logits(graph.full_mask()))
    result = run_acdc(graph, lambda mask, s=0: metric(patcher.logits(mask, s)).double(), spec["threshold"],
                      batch_size=batch_size or patcher.auto_batch_size(), progress=False, stop_after=stop_after)
    benchmark.synchronize(device)
    order = visiting_order(graph)
    timing = {"seconds": time.perf_counter() - start, "visited": len(order) if stop_after is None else min(stop_after, len(order)),
              **peak_memory(device)}
    decisions = {}
    for i, candidate in enumerate(order):
        if candidate.edge is not None:
            score, kept = result.scores.edges[candidate.edge], result.kept.edges[candidate.edge]
        else:
            score, kept = result.scores.head_inputs[candidate.head_input], result.kept.head_inputs[candidate.head_input]
        if not math.isnan(float(score)):
            decisions[i] = (bool(kept), float(score))
    return decisions, timing


def acdc_check(case: str, device: str, dtype: str, batch_size: int | None, stop_after: int | None) -> dict:
    """Step 3: the device's decisions against the CPU's (identical on every tested candidate, and at
    least one tested), with the device run's decisions per second and peak GPU memory."""
    on_cpu, cpu_timing = acdc_decisions(case, "cpu", dtype, batch_size, stop_after)
    on_device, timing = acdc_decisions(case, device, dtype, batch_size, stop_after)
    same_tested = on_cpu.keys() == on_device.keys()
    same_decisions = same_tested and all(on_cpu[i][0] == on_device[i][0] for i in on_cpu)
    score_diff = max((abs(on_cpu[i][1] - on_device[i][1]) for i in on_cpu.keys() & on_device.keys()), default=0.0)
    return {"check": "acdc_decisions", "case": case, "dtype": dtype, "batch_size": batch_size or "auto",
            "prefix_candidates": stop_after, "visited": timing["visited"], "tested": len(on_cpu),
            "kept": sum(k for k, _ in on_cpu.values()), "identical_to_cpu": same_decisions, "max_abs_score_diff": score_diff,
            "cpu_seconds": round(cpu_timing["seconds"], 2), "device_seconds": round(timing["seconds"], 2),
            "decisions_per_second": float(f"{len(on_device) / timing['seconds']:.3g}"),
            "visited_per_second": float(f"{timing['visited'] / timing['seconds']:.3g}"),
            **{k: v for k, v in timing.items() if k == "peak_gpu_mb"}, "passed": same_decisions and len(on_cpu) > 0}


# ----- step 4: every registered method on the device against the CPU --------------------------------


def method_kind(name: str) -> str:
    """How step 4 judges method ``name``: "learned" (it trains masks: ``quick_params`` shortens its
    run), "decisions" (a threshold decides, or every edge is measured exactly: ``exact*``) or
    "scores" (attribution scores, circuits cut from them)."""
    from factories import quick_params

    from acdc_engine.methods import METHODS, CircuitSelection

    if quick_params(name):
        return "learned"
    if METHODS[name].circuits is CircuitSelection.THRESHOLD or name.split("-")[0] == "exact":
        return "decisions"
    return "scores"


def run_method(name: str, device: str):
    """``discover``'s circuit of method ``name`` on step 4's small float32 model with MLPs, on ``device``."""
    from factories import quick_params, random_task, small_model

    from acdc_engine import discover
    from acdc_engine.methods import METHODS, CircuitSelection

    model = small_model(False, seed=5, dtype=torch.float32).to(device)
    size = {"threshold": METHOD_THRESHOLD} if METHODS[name].circuits is CircuitSelection.THRESHOLD else {"top_n": METHOD_TOP_N}
    return discover(model, random_task(**METHOD_TASK), method=name, metric="logit_diff", progress=False,
                    **size, **quick_params(name))


def all_scores(circuit) -> torch.Tensor:
    """Every edge and head-input score of ``circuit``, flattened, float64 on the CPU (NaN: unmeasured)."""
    return torch.cat([circuit.scores.edges.flatten(), circuit.scores.head_inputs.flatten()]).double().cpu()


def all_kept(circuit) -> torch.Tensor:
    """Every edge and head-input decision of ``circuit``, flattened, bool on the CPU."""
    return torch.cat([circuit.kept.edges.flatten(), circuit.kept.head_inputs.flatten()]).cpu()


def compare_circuits(on_cpu, on_device) -> dict:
    """The device's circuit against the CPU's: scored entries and kept decisions (the CPU's), same NaN
    (unmeasured) pattern, largest |score difference|, its scale (largest |CPU score| or |CPU metric
    value|), kept decisions that differ, whether the device's scores (those measured) and metric
    values are finite, and whether it scored every existing edge with a finite value."""
    cpu_scores, device_scores = all_scores(on_cpu), all_scores(on_device)
    both = ~cpu_scores.isnan() & ~device_scores.isnan()
    metric = [float(on_cpu.metric[k]) for k in ("full", "circuit", "empty")]
    device_metric = torch.tensor([float(on_device.metric[k]) for k in ("full", "circuit", "empty")])
    measured = device_scores[~device_scores.isnan()]
    return {
        "scored": int((~cpu_scores.isnan()).sum()), "kept": int(all_kept(on_cpu).sum()),
        "same_unmeasured": torch.equal(cpu_scores.isnan(), device_scores.isnan()),
        "max_abs_score_diff": float((cpu_scores[both] - device_scores[both]).abs().max()) if both.any() else 0.0,
        "score_scale": max([float(cpu_scores[both].abs().max()) if both.any() else 0.0] + [abs(m) for m in metric]),
        "kept_differing": int((all_kept(on_cpu) != all_kept(on_device)).sum()),
        "finite": bool(measured.numel() > 0 and torch.isfinite(measured).all() and torch.isfinite(device_metric).all()),
        "every_edge_scored": bool(torch.isfinite(on_device.scores.edges.cpu()[on_device.graph.edge_exists.cpu()]).all()),
        "metric_circuit_abs_diff": abs(metric[1] - float(on_device.metric["circuit"])),
    }


def method_verdict(kind: str, found: dict) -> tuple[bool, float]:
    """(passed, score tolerance) of a method of ``kind`` (``method_kind``) from ``compare_circuits``'
    findings: learned, a finite score on every edge and finite measured scores and metric; scores,
    also the same unmeasured entries and every score within ``SCORE_TOLERANCE`` x scale of the CPU's;
    decisions, also identical kept decisions."""
    tolerance = SCORE_TOLERANCE * found["score_scale"]
    scores_close = found["same_unmeasured"] and found["max_abs_score_diff"] <= tolerance
    passed = {"learned": found["finite"] and found["every_edge_scored"], "scores": scores_close and found["finite"],
              "decisions": scores_close and found["finite"] and found["kept_differing"] == 0}[kind]
    return passed, tolerance


def method_check(name: str, device: str) -> dict:
    """Step 4 for method ``name``: its circuit on the CPU and on ``device``, judged by ``method_verdict``."""
    start = time.perf_counter()
    on_cpu = run_method(name, "cpu")
    cpu_seconds = time.perf_counter() - start
    on_device = run_method(name, device)
    kind = method_kind(name)
    found = compare_circuits(on_cpu, on_device)
    passed, tolerance = method_verdict(kind, found)
    line = {"check": "method", "method": name, "kind": kind, **found, "score_tolerance": tolerance,
            "cpu_seconds": round(cpu_seconds, 2), "device_seconds": round(time.perf_counter() - start - cpu_seconds, 2)}
    if kind == "learned":
        line["note"] = "learned masks: checked that the run ends with a finite score on every edge; the CPU difference is reported"
    return {**line, "passed": passed}


# ----- step 5: EAP and EAP-IG in bfloat16 against float32 -------------------------------------------


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-d tensors (ranks by argsort; ties in arbitrary order)."""
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
    return float(torch.corrcoef(ranks)[0, 1])


def top_k_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """The fraction of the top ``k`` entries of |a| that are also among the top ``k`` of |b|."""
    top_a, top_b = set(a.abs().topk(k).indices.tolist()), set(b.abs().topk(k).indices.tolist())
    return len(top_a & top_b) / k


def answer_tokens(task, d_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(answers, wrong answers) of ``task``; seeded random tokens [n_prompts, positions] where it has none."""
    if task.answers is not None and task.wrong_answers is not None:
        return task.answers, task.wrong_answers
    generator = torch.Generator().manual_seed(0)
    shape = (task.clean.shape[0], len(task.positions))
    return torch.randint(0, d_vocab, shape, generator=generator), torch.randint(0, d_vocab, shape, generator=generator)


def attribution_scores(model, task, graph, device: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """({"eap", "eap-ig"}: float64 scores of the existing edges, {method: seconds}) of ``model`` in its
    dtype, negative logit difference."""
    import benchmark

    from acdc_engine.methods import eap
    from acdc_engine.measure.metrics import negative_logit_diff
    from acdc_engine.patching import EdgePatcher

    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    metric = negative_logit_diff(*answer_tokens(task, model.cfg.d_vocab))
    scores, seconds = {}, {}
    for method, run in (("eap", eap.eap_scores), ("eap-ig", eap.eap_ig_scores)):
        start = time.perf_counter()
        scores[method] = run(patcher, metric)[graph.edge_exists]
        benchmark.synchronize(device)
        seconds[method] = time.perf_counter() - start
    return scores, seconds


def bf16_attribution_check(case: str, device: str) -> list[dict]:
    """Step 5 on ``case``: EAP and EAP-IG in bfloat16 against float32 on ``device``, both on the same
    bfloat16-rounded weights; one line per method, passed within the sanity bounds."""
    import benchmark

    from acdc_engine.core.graph import build_graph

    model, task = benchmark.build(case, device, "float32")
    model = model.to(torch.bfloat16).to(torch.float32)  # rounded once: both runs use these weights
    graph = build_graph(model.cfg)
    reset_peak_memory(device)
    reference, reference_seconds = attribution_scores(model, task, graph, device)
    scores, seconds = attribution_scores(model.to(torch.bfloat16), task, graph, device)
    lines = []
    for method in ("eap", "eap-ig"):
        a, b = reference[method], scores[method]
        k = max(10, a.numel() // 100) if a.numel() > 10 else a.numel()
        rank, overlap = spearman(a, b), top_k_overlap(a, b, k)
        lines.append({"check": "bf16_attribution", "case": case, "method": method, "edges": a.numel(),
                      "spearman": round(rank, 5), "top_k": k, "top_k_overlap": round(overlap, 4),
                      "pearson": round(float(torch.corrcoef(torch.stack([a, b]))[0, 1]), 6),
                      "max_abs_diff_relative": float(f"{float((a - b).abs().max() / a.abs().max()):.3g}"),
                      "float32_seconds": round(reference_seconds[method], 3), "bfloat16_seconds": round(seconds[method], 3),
                      **peak_memory(device), "bounds": [BF16_MIN_SPEARMAN, BF16_MIN_TOP_K_OVERLAP],
                      "passed": rank >= BF16_MIN_SPEARMAN and overlap >= BF16_MIN_TOP_K_OVERLAP})
    return lines


# ----- step 6: the benchmark on the device --------------------------------------------------------------


def benchmark_on(device: str, dry_run: bool) -> list[dict]:
    """The benchmark's fast and EAP measurements on ``device`` (measurements, no checks)."""
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


# ----- the steps, in order ------------------------------------------------------------------------------


def steps(device: str, dry_run: bool, prefix: int | None) -> list[tuple[str, Callable[[], Iterable[dict]]]]:
    """(name, run) of every step in order, the quick checks first (should the machine's time run out,
    they are in); ``run()`` yields its lines as they come (those with ``passed`` are checks). Dry-run
    sizes: a 10-candidate GPT-2-shape prefix (unless ``prefix`` is given), bfloat16 attribution on the
    default case only, the benchmark's 20-candidate GPT-2-shape prefix and 1024-wide matrix products."""
    from acdc_engine.methods import METHODS

    if prefix is None:
        prefix = 10 if dry_run else top_layers_prefix("gpt2-shape")
    dtypes = ("float32", "float64")
    bf16_cases = ("default",) if dry_run else ("default", "gpt2-shape")
    return [
        ("patching", lambda: (patching_checks(device, dtype) for dtype in (torch.float32, torch.float64))),
        ("patching-bf16", lambda: [bf16_patching_check(device)]),
        ("acdc-default", lambda: (acdc_check("default", device, dtype, size, None) for dtype in dtypes for size in (1, None))),
        ("methods", lambda: (method_check(name, device) for name in METHODS)),
        ("bf16-attribution", lambda: (line for case in bf16_cases for line in bf16_attribution_check(case, device))),
        ("acdc-gpt2-shape", lambda: (acdc_check("gpt2-shape", device, dtype, None, prefix) for dtype in dtypes)),
        ("benchmark", lambda: benchmark_on(device, dry_run)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes (a GPT-2-shape prefix of 10 candidates)")
    parser.add_argument("--prefix", type=int, default=None,
                        help="GPT-2-shape candidates compared with the CPU (default: those resumed at the logits and the top "
                             "two layers, 10428; dry run: 10)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = select_device(args.device)
    import benchmark

    started = time.perf_counter()
    emit({**benchmark.machine("cpu"), "check_device": device,
          **({"gpu": torch.cuda.get_device_name(device)} if device != "cpu" else {})})
    results = []
    for name, run in steps(device, args.dry_run, args.prefix):
        step_start = time.perf_counter()
        for line in run():
            emit(line)
            results.append(line)
        emit({"step": name, "step_seconds": round(time.perf_counter() - step_start, 1)})
    passed = all(line["passed"] for line in results if "passed" in line)
    emit({"all_passed": passed, "seconds": round(time.perf_counter() - started, 1)})
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
