"""``acdc-mib``: write a MIB circuit-track submission folder for a model and task.

    acdc-mib --model gpt2 --task ioi --method eap-ig --out mib/
    acdc-mib --model Llama-3.1-8B --task ioi --method acdc --out mib/
    acdc-mib --model local --model-path DIR --model-key qwen2.5 --task ioi --method eap --layout importances --out mib/
    acdc-mib --model toy-induction-2l --model-key toy --task induction --task-key induction --method acdc --out mib/

Writes ``OUT/<task>_<model>/`` named with MIB's keys (run it once per model and task into the same
OUT: MIB wants at least two of each) holding exactly what MIB reads: the 9 circuits at MIB's edge
fractions, or (``--layout importances``, for a method that scores every edge) one importance-score
file; and ``OUT/<task>_<model>.md`` beside it, how each circuit was reached and which are empty.
Every registered method runs: the score methods (eap, eap-ig, eap-ig-activations, clean-corrupted,
exact, edge-pruning) by the top-k of one scoring run, the threshold methods (acdc, acdc-eap) by a
threshold search (``acdc_engine/evaluation/mib.py``, which also says why edge-pruning is one
training run); budgets are fractions of MIB's edge count (``core.shape.eap_ig_edge_count``). The
layout: ``acdc_engine/formats/mib.py``.

Keys: ``--model`` as a ``conf/model`` choice (``gpt2``, ``Qwen2.5-0.5B``, ``gemma-2-2b``,
``Llama-3.1-8B``) or their Hugging Face ids gives MIB's key (``gpt2``, ``qwen2.5``, ``gemma2``,
``llama3``); ``--task ioi`` gives ``ioi``. A model or task without a MIB key, and none given with
``--model-key`` / ``--task-key``, is refused before anything runs (MIB cannot score a folder it
cannot name). A folder MIB's evaluator does not score (a task/model pair outside its table) is
written with a one-line warning. Each empty budgeted circuit gets a one-line warning on stderr. MIB
evaluates with patching (``--ablation resample``, the default) and the logit difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from acdc_engine.commands.plain import run_command
from acdc_engine.core.errors import AcdcError

if TYPE_CHECKING:
    from acdc_engine.core.task_data import TaskData
    from acdc_engine.formats.mib import Submission
    from acdc_engine.methods import MethodSpec

PROG = "acdc-mib"
RESERVED_PARAMS = {
    "threshold": "acdc-mib's threshold search sets it",
    "top_n": "acdc-mib selects each budget's edges",
    "score_threshold": "acdc-mib selects each budget's edges",
    "batch_size": "use --batch-size",
    "steps": "use --steps",
}
"""Method parameters ``--method-param`` does not take, and why."""


def parser() -> argparse.ArgumentParser:
    from acdc_engine.formats.mib import FORMATS, LAYOUTS
    from acdc_engine.methods import METHODS

    p = argparse.ArgumentParser(prog=PROG, description="Write a MIB circuit-track submission folder for a model and task.")
    p.add_argument("--model", required=True, help="a model as acdc-discover takes it (a conf/model choice, a hub name, or local)")
    p.add_argument("--model-path", default=None, help="the folder of --model local")
    p.add_argument("--model-key", default=None, help="MIB's model key for the folder name (gpt2, qwen2.5, gemma2, llama3, "
                   "interpbench); needed when --model has none (local folders, toy models)")
    p.add_argument("--task", required=True, help="a built-in task (as acdc-discover's task=)")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE", help="a task parameter (repeatable), e.g. n_prompts=64")
    p.add_argument("--task-key", default=None, help="MIB's task name for the folder name (ioi, mcqa, arithmetic_addition, "
                   "arithmetic_subtraction, arc_easy, arc_challenge); needed when --task has none")
    p.add_argument("--method", required=True, choices=tuple(METHODS))
    p.add_argument("--method-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter (repeatable), e.g. target_sparsity=0.95 for edge-pruning")
    p.add_argument("--out", required=True, help="the submission folder (one folder per task and model goes inside)")
    p.add_argument("--layout", choices=LAYOUTS, default="circuits", help="9 circuits at MIB's fractions (default), or one importance file")
    p.add_argument("--format", choices=FORMATS, default="json", help="EAP-IG's JSON (default) or .pt layout")
    p.add_argument("--metric", default=None, help="the metric (default: the task's)")
    p.add_argument("--ablation", choices=("resample", "zero", "mean"), default="resample")
    p.add_argument("--steps", type=int, default=None,
                   help="the method's steps (EAP-IG's interpolation steps, edge-pruning's training steps; default: the method's)")
    p.add_argument("--coarse", type=int, default=8, help="threshold methods (ACDC): log-spaced thresholds of the first sweep")
    p.add_argument("--refine", type=int, default=3, help="threshold methods (ACDC): bisection steps per fraction")
    p.add_argument("--batch-size", type=int, default=None,
                   help="candidates per pass of a method that takes it (acdc, acdc-eap, exact; default: from free memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars in a terminal (never under CI; acdc_engine.core.progress)")
    return p


def _key_values(pairs: list[str], option: str) -> dict[str, object]:
    """``KEY=VALUE`` pairs as a dict, each value read as YAML (``64`` an int, ``0.9`` a float)."""
    import yaml

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AcdcError(f"{option} {pair!r}: expected KEY=VALUE")
        params[key] = yaml.safe_load(value)
    return params


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def submit() -> str:
        from acdc_engine.formats.mib import empty_warning

        submission = run(args)
        for chosen in submission.empty:
            warn(empty_warning(chosen))
        files = ", ".join(p.name for p in submission.files)
        return f"MIB submission folder: {submission.folder} ({files}); described in {submission.description}"

    return run_command(PROG, submit)


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> Submission:
    """Find the circuits as the method's registry entry says its circuits of other sizes are made
    (``CircuitSelection``), and write the folder; every refusal comes before the method runs."""
    import torch

    from acdc_engine.formats.mib import check_folder, mib_folder
    from acdc_engine.methods import CircuitSelection, method_spec
    from acdc_engine.models import load_model
    from acdc_engine.resolve import resolve_task

    spec = method_spec(args.method)
    if spec.circuits is CircuitSelection.THRESHOLD and args.layout == "importances":
        raise AcdcError(
            f"--layout importances needs a score for every edge; {args.method} removes edges untested: use --layout circuits"
        )
    params = _method_params(spec, args)
    model_key = _model_key(args)
    torch.manual_seed(args.seed)
    model_name = args.model_path if args.model == "local" else _load_name(args.model)
    model = load_model(_load_name(args.model), device=args.device, path=args.model_path)
    task = resolve_task(model, args.task, _key_values(args.task_param, "--task-param"))
    keys = _task_key(args, task), model_key
    check_folder(args.out, mib_folder(*keys))
    _warn_if_unscored(mib_folder(*keys))
    common = dict(metric=args.metric, ablation=args.ablation, model_name=model_name, seed=args.seed, progress=args.progress, **params)
    if spec.circuits is CircuitSelection.THRESHOLD:
        return _threshold_submission(args, model, task, keys, common)
    return _scores_submission(args, model, task, keys, common)


def _method_params(spec: MethodSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The method's parameters from ``--method-param``, ``--steps`` and ``--batch-size``, checked
    by the method's entry (with the selection acdc-mib makes); AcdcError naming the option otherwise."""
    from acdc_engine.methods import CircuitSelection

    given = _key_values(args.method_param, "--method-param")
    for key in given:
        if key in RESERVED_PARAMS:
            raise AcdcError(f"--method-param {key}: {RESERVED_PARAMS[key]}")
    taken = {f.name for f in dataclasses.fields(spec.params)}
    for option, key, value in (("--steps", "steps", args.steps), ("--batch-size", "batch_size", args.batch_size)):
        if value is not None and key not in taken:
            raise AcdcError(f"{option}: method '{spec.name}' takes no {key}")
        if value is not None:
            given[key] = value
    selection = {"top_n": 0} if spec.circuits is CircuitSelection.SCORES else {}
    spec.parse({**given, **selection})
    return given


