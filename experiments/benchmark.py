"""Benchmark exact ACDC (naive reference vs fast engine) and the attribution methods, as JSON lines.

    python experiments/benchmark.py            # every default case
    python experiments/benchmark.py --quick    # the default case only (under a minute)
    python experiments/benchmark.py --cases attn4x8 --methods fast
    python experiments/benchmark.py --cases gpt2-shape --pass-costs   # cost of one pass per layer
    python experiments/benchmark.py --cases default autocircuit-shape --speedup   # naive and fast alternated
    python experiments/benchmark.py --cases gpt2-shape-full --methods naive fast   # the whole GPT-2-shape run (an hour)

The first line describes the machine (cores, torch, measured float32 matmul GFLOP/s). Then one line
per (case, method) with: case, method, edges, edges_tested, seconds, peak_rss_mb,
decisions_per_second, and

- exact ACDC (naive, fast): forward_equivalents (matmul FLOPs spent, in units of one plain forward
  pass of the model over the case's prompts; for the fast engine those of the whole timed run,
  set-up included, counted in a second identical run, skipped for runs over 10 minutes or with
  ``BENCHMARK_COUNT_FLOPS=0``),
  identical_to_naive (the fast engine's decisions equal the naive reference's on every candidate
  both tested), speedup_vs_naive (the naive reference's warm_best_seconds over the fast engine's,
  where both ran the whole visit warm), achieved_gflops and matmul_fraction (of the measured rate). Runs shorter than 5 s
  also give warm_best_seconds: the best of 2 to 10 more runs, as many as take about 5 s
  (``warm_runs``; the first pays first-call costs; the
  engine builds its pass again in each). Where a full naive run would take too long, it runs a
  stated prefix of the visiting order (``prefix_tests``) and ``extrapolated_seconds`` scales its
  time to all candidates (the naive cost per test does not depend on the position in the order).
  The whole GPT-2-shape run (opt-in case ``gpt2-shape-full``) adds ``per_layer``: each start
  layer's candidates, the seconds of its passes, and its limit (``per_layer_limits``).
- attribution (eap, eap-ig with EAP-IG's 5 points, clean-corrupted): ``setup_seconds`` (the patcher
  and metric every method shares, ``attribution_setup``: clean and ablated runs, the patched
  pass's tables, the self-check against the model's own forward) and ``seconds`` (the method
  itself); ``gflops`` / ``setup_gflops`` (counted FLOPs, in a second identical run) and their
  ``forward_equivalents``; ``matmul_fraction`` (the method's counted FLOPs per second over the
  measured matmul rate) and ``run_matmul_fraction`` (set-up and method together);
  ``method_peak_mb`` (how far the method raised the process's peak resident memory).

Each (case, method) runs in its own process, so peak memory is its own. ``--speedup`` instead
prints, per case, the fast engine's speedup over the naive reference with the two alternated in
one process (``interleaved_speedup``): naive_best_seconds, fast_best_seconds, speedup_vs_naive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the naive reference lives with the tests
sys.path.insert(0, str(ROOT))  # this checkout's engine, whatever is installed

CASES = {
    "default": {
        "model": "toy-induction-2l",
        "threshold": 0.05,
        "naive_tests": None,
        "fast_candidates": None,
    },
    "attn4x8": {  # the docstring setting of the ACDC paper: attention-only 4 x 8, 50 prompts x 41 tokens
        "config": dict(n_layers=4, n_heads=8, d_model=512, d_head=64, d_vocab=48262, n_ctx=64, attn_only=True,
                       normalization_type="LN", act_fn=None, seed=0),
        "prompts": (50, 41),
        "threshold": 2e-4,
        "naive_tests": 16,
        "fast_candidates": None,
    },
    "autocircuit-shape": {  # auto-circuit 1.0.1's ACDC figure: random attention-only 2 x 4, d_model 64, 20 x 12 prompts
        "config": dict(n_layers=2, n_heads=4, d_model=64, d_head=16, d_vocab=64, n_ctx=16, attn_only=True,
                       normalization_type="LN", act_fn=None, seed=0),
        "prompts": (20, 12),
        "threshold": 1e-3,
        "naive_tests": None,
        "fast_candidates": None,
    },
    "gpt2-shape": {
        "config": dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                       act_fn="gelu_new", normalization_type="LN", seed=0),
        "prompts": (20, 16),
        "threshold": 2e-4,
        "naive_tests": 8,
        "fast_candidates": 800,
    },
    "gpt2-shape-full": {  # opt-in (--cases gpt2-shape-full): the whole exact ACDC run at GPT-2 shape, about an hour
        "same_as": "gpt2-shape",
        "threshold": 2e-4,
        "naive_tests": 8,
        "fast_candidates": None,
        "per_layer": True,
        "opt_in": True,
    },
}
DEFAULT_CASES = [name for name, spec in CASES.items() if not spec.get("opt_in")]
METHODS = ("naive", "fast", "eap", "eap-ig", "clean-corrupted")


def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 10) -> float:
    """Measured float32 matrix product throughput on ``device`` (n x n times n x n), GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def machine(device: str = "cpu") -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    info = {"machine": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": device,
            "matmul_gflops": round(matmul_gflops(device, 8192 if device != "cpu" else 2048), 1)}
    if device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def build(case: str, device: str = "cpu", dtype: str = "float32"):
    """(model, task) for a case, on ``device``, in ``dtype``."""
    from acdc_engine import TaskData
    from acdc_engine.models import load_model
    from acdc_engine.tasks import make_induction

    spec = CASES[case]
    if "same_as" in spec:
        return build(spec["same_as"], device, dtype)
    if "model" in spec:
        model = load_model(spec["model"], device=device, dtype=dtype)
        return model, make_induction(model.cfg.d_vocab)
    model = load_model("random", device=device, dtype=dtype, config=spec["config"])
    n_prompts, n_pos = spec["prompts"]
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, model.cfg.d_vocab, (n_prompts, n_pos), generator=g)
    corrupted = torch.randint(0, model.cfg.d_vocab, (n_prompts, n_pos), generator=g)
    return model, TaskData(case, clean, corrupted, positions=[n_pos - 1])


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


