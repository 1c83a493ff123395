"""``acdc-mib``: write a MIB circuit-track submission folder for a model and task.

    acdc-mib --model toy-induction-2l --task induction --method acdc --out mib/
    acdc-mib --model gpt2 --task ioi --method eap-ig --metric logit_diff --out mib/
    acdc-mib --model gpt2 --task ioi --method eap-ig --layout importances --format pt --out mib/

Writes ``OUT/<task>_<model>/`` (run it once per model and task into the same OUT: MIB wants at least
two of each) with the 9 circuits at MIB's edge fractions, or (``--layout importances``, for a method
that scores every edge: EAP, EAP-IG) the importance-score file. The layout: ``acdc_engine/formats/mib.py``; how the circuits
are found: ``acdc_engine/evaluation/mib.py``. MIB evaluates with patching (``--ablation resample``, the
default) and the logit difference (``--metric logit_diff``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from acdc_engine.commands.plain import run_command
from acdc_engine.core.errors import AcdcError

if TYPE_CHECKING:
    from acdc_engine.methods import MethodSpec


def parser() -> argparse.ArgumentParser:
    from acdc_engine.formats.mib import FORMATS, LAYOUTS
    from acdc_engine.methods import METHODS

    p = argparse.ArgumentParser(prog="acdc-mib", description="Write a MIB circuit-track submission folder for a model and task.")
    p.add_argument("--model", required=True, help="a model name as acdc-discover takes it (shipped, tracr-*, a hub name, or local)")
    p.add_argument("--model-path", default=None, help="the folder of --model local")
    p.add_argument("--task", required=True, help="a built-in task (as acdc-discover's task=)")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE", help="a task parameter (repeatable), e.g. n_prompts=64")
    p.add_argument("--method", required=True, choices=tuple(METHODS))
    p.add_argument("--out", required=True, help="the submission folder (one folder per task and model goes inside)")
    p.add_argument("--layout", choices=LAYOUTS, default="circuits", help="9 circuits at MIB's fractions (default), or one importance file")
    p.add_argument("--format", choices=FORMATS, default="json", help="EAP-IG's JSON (default) or .pt layout")
    p.add_argument("--metric", default=None, help="the metric (default: the task's)")
    p.add_argument("--ablation", choices=("resample", "zero", "mean"), default="resample")
    p.add_argument("--steps", type=int, default=5, help="interpolation steps of a method that takes them (EAP-IG)")
    p.add_argument("--coarse", type=int, default=8, help="threshold methods (ACDC): log-spaced thresholds of the first sweep")
    p.add_argument("--refine", type=int, default=3, help="threshold methods (ACDC): bisection steps per fraction")
    p.add_argument("--batch-size", type=int, default=None, help="threshold methods (ACDC): candidates per pass (default: from free memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars in a terminal (never under CI; acdc_engine.core.progress)")
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
    """Find the circuits as the method's registry entry says its circuits of other sizes are made
    (``CircuitSelection``), and write the folder."""
    import torch

    from acdc_engine.resolve import resolve_task
    from acdc_engine.methods import CircuitSelection, method_spec
    from acdc_engine.models import load_model

    spec = method_spec(args.method)
    if spec.circuits is CircuitSelection.THRESHOLD and args.layout == "importances":
        raise AcdcError(
            f"--layout importances needs a score for every edge; {args.method} removes edges untested: use --layout circuits"
        )
    if args.steps < 1:
        raise AcdcError(f"--steps must be >= 1, got {args.steps}")
    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, path=args.model_path)
    model_name = args.model_path if args.model == "local" else args.model
    task = resolve_task(model, args.task, _task_params(args.task_param))
    common = dict(metric=args.metric, ablation=args.ablation, model_name=model_name, seed=args.seed, progress=args.progress)
    common.update(_method_params(spec, args))
    if spec.circuits is CircuitSelection.THRESHOLD:
        return _threshold_submission(args, model, task, model_name, common)
    return _scores_submission(args, model, task, model_name, common)


def _method_params(spec: MethodSpec, args: argparse.Namespace) -> dict[str, object]:
    """The command line's method parameters that the method takes (``--steps``: EAP-IG's)."""
    taken = {f.name for f in dataclasses.fields(spec.params)}
    return {"steps": args.steps} if "steps" in taken else {}


def _threshold_submission(args: argparse.Namespace, model, task, model_name: str, common: dict):
    """A threshold method's circuits, by the threshold search."""
    from acdc_engine.evaluation.mib import acdc_fraction_search
    from acdc_engine.formats.mib import write_submission

    search = acdc_fraction_search(
        model, task, method=args.method, coarse=args.coarse, refine=args.refine, batch_size=args.batch_size, **common
    )
    stats = search.cache
    notes = [
        f"{args.method} threshold search: {len(search.tried)} thresholds tried in {search.seconds:.1f} s, "
        f"{stats['circuits_computed']} of {stats['circuits_requested']} circuit evaluations computed "
        "(the rest shared through the MetricCache).",
        "",
        "| threshold | edges |", "|---|---|",
        *[f"| {t:.6g} | {n} |" for t, n in search.tried.items()],
    ]
    print(notes[0])
    return write_submission(args.out, args.task, model_name, circuits=search.chosen, fmt=args.format, notes=notes)


def _scores_submission(args: argparse.Namespace, model, task, model_name: str, common: dict):
    """A scoring method's circuits (the top edges of one run), or its importance file."""
    from acdc_engine.api import discover
    from acdc_engine.evaluation.method_comparison import gradient_metric_for
    from acdc_engine.evaluation.mib import top_k_circuits
    from acdc_engine.formats.mib import write_submission

    metric = args.metric or task.default_metric
    scoring = {**common, "metric": gradient_metric_for(task, metric)}  # as acdc-evaluate scores: no zero-gradient distances
    scored = discover(model, task, method=args.method, top_n=0, **scoring)
    if args.layout == "importances":
        return write_submission(args.out, args.task, model_name, importances=scored, fmt=args.format)
    chosen = top_k_circuits(model, scored, task, metric=metric, ablation=args.ablation)
    note = f"{args.method}: one scoring run with {scoring['metric']} ({scored.run['seconds']:.1f} s); top-k by |score|, measured with {metric}."
    return write_submission(args.out, args.task, model_name, circuits=chosen, fmt=args.format, notes=[note])


if __name__ == "__main__":
    sys.exit(main())