def _load_name(model: str) -> str:
    """The name ``load_model`` takes for ``--model``: a ``conf/model`` choice's ``name`` (e.g.
    ``Llama-3.1-8B`` -> ``meta-llama/Llama-3.1-8B``), any other name as it is."""
    import yaml

    from acdc_engine.commands.hydra_help import CONF_DIR

    path = CONF_DIR / "model" / f"{model}.yaml"
    if model in ("local", "random") or not path.is_file():
        return model
    return str(yaml.safe_load(path.read_text()).get("name", model))


def _model_key(args: argparse.Namespace) -> str:
    """``--model-key``, else MIB's key of ``--model`` or its hub name; AcdcError naming --model-key."""
    from acdc_engine.formats.mib import MIB_MODELS, check_model_key, model_key

    if args.model_key is not None:
        return check_model_key(args.model_key)
    key = model_key(args.model) or model_key(_load_name(args.model))
    if key is None:
        named = args.model_path if args.model == "local" else args.model
        raise AcdcError(f"model '{named}' has no MIB model key ({', '.join(MIB_MODELS)}): give one with --model-key KEY")
    return key


def _task_key(args: argparse.Namespace, task: TaskData) -> str:
    """``--task-key``, else MIB's name of ``--task``, of the built task, or of the MIB dataset task
    ``mib`` reads (``task.dataset``); AcdcError naming --task-key."""
    from acdc_engine.formats.mib import MIB_TASKS, check_task_key, task_key

    if args.task_key is not None:
        return check_task_key(args.task_key)
    key = task_key(args.task) or task_key(task.name) or task_key(str(task.params.get("dataset", "")))
    if key is None:
        raise AcdcError(f"task '{args.task}' has no MIB task name ({', '.join(MIB_TASKS)}): give one with --task-key KEY")
    return key


