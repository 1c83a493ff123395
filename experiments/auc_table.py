"""AUC of ACDC, EAP and EAP-IG against ground-truth circuits, as a Markdown table.

    python experiments/auc_table.py                    # the default cases (DEFAULT_CASES)
    python experiments/auc_table.py --case toy-induction-2l:induction:truth.json --case ...
    python experiments/auc_table.py --ablation resample zero   # a row per case and ablation
    python experiments/auc_table.py --json auc.json    # also every ROC point

A case is MODEL:TASK:TRUTH (see experiments/cases.py); one whose model, task or truth is not
available is skipped with its reason, printed under the table. Per case: ACDC's threshold sweep
(the default thresholds of ``acdc_engine.evaluation.method_comparison``, or --thresholds), EAP and EAP-IG
ranked by |score|; edge- and node-level AUC (ACDC paper's convention: trapezoid rule through the
points, (0, 0) and (1, 1)). "truth faithfulness" is the truth circuit's own normalised
faithfulness under the row's metric and ablation: how much of the model's behaviour the truth
explains (1 for a complete truth; a low value marks a truth that is only part of the mechanism).
``acdc-evaluate`` draws the curves for one case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cases import load_case, machine_line, parse_case

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.circuit import METHOD_NAMES
from acdc_engine.evaluation.method_comparison import COMPARED_METHODS, compare_methods
from acdc_engine.formats.tables import markdown_table

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", dest="cases", metavar="MODEL:TASK:TRUTH",
                   help="a case (repeat for several); default: " + ", ".join(DEFAULT_CASES))
    p.add_argument("--thresholds", type=float, nargs="+", default=None, help="ACDC's thresholds for every case")
    p.add_argument("--ablation", nargs="+", choices=("resample", "zero", "mean"), default=["resample"],
                   help="ablations to run every case under (one row each)")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's interpolation steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every case's ROC points and AUCs")
    args = p.parse_args()
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
            try:
                start = time.perf_counter()
                comparison = compare_methods(model, task, truth=truth, thresholds=args.thresholds, ablation=ablation,
                                             steps=args.steps, model_name=case.model_name)
            except AcdcError as error:
                print(f"skipped {case.spec} ({ablation}): {error}", file=sys.stderr)
                skipped.append(f"{case.spec} ({ablation}): {error}")
                continue
            s = comparison.setting
            print(f"{case.spec} ({ablation}): {time.perf_counter() - start:.1f} s", file=sys.stderr)
            aucs = {level: [f"{comparison.results[m].roc[level].auc:.3f}" for m in COMPARED_METHODS] for level in ("edge", "node")}
            rows.append([case.model_name, case.task_name, case.truth_spec, f'{s["truth_faithfulness"]:.3f}', str(s["edges"]), ablation,
                         s["metric"], s["gradient_metric"],
                         *aucs["edge"], *aucs["node"]])
            records[f"{case.spec} ({ablation})"] = comparison.to_dict()

    header = ["model", "task", "truth", "truth faithfulness", "edges", "ablation", "metric", "EAP metric",
              *(f"{METHOD_NAMES[m]} edge AUC" for m in COMPARED_METHODS), *(f"{METHOD_NAMES[m]} node AUC" for m in COMPARED_METHODS)]
    print(markdown_table(header, rows) if rows else "(no case could run)")
    print(f"\nMeasured on {machine_line()}.")
    for line in skipped:
        print(f"- skipped {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
