"""Seconds per method on each model and task, as a Markdown table.

    python experiments/timing_table.py                           # the default cases (DEFAULT_CASES)
    python experiments/timing_table.py --case toy-induction-2l:induction --sweep 8

Per case (MODEL:TASK[:TRUTH], see experiments/cases.py; unavailable cases are skipped with their
reason; a truth only sets the graph's input split, so that the graph timed is the one the AUC table
scores):
  - ACDC: one run at --threshold (default: 1% of the metric's range |m(empty) - m(full)|);
  - EAP and EAP-IG: one scoring run each (all edges scored);
  - an ACDC sweep over the default thresholds (0 and --sweep log-spaced values, see
    ``acdc_engine.evaluation.method_comparison.default_thresholds``), once as plain runs and once with the
    shared ``MetricCache``: the seconds of each, and the circuits and forward passes the cached
    sweep computed out of those its runs asked for (a plain sweep computes all it asks for). Both
    sweeps give identical circuits (checked here too).
Seconds are each run's own clock (``circuit.run["seconds"]``: after the model is loaded).
"""

from __future__ import annotations

import argparse
import sys

import torch

from cases import load_case, machine_line, parse_case

from acdc_engine import discover
from acdc_engine.core.errors import AcdcError
from acdc_engine.evaluation.faithfulness import CircuitEvaluator
from acdc_engine.evaluation.method_comparison import default_thresholds, gradient_metric_for
from acdc_engine.evaluation.sweep import acdc_threshold_sweep
from acdc_engine.formats.tables import markdown_table

DEFAULT_CASES = (
    "toy-induction-2l:induction",
    "tracr-reverse:tracr-reverse:tracr-reverse",
    "tracr-proportion:tracr-proportion:tracr-proportion",
)


def time_case(model, task, name: str, split_input: bool, threshold: float | None, sweep_points: int, steps: int) -> list[str]:
    evaluator = CircuitEvaluator(model, task, split_input=split_input)
    metric, scale = evaluator.metric_name, abs(evaluator.empty - evaluator.full)
    threshold = 0.01 * scale if threshold is None else threshold
    common = dict(split_input=split_input, model_name=name, progress=False)
    acdc = discover(model, task, threshold=threshold, metric=metric, **common)
    gradient_metric = gradient_metric_for(task, metric)
    eap = discover(model, task, method="eap", metric=gradient_metric, top_n=0, **common)
    eap_ig = discover(model, task, method="eap-ig", metric=gradient_metric, steps=steps, top_n=0, **common)
    thresholds = default_thresholds(scale, sweep_points)
    batch_size = acdc.run["batch_size"]
    plain = [discover(model, task, threshold=t, metric=metric, batch_size=batch_size, **common) for t in thresholds]
    cached = acdc_threshold_sweep(model, task, thresholds, metric=metric, batch_size=batch_size, **common)
    for a, b in zip(plain, cached.circuits):
        if not torch.equal(a.in_graph.edges, b.in_graph.edges):
            raise AssertionError(f"{name}: the cached sweep's circuit at threshold {a.threshold} differs from a plain run's")
    stats = cached.cache.stats()
    return [
        name, task.name, str(acdc.n_edges_total), metric, f"{threshold:.3g}", f"{acdc.run['seconds']:.2f}",
        f"{eap.run['seconds']:.2f}", f"{eap_ig.run['seconds']:.2f}", str(len(thresholds)),
        f"{sum(c.run['seconds'] for c in plain):.2f}", f"{sum(c.run['seconds'] for c in cached.circuits):.2f}",
        f"{stats['circuits_computed']} / {stats['circuits_requested']}",
        f"{stats['passes_computed']} / {stats['passes_requested']}",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", dest="cases", metavar="MODEL:TASK[:TRUTH]",
                   help="a case (repeat for several); default: " + ", ".join(DEFAULT_CASES))
    p.add_argument("--threshold", type=float, default=None, help="ACDC's threshold (default: 1%% of the metric's range)")
    p.add_argument("--sweep", type=int, default=8, help="log-spaced thresholds in the sweep, besides 0")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's interpolation steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one gives steadier timings on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows, skipped = [], []
    for case in (parse_case(spec, truth_required=False) for spec in (args.cases or DEFAULT_CASES)):
        try:
            model, task, truth = load_case(case, args.device)
            split_input = truth is not None and truth.graph.shape.split_input
            rows.append(time_case(model, task, case.model_name, split_input, args.threshold, args.sweep, args.steps))
        except AcdcError as error:
            print(f"skipped {case.spec}: {error}", file=sys.stderr)
            skipped.append(f"{case.spec}: {error}")
    header = ["model", "task", "edges", "metric", "ACDC threshold", "ACDC s", "EAP s", "EAP-IG s",
              "sweep thresholds", "sweep s (plain)", "sweep s (shared cache)", "circuits evaluated", "forward passes"]
    print(markdown_table(header, rows) if rows else "(no case could run)")
    print(f"\nMeasured on {machine_line()}.")
    for line in skipped:
        print(f"- skipped {line}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
