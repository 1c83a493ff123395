"""Every registered method against ground-truth circuits: AUC, MIB's CPR and CMD, time; a Markdown table.

    python experiments/auc_table.py                    # the default cases (DEFAULT_CASES), every method
    python experiments/auc_table.py --methods acdc eap eap-ig
    python experiments/auc_table.py --case toy-induction-2l:induction:truth.json --case ...
    python experiments/auc_table.py --ablation resample zero   # rows per case and ablation
    python experiments/auc_table.py --json auc.json    # also every ROC point

A case is MODEL:TASK:TRUTH (see experiments/cases.py); one whose model, task or truth is not
available is skipped with its reason, printed under the table. Per case and ablation, one row per
method: edge- and node-level AUC (ACDC paper's convention: trapezoid rule through the points, (0, 0)
and (1, 1); ACDC over its threshold sweep, the default thresholds of
``acdc_engine.evaluation.method_comparison``, or --thresholds; a score method over its ranking by
|score|), MIB's CPR and CMD (a score method: the top int(k * N) edges of the signed ranking for CPR
and of the absolute one for CMD, greedy for information flow routes; a threshold method: the circuits
of ``acdc-mib``'s threshold search at MIB's 9 budgets and the full model), and the method's seconds
(a threshold method: its sweep, then its MIB search). "truth f" is the truth circuit's own
normalised faithfulness under the row's metric and ablation (1 for a complete truth).
``acdc-evaluate`` draws the curves for one case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cases import load_case, machine_line, parse_case

import torch

from acdc_engine.core.circuit import METHOD_NAMES
from acdc_engine.core.errors import AcdcError
from acdc_engine.evaluation.faithfulness import CircuitEvaluator, faithfulness_of_budgeted_circuits
from acdc_engine.evaluation.method_comparison import compare_methods
from acdc_engine.evaluation.mib import acdc_fraction_search
from acdc_engine.formats.tables import markdown_table
from acdc_engine.methods import METHODS, CircuitSelection, method_spec

DEFAULT_CASES = (
    "tracr-reverse:tracr-reverse:tracr-reverse",
    "tracr-reverse:tracr-reverse:tracr-reverse-acdc-paper",
    "tracr-proportion:tracr-proportion:tracr-proportion",
    "tracr-proportion:tracr-proportion:tracr-proportion-acdc-paper",
    "tracr-hist:tracr-hist:tracr-hist",
    "tracr-sort:tracr-sort:tracr-sort",
    "toy-induction-2l:induction:toy-induction-2l",
    "toy-induction-mlp-2l:induction:toy-induction-mlp-2l",
    "toy-predecessor-2l:predecessor:toy-predecessor-2l",
)


def threshold_mib(model, task, method: str, evaluator, ablation: str, split_input: bool, model_name: str):
    """MIB's CPR and CMD of a threshold method: its ``acdc-mib`` circuits at the 9 budgets, and seconds."""
    start = time.perf_counter()
    search = acdc_fraction_search(model, task, method=method, metric=evaluator.metric_name, ablation=ablation,
                                  split_input=split_input, model_name=model_name, progress=False)
    scores = faithfulness_of_budgeted_circuits(evaluator, {c.fraction: c.circuit for c in search.chosen})
    return scores, time.perf_counter() - start


def case_rows(case, model, task, truth, ablation: str, methods: list[str], args) -> tuple[list[list[str]], dict]:
    """The rows of one case and ablation (module docstring), and its comparison as a dict."""
    comparison = compare_methods(model, task, truth=truth, methods=methods, thresholds=args.thresholds,
                                 ablation=ablation, steps=args.steps, model_name=case.model_name, progress=False)
    s = comparison.setting
    evaluator = CircuitEvaluator(model, task, s["metric"], ablation, s["split_input"])
    rows = []
    for method, r in comparison.results.items():
        mib, seconds = r.mib, r.seconds
        if method_spec(method).circuits is CircuitSelection.THRESHOLD:
            mib, search_seconds = threshold_mib(model, task, method, evaluator, ablation, s["split_input"], case.model_name)
            seconds += search_seconds
        rows.append([case.model_name, case.task_name, case.truth_spec, f'{s["truth_faithfulness"]:.3f}', ablation,
                     METHOD_NAMES.get(method, method), *(f"{r.roc[level].auc:.3f}" for level in ("edge", "node")),
                     f"{mib.cpr:.3f} ({mib.cpr_curve.basis})", f"{mib.cmd:.3f} ({mib.cmd_curve.basis})", f"{seconds:.2f}"])
    return rows, comparison.to_dict()


def summary_table(rows: list[list[str]]) -> str:
    """Per ablation and method, over the cases: mean edge and node AUC, mean CPR and CMD, total seconds."""
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for row in rows:
        groups.setdefault((row[4], row[5]), []).append(row)

    def mean(values: list[str]) -> str:
        numbers = [float(v.split()[0]) for v in values]
        return f"{sum(numbers) / len(numbers):.3f}"

    summary = [[ablation, method, str(len(group)), *(mean([r[i] for r in group]) for i in (6, 7, 8, 9)),
                f"{sum(float(r[10]) for r in group):.1f}"] for (ablation, method), group in groups.items()]
    header = ["ablation", "method", "cases", "mean edge AUC", "mean node AUC", "mean CPR", "mean CMD", "seconds (all cases)"]
    return markdown_table(header, summary)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", dest="cases", metavar="MODEL:TASK:TRUTH",
                   help="a case (repeat for several); default: " + ", ".join(DEFAULT_CASES))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--thresholds", type=float, nargs="+", default=None, help="ACDC's thresholds for every case")
    p.add_argument("--ablation", nargs="+", choices=("resample", "zero", "mean"), default=["resample"],
                   help="ablations to run every case under (rows for each)")
    p.add_argument("--steps", type=int, default=None, help="the steps of every method that takes them (default: each one's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every case's ROC points and AUCs")
    args = p.parse_args()
    torch.set_num_threads(1)
    cases = [parse_case(spec, truth_required=True) for spec in (args.cases or DEFAULT_CASES)]

    rows, skipped, records = [], [], {}
    for case in cases:
        try:
            model, task, truth = load_case(case, args.device)
        except AcdcError as error:
            print(f"skipped {case.spec}: {error}", file=sys.stderr)
            skipped.append(f"{case.spec}: {error}")
            continue
        for ablation in args.ablation:
            start = time.perf_counter()
            try:
                case_table, records[f"{case.spec} ({ablation})"] = case_rows(case, model, task, truth, ablation, args.methods, args)
            except AcdcError as error:
                print(f"skipped {case.spec} ({ablation}): {error}", file=sys.stderr)
                skipped.append(f"{case.spec} ({ablation}): {error}")
                continue
            rows += case_table
            print(f"{case.spec} ({ablation}): {time.perf_counter() - start:.1f} s", file=sys.stderr)

    header = ["model", "task", "truth", "truth f", "ablation", "method", "edge AUC", "node AUC", "CPR", "CMD", "seconds"]
    print(markdown_table(header, rows) if rows else "(no case could run)")
    if rows:
        print("\nOver the cases:\n\n" + summary_table(rows))
    print(f"\nMeasured on {machine_line()} (one torch thread).")
    for line in skipped:
        print(f"- skipped {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
