"""``acdc-mib``: write a MIB circuit-track submission folder for a model and task.

    acdc-mib --model toy-induction-2l --task induction --method acdc --out mib/
    acdc-mib --model gpt2 --task ioi --method eap-ig --metric logit_diff --out mib/
    acdc-mib --model gpt2 --task ioi --method eap-ig --layout importances --format pt --out mib/

Writes ``OUT/<task>_<model>/`` (run it once per model and task into the same OUT: MIB wants at least
two of each) with the 9 circuits at MIB's edge fractions, or (``--layout importances``, EAP and
EAP-IG) the importance-score file. The layout and how ACDC's fractions are reached:
``acdc_engine/interchange/mib.py``. MIB evaluates with patching (``--ablation resample``, the
default) and the logit difference (``--metric logit_diff``).
"""

from __future__ import annotations

import argparse
import sys

from acdc_engine.errors import AcdcError, run_command

METHODS = ("acdc", "eap", "eap-ig")


def parser() -> argparse.ArgumentParser:
    from acdc_engine.interchange.mib import FORMATS, LAYOUTS

    p = argparse.ArgumentParser(prog="acdc-mib", description="Write a MIB circuit-track submission folder for a model and task.")
    p.add_argument("--model", required=True, help="a model name as acdc-discover takes it (shipped, tracr-*, a hub name, or local)")
    p.add_argument("--model-path", default=None, help="the folder of --model local")
    p.add_argument("--task", required=True, help="a built-in task (as acdc-discover's task=)")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE", help="a task parameter (repeatable), e.g. n_prompts=64")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, help="the submission folder (one folder per task and model goes inside)")
    p.add_argument("--layout", choices=LAYOUTS, default="circuits", help="9 circuits at MIB's fractions (default), or one importance file")
    p.add_argument("--format", choices=FORMATS, default="json", help="EAP-IG's JSON (default) or .pt layout")
    p.add_argument("--metric", default=None, help="the metric (default: the task's)")
    p.add_argument("--ablation", choices=("resample", "zero", "mean"), default="resample")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's interpolation steps")
    p.add_argument("--coarse", type=int, default=8, help="ACDC: log-spaced thresholds of the first sweep")
    p.add_argument("--refine", type=int, default=3, help="ACDC: bisection steps per fraction")
    p.add_argument("--batch-size", type=int, default=None, help="ACDC: candidates per pass (default: from free memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    return p


def _task_params(pairs: list[str]) -> dict[str, object]:
    import yaml

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AcdcError(f"--task-param {pair!r}: expected KEY=VALUE")
        params[key] = yaml.safe_load(value)
    return params


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def submit() -> str:
        submission = run(args)
        return f"MIB submission folder: {submission.folder} ({', '.join(p.name for p in submission.files)})"

    return run_command("acdc-mib", submit)


def run(args: argparse.Namespace):
    import torch

    from acdc_engine.api import discover
    from acdc_engine.measurement import resolve_task
    from acdc_engine.interchange.mib import acdc_fraction_search, top_k_circuits, write_submission
    from acdc_engine.models import load_model

    if args.method == "acdc" and args.layout == "importances":
        raise AcdcError("--layout importances needs a score for every edge; ACDC removes edges untested: use --layout circuits")
    if args.steps < 1:
        raise AcdcError(f"--steps must be >= 1, got {args.steps}")
    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, path=args.model_path)
    model_name = args.model_path if args.model == "local" else args.model
    task = resolve_task(model, args.task, _task_params(args.task_param))
    common = dict(metric=args.metric, ablation=args.ablation, model_name=model_name, seed=args.seed, progress=args.progress)
    if args.method == "acdc":
        search = acdc_fraction_search(model, task, coarse=args.coarse, refine=args.refine, batch_size=args.batch_size, **common)
        stats = search.cache
        notes = [
            f"ACDC threshold search: {len(search.tried)} thresholds tried in {search.seconds:.1f} s, "
            f"{stats['circuits_computed']} of {stats['circuits_requested']} circuit evaluations computed "
            "(the rest shared through the MetricCache).",
            "",
            "| threshold | edges |", "|---|---|",
            *[f"| {t:.6g} | {n} |" for t, n in search.tried.items()],
        ]
        print(notes[0])
        return write_submission(args.out, args.task, model_name, circuits=search.chosen, fmt=args.format, notes=notes)
    from acdc_engine.evaluation.method_comparison import gradient_metric_for

    metric = args.metric or task.default_metric
    scoring = {**common, "metric": gradient_metric_for(task, metric)}  # as acdc-evaluate scores: no zero-gradient distances
    steps = {"steps": args.steps} if args.method == "eap-ig" else {}  # EAP is one pass
    scored = discover(model, task, method=args.method, top_n=0, **steps, **scoring)
    if args.layout == "importances":
        return write_submission(args.out, args.task, model_name, importances=scored, fmt=args.format)
    chosen = top_k_circuits(model, scored, task, metric=metric, ablation=args.ablation)
    note = f"{args.method}: one scoring run with {scoring['metric']} ({scored.run['seconds']:.1f} s); top-k by |score|, measured with {metric}."
    return write_submission(args.out, args.task, model_name, circuits=chosen, fmt=args.format, notes=[note])


if __name__ == "__main__":
    sys.exit(main())