WARM_REPEATS_BELOW_S = 5.0
WARM_REPEATS_MAX = 10
FLOP_COUNT_BELOW_S = 600.0  # a longer run is not repeated to count its FLOPs


def warm_best_seconds(run, first_seconds: float, device: str) -> dict:
    """For a run shorter than ``WARM_REPEATS_BELOW_S``: the best of more (warm) runs, as
    ``{"warm_best_seconds": s, "warm_runs": n}`` (the first run also pays first-call costs); else
    ``{}``. As many runs as take about ``WARM_REPEATS_BELOW_S`` in all, 2 to ``WARM_REPEATS_MAX``:
    on a shared machine the best of a few short runs swings by 15% or more."""
    if first_seconds >= WARM_REPEATS_BELOW_S:
        return {}
    best, repeats = math.inf, max(2, min(WARM_REPEATS_MAX, int(WARM_REPEATS_BELOW_S / max(first_seconds, 1e-3))))
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return {"warm_best_seconds": round(best, 4), "warm_runs": repeats}


def run_one(case: str, method: str, decisions_out: Path, device: str = "cpu", fast_candidates: int | None = None) -> dict:
    """One (case, method) measurement as a JSON-able dict; the tested candidates' decisions go to
    ``decisions_out``. ``fast_candidates`` overrides the case's prefix for the fast engine."""
    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import visiting_order

    spec = dict(CASES[case])
    if fast_candidates is not None:
        spec["fast_candidates"] = fast_candidates
    model, task = build(case, device)
    graph = build_graph(model.cfg)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    n_candidates = len(visiting_order(graph))
    with torch.no_grad():
        forward_flops = flops_of(lambda: model(task.clean))
    line = {"case": case, "method": method, "edges": graph.n_edges}

    kind = {"naive": _naive_line, "fast": _fast_line}.get(method, _attribution_line)
    decisions = kind(model, task, graph, spec, line, device, forward_flops, n_candidates)
    line["decisions_per_second"] = float(f"{line['edges_tested'] / line['seconds']:.3g}")
    line["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device != "cpu":
        line["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    decisions_out.write_text(json.dumps(decisions))
    return line



def naive_runner(model, task, spec: dict):
    """A function that runs the naive reference's exact ACDC once (the case's prefix where it says
    one) and returns its result."""
    from naive_reference import naive_acdc, naive_kl

    def naive_run():
        clean_logits = model(task.clean)
        positions = task.positions.tolist()
        return naive_acdc(model, task.clean, task.corrupted, lambda lg: naive_kl(clean_logits, lg, positions),
                          spec["threshold"], max_tests=spec["naive_tests"])

    return naive_run


def fast_runner(model, task, graph, spec: dict, device: str = "cpu"):
    """A function ``fast_run(record=None)`` that runs the fast engine's exact ACDC once, patcher and
    metric set up included, and returns (result, batch size, patcher); ``record`` {start layer:
    [seconds, passes, circuits]} collects the time spent in each start layer's passes."""
    from acdc_engine.measure.measurement import predictor
    from acdc_engine.measure.metrics import kl_divergence
    from acdc_engine.methods.acdc import run_acdc
    from acdc_engine.patching import EdgePatcher

    def fast_run(record: dict | None = None):
        patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
        metric = kl_divergence(patcher.logits(graph.full_mask()))
        batch_size = patcher.auto_batch_size()

        def evaluate(mask, s=0):
            begin = time.perf_counter()
            value = metric(patcher.logits(mask, s)).double()
            if record is not None:
                synchronize(device)
                spent = record.setdefault(s, [0.0, 0, 0])
                spent[0] += time.perf_counter() - begin
                spent[1] += 1
                spent[2] += mask.edges.shape[0] if mask.edges.dim() == 3 else 1
            return value

        predict = predictor(model, task, evaluate, metric="kl", split_input=graph.shape.split_input, threads=torch.get_num_threads())
        result = run_acdc(graph, evaluate, spec["threshold"], batch_size=batch_size, progress=False,
                          stop_after=spec["fast_candidates"], predict=predict)
        return result, batch_size, patcher

    return fast_run


def _naive_line(model, task, graph, spec: dict, line: dict, device: str, forward_flops: int, n_candidates: int) -> dict:
    """The naive reference's exact ACDC run (a prefix where the case says). Updates ``line``;
    returns the tested candidates' decisions {name: kept}."""
    from naive_reference import naive_patched_logits

    naive_run = naive_runner(model, task, spec)
    start = time.perf_counter()
    result = naive_run()
    seconds = time.perf_counter() - start
    line.update(warm_best_seconds(naive_run, seconds, device))
    per_eval = flops_of(lambda: naive_patched_logits(model, task.clean, task.corrupted, set(), set()))
    tested = result["tests"]
    decisions = {name: kept for name, kept in {**result["edges"], **result["head_inputs"]}.items()
                 if result["scores"][name] is not None}
    line.update(edges_tested=tested, forward_equivalents=round((tested + 1) * per_eval / forward_flops, 1),
                seconds=round(seconds, 2))
    if spec["naive_tests"] is not None:
        line.update(prefix_tests=tested, extrapolated_seconds=round(seconds * n_candidates / tested, 1),
                    note=f"naive ran the first {tested} of {n_candidates} candidates; extrapolated linearly")

    return decisions


def _fast_line(model, task, graph, spec: dict, line: dict, device: str, forward_flops: int, n_candidates: int) -> dict:
    """The fast engine's exact ACDC run: seconds, FLOPs, the per-layer breakdown where the case asks
    for it. Updates ``line``; returns the tested candidates' decisions {name: kept}."""
    per_layer = {}  # start layer -> [seconds, batched passes, circuits]
    fast_run = fast_runner(model, task, graph, spec, device)

    start = time.perf_counter()
    result, batch_size, patcher = fast_run(per_layer)
    synchronize(device)
    seconds = time.perf_counter() - start
    line.update(warm_best_seconds(lambda: fast_run(), seconds, device))
    decisions = {}
    for name, index, kept, scores in [(e, graph.parse_edge(e), result.kept.edges, result.scores.edges) for e in graph.edge_names()] + \
            [(h, graph.parse_head_input(h), result.kept.head_inputs, result.scores.head_inputs) for h in graph.head_input_names()]:
        if not torch.isnan(scores[index]):
            decisions[name] = bool(kept[index])
    line.update(edges_tested=result.candidates_tested, seconds=round(seconds, 2), batch_size=batch_size,
                batched_passes=result.forward_passes, edges_kept=int(result.kept.edges.sum()))
    if seconds < FLOP_COUNT_BELOW_S and os.environ.get("BENCHMARK_COUNT_FLOPS", "1") != "0":
        total_flops = flops_of(lambda: fast_run())  # the same run again (it is deterministic), counting its products
        line.update(forward_equivalents=round(total_flops / forward_flops, 1),
                    achieved_gflops=round(total_flops / seconds / 1e9, 1))
    if spec.get("per_layer"):
        line["per_layer"] = per_layer_limits(graph, patcher, per_layer, result)
        line["note"] = ("whole run; per_layer: each start layer's candidates and tested candidates, its passes, the "
                        "circuits they evaluated, their seconds, and its limit (the tested candidates at the "
                        "per-candidate cost of an 8-circuit pass there, measured after the run)")
    if spec["fast_candidates"] is not None:
        line.update(prefix_candidates=spec["fast_candidates"],
                    note=f"fast ran the first {spec['fast_candidates']} of {n_candidates} candidates "
                         "(the top layers, where a resumed pass is cheapest)")
    return decisions


SPEEDUP_ROUNDS = 12
"""Alternated naive and fast runs of ``interleaved_speedup``."""


def interleaved_speedup(case: str) -> dict:
    """The fast engine's speedup over the naive reference on a case both run whole, both timed in
    one process: after one warm-up run of each, ``SPEEDUP_ROUNDS`` rounds of one naive run then one
    fast run, the best of each. Alternating puts both under the same load: a shared VM's speed drifts
    by 15% within a minute, so runs in separate processes minutes apart can differ by that much."""
    from acdc_engine.core.graph import build_graph

    spec = CASES[case]
    if spec["naive_tests"] is not None or spec["fast_candidates"] is not None:
        raise SystemExit(f"case {case} runs a prefix of the visit; --speedup needs both runs whole")
    model, task = build(case)
    graph = build_graph(model.cfg)
    runs = {"naive": naive_runner(model, task, spec), "fast": fast_runner(model, task, graph, spec)}
    best = {name: math.inf for name in runs}
    for round_ in range(SPEEDUP_ROUNDS + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_:  # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - start)
    return {"case": case, "method": "speedup", "naive_best_seconds": round(best["naive"], 4),
            "fast_best_seconds": round(best["fast"], 4), "speedup_vs_naive": round(best["naive"] / best["fast"], 2),
            "rounds": SPEEDUP_ROUNDS}


def _attribution_line(model, task, graph, spec: dict, line: dict, device: str, forward_flops: int, n_candidates: int) -> dict:
    """An attribution method (``ATTRIBUTION``): set-up and method apart,
    counted FLOPs, peak memory. Updates ``line``; returns the tested candidates' decisions (none)."""
    scoring = ATTRIBUTION[line["method"]]
    setup_seconds, patcher, metric = timed(device, lambda: attribution_setup(model, task, graph))
    rss_before = current_rss_mb()
    seconds, scores = timed(device, lambda: scoring(patcher, metric))
    method_peak_mb = max(0, round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - rss_before)
    setup_flops = flops_of(lambda: attribution_setup(model, task, graph))
    method_flops = flops_of(lambda: scoring(patcher, metric))
    decisions = {}
    line.update(edges_tested=graph.n_edges, seconds=round(seconds, 2), setup_seconds=round(setup_seconds, 2),
                gflops=round(method_flops / 1e9, 1), setup_gflops=round(setup_flops / 1e9, 1),
                forward_equivalents=round(method_flops / forward_flops, 2),
                setup_forward_equivalents=round(setup_flops / forward_flops, 2),
                achieved_gflops=round(method_flops / seconds / 1e9, 1),
                run_achieved_gflops=round((method_flops + setup_flops) / (seconds + setup_seconds) / 1e9, 1),
                method_peak_mb=method_peak_mb, nonzero_scores=int((scores[graph.edge_exists] != 0).sum()))
    return decisions


def attribution_setup(model, task, graph):
    """What every attribution method runs on, as ``discover`` builds it: the patcher (clean and
    ablated runs, the patched pass's tables, the self-check against the model's own forward) and
    the KL metric against the full model's logits."""
    from acdc_engine.measure.metrics import kl_divergence
    from acdc_engine.patching import EdgePatcher

    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    return patcher, kl_divergence(patcher.logits(graph.full_mask()))


def _eap(patcher, metric):
    from acdc_engine.methods.eap import eap_scores

    return eap_scores(patcher, metric)


def _eap_ig(patcher, metric):
    from acdc_engine.methods.eap import eap_ig_scores

    return eap_ig_scores(patcher, metric, steps=5, rule="eap-ig")


def _clean_corrupted(patcher, metric):
    from acdc_engine.methods.attribution import clean_corrupted_scores

    return clean_corrupted_scores(patcher, metric)


ATTRIBUTION = {"eap": _eap, "eap-ig": _eap_ig, "clean-corrupted": _clean_corrupted}
"""Attribution methods the benchmark times: name -> (patcher, metric) -> edge scores [S, R]."""


def timed(device: str, fn):
    """(seconds, fn's result, ...): ``fn()`` timed to its end on ``device``; a tuple result is spread."""
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    return (seconds, *result) if isinstance(result, tuple) else (seconds, result)


def current_rss_mb() -> int:
    """This process's resident memory now, MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)


def per_candidate_costs(graph, patcher, layers: list[int], n_circuits: tuple[int, ...] = (1, 8)) -> dict:
    """{(start layer, circuits): seconds per candidate} of one resumed pass at each of ``layers``
    (``n_layers``: the logits), for circuits that differ in one receiver there, on a circuit with
    10% of the edges above that layer kept (random; the pass before it, on another such circuit,
    fills the engine's cache as ACDC's previous pass would)."""
    from acdc_engine.core.mask import CircuitMask
    from acdc_engine.core.nodes import head_receiver_name

    generator = torch.Generator().manual_seed(0)
    n_layers = graph.shape.n_layers

    def circuits(layer: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        edges = (torch.rand(graph.edge_exists.shape, generator=generator) < 0.1) & graph.edge_exists
        intact = torch.tensor(graph.receiver_layer) < graph.shape.attention_reads(layer)
        edges[:, intact] = graph.edge_exists[:, intact]
        edges = edges[None].repeat(count, 1, 1)
        heads = graph.full_head_input_mask()[None].repeat(count, 1, 1, 1)
        receiver = graph.receiver_index["logits" if layer == n_layers else head_receiver_name(layer, 0, "v")]
        for c in range(count):
            edges[c, : c + 1, receiver] = False
        return edges, heads

    costs = {}
    for layer in sorted(set(layers), reverse=True):
        for count in n_circuits:
            patcher.logits(CircuitMask(*circuits(layer, count)), layer)
            edges, heads = circuits(layer, count)
            start = time.perf_counter()
            patcher.logits(CircuitMask(edges, heads), layer)
            costs[layer, count] = (time.perf_counter() - start) / count
    return costs


def per_layer_limits(graph, patcher, spent: dict, result) -> list[dict]:
    """For each start layer of a whole run: its candidates, those tested (a score in ``result``),
    the passes evaluated there, the circuits in them and their seconds (``spent``: start layer ->
    [seconds, passes, circuits]), and its limit: the tested candidates at the per-candidate cost of
    an 8-circuit pass at that layer (``per_candidate_costs``)."""
    from acdc_engine.methods.acdc import visiting_segments

    candidates: dict[int, int] = {}
    tested: dict[int, int] = {}
    for segment in visiting_segments(graph):
        layer = segment.start_layer
        candidates[layer] = candidates.get(layer, 0) + len(segment.candidates)
        for candidate in segment.candidates:
            scores, index = ((result.scores.head_inputs, candidate.head_input) if candidate.head_input is not None
                             else (result.scores.edges, candidate.edge))
            tested[layer] = tested.get(layer, 0) + int(not torch.isnan(scores[index]))
    costs = per_candidate_costs(graph, patcher, list(candidates), n_circuits=(8,))
    lines = []
    for layer in sorted(candidates, reverse=True):
        seconds, passes, circuits = spent.get(layer, [0.0, 0, 0])
        lines.append({"start_layer": layer, "candidates": candidates[layer], "tested": tested[layer], "passes": passes,
                      "circuits": circuits, "seconds": float(f"{seconds:.3g}"),
                      "limit_seconds": float(f"{tested[layer] * costs[layer, 8]:.3g}")})
    return lines


def pass_costs(case: str) -> list[dict]:
    """Seconds per candidate of one resumed pass at the logits, the top, middle and first layer, for
    1 and 8 circuits (``per_candidate_costs``). Then a projection of a whole exact ACDC run: every
    candidate of the visiting order at the per-candidate cost of 8-circuit passes at its start layer
    (interpolated linearly between the layers measured)."""
    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import visiting_segments
    from acdc_engine.patching import EdgePatcher

    model, task = build(case)
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    n_layers = graph.shape.n_layers
    per_candidate = per_candidate_costs(graph, patcher, [n_layers, n_layers - 1, n_layers // 2, 0])
    lines = [{"case": case, "method": "fast-pass-cost", "start_layer": layer, "circuits": count,
              "seconds_per_candidate": float(f"{seconds:.3g}")} for (layer, count), seconds in per_candidate.items()]
    measured = sorted(layer for layer, n in per_candidate if n == 8)
    projected, candidates = 0.0, 0
    for segment in visiting_segments(graph):
        lower = max(m for m in measured if m <= segment.start_layer)
        upper = min(m for m in measured if m >= segment.start_layer)
        weight = 0.0 if upper == lower else (segment.start_layer - lower) / (upper - lower)
        cost = (1 - weight) * per_candidate[lower, 8] + weight * per_candidate[upper, 8]
        projected += cost * len(segment.candidates)
        candidates += len(segment.candidates)
    lines.append({"case": case, "method": "fast-projection", "candidates": candidates,
                  "projected_seconds": float(f"{projected:.3g}"),
                  "note": "every candidate tested in 8-circuit passes at the per-candidate costs above"})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the default case")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT_CASES,
                        help=f"default: {' '.join(DEFAULT_CASES)} (opt-in: the whole GPT-2-shape run, gpt2-shape-full)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--pass-costs", action="store_true", help="only the fast engine's per-layer pass costs")
    parser.add_argument("--speedup", action="store_true",
                        help="only the fast engine's speedup over the naive reference, the two alternated in one process")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every measurement, the matmul rate included (default 1)")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "METHOD", "DECISIONS_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.one:
        case, method, out = args.one
        line = interleaved_speedup(case) if method == "speedup" else run_one(case, method, Path(out))
        print(json.dumps(line), flush=True)
        return
    info = machine()
    print(json.dumps(info), flush=True)
    cases = ["default"] if args.quick else args.cases
    if args.pass_costs:
        for case in cases:
            for line in pass_costs(case):
                print(json.dumps(line), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            naive_decisions, naive_line = None, None
            for method in ["speedup"] if args.speedup else args.methods:
                out = Path(tmp) / f"{case}-{method}.json"
                child = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--one", case, method, str(out)],
                                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if child.returncode != 0:
                    print(json.dumps({"case": case, "method": method, "error": child.stderr.strip()[-800:]}), flush=True)
                    continue
                line = json.loads(child.stdout.strip().splitlines()[-1])
                if method == "speedup":
                    print(json.dumps(line), flush=True)
                    continue
                decisions = json.loads(out.read_text())
                if method == "naive":
                    naive_decisions, naive_line = decisions, line
                if method == "fast" and naive_decisions is not None:
                    both = naive_decisions.keys() & decisions.keys()
                    line["identical_to_naive"] = bool(both) and all(naive_decisions[k] == decisions[k] for k in both)
                    line["compared_decisions"] = len(both)
                    if "warm_best_seconds" in line and "warm_best_seconds" in naive_line and "prefix_tests" not in naive_line:
                        line["speedup_vs_naive"] = round(naive_line["warm_best_seconds"] / line["warm_best_seconds"], 2)
                for rate, fraction in (("achieved_gflops", "matmul_fraction"), ("run_achieved_gflops", "run_matmul_fraction")):
                    if rate in line:
                        line[fraction] = round(line[rate] / info["matmul_gflops"], 3)
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