def _warn_if_unscored(folder: str) -> None:
    """One warning line when MIB's evaluator does not score ``folder`` (not in its table of pairs)."""
    from acdc_engine.formats.mib import MIB_FOLDERS

    if folder not in MIB_FOLDERS:
        warn(f"MIB's evaluator skips a folder named {folder}: it scores only its task/model pairs "
             f"({', '.join(MIB_FOLDERS)})")


def _threshold_submission(args: argparse.Namespace, model, task, keys: tuple[str, str], common: dict) -> Submission:
    """A threshold method's circuits, by the threshold search; ``keys``: MIB's (task, model) keys."""
    from acdc_engine.evaluation.mib import acdc_fraction_search
    from acdc_engine.formats.mib import write_submission

    batch_size = common.pop("batch_size", None)
    search = acdc_fraction_search(model, task, method=args.method, coarse=args.coarse, refine=args.refine, batch_size=batch_size, **common)
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
    return write_submission(args.out, *keys, circuits=search.chosen, fmt=args.format, notes=notes)


def _scores_submission(args: argparse.Namespace, model, task, keys: tuple[str, str], common: dict) -> Submission:
    """A score method's circuits (the top edges of one scoring run), or its importance file;
    ``keys``: MIB's (task, model) keys."""
    from acdc_engine.api import discover
    from acdc_engine.evaluation.method_comparison import gradient_metric_for
    from acdc_engine.evaluation.mib import top_k_circuits
    from acdc_engine.formats.mib import write_submission
    from acdc_engine.methods import method_spec

    metric = args.metric or task.default_metric
    scoring = {**common, "metric": gradient_metric_for(task, metric)}  # as acdc-evaluate scores: no zero-gradient distances
    scored = discover(model, task, method=args.method, top_n=0, **scoring)
    taken = {f.name for f in dataclasses.fields(method_spec(args.method).params)} - {"top_n", "score_threshold"}
    parameters = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in scored.method.items() if k in taken)
    notes = [f"{args.method}: one scoring run with {scoring['metric']}, {scored.run['seconds']:.1f} s ({parameters or 'no parameters'})."]
    if args.layout == "importances":
        return write_submission(args.out, *keys, importances=scored, fmt=args.format, notes=notes)
    chosen = top_k_circuits(model, scored, task, metric=metric, ablation=args.ablation, progress=args.progress)
    notes.append(f"Each fraction's circuit: its budget's top edges by |score|, measured with {metric}.")
    return write_submission(args.out, *keys, circuits=chosen, fmt=args.format, notes=notes)


if __name__ == "__main__":
    sys.exit(main())
