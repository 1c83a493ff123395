"""The Python API: ``discover(model, task, ...)`` runs a circuit-discovery method and returns a Circuit.

``discover`` reads as its pipeline (its docstring); the Hydra command line
(``acdc_engine.commands.discover``) is a thin layer over it. Its arguments:

    model: a ``ModelSpec``, a TransformerLens ``TransformerBridge`` or ``HookedTransformer``
        (``acdc_engine.architecture.as_model_spec``), or a name for ``acdc_engine.models.load_model``.
    task: a built-in task name, a ``TaskData``, a dict of TaskData fields, or (clean, corrupted).
    method: a registry entry's name (``acdc_engine.methods.METHODS``): "acdc" (exact ACDC),
        "acdc-eap" (ACDC that skips edges EAP-IG rates negligible), "eap", "eap-ig",
        "eap-ig-activations", "clean-corrupted", "exact" (every edge patched alone).
    metric: "kl", "logit_diff", "prob_diff", "nll", ... (``acdc_engine.measure.metrics``); lower is
        better. None: the task's default (kl for induction).
    ablation: what a removed edge carries: "resample" (the corrupted run), "zero" or "mean".
    split_input: token and positional embeddings as two senders instead of ``input``.
    permute_corrupted_positions: under resample ablation with split_input, run the corrupted
        prompts with their positional embedding at permuted positions (seed 49), as the original
        ACDC does, so that its tracr resample circuits can be reproduced (recorded in the circuit
        file's ``method`` block); off by default.
    task_params: keyword arguments for a built-in task (e.g. ``n_prompts``).
    model_name: the name recorded in the circuit file (default: the model's config's, or ``model``
        when it is a name).
    seed: recorded in the circuit file (built-in tasks take theirs from ``task_params``).
    progress: progress bars (ACDC's candidates, EAP-IG's steps), drawn in a terminal and not under CI
        (``acdc_engine.core.progress``).
    metric_cache: a ``MetricCache`` shared by runs of one setting (e.g. a threshold sweep): circuits
        it has seen are not evaluated again; the circuit is the same as without it.
    checkpoint: a file (``acdc_engine.methods.checkpoint``) where a method that checkpoints (acdc,
        acdc-eap, and the learned masks edge-pruning, ugs, subnetwork-probing) saves its state every
        ``checkpoint_every`` candidates (training steps) or ``checkpoint_seconds`` seconds (None: not
        by that trigger), at the end, and before stopping on a non-finite metric (loss).
        If the file exists, the run resumes from it and gives the uninterrupted run's circuit; a
        file made with other settings, another model or other data is refused (AcdcError saying
        what differs).
    run_config: the settings a checkpoint is tied to (the command line passes its resolved config);
        None: this call's arguments.
    started: called once the run can start (the model and task resolved, the checkpoint accepted,
        the self-check passed), just before the method runs; the command line writes its run record
        then, so that a run refused at start writes nothing.
    threads: CPU threads for the run's tensor work; None: chosen from the work's size and the CPUs
        free to this process (``acdc_engine.core.threads``). The circuit is the same for any count.
    method_params: the method's own parameters, checked by its entry (AcdcError naming one it does
        not take): acdc: ``threshold`` (tau, default 0.05; a removal stays when it raises the metric
        by less), ``batch_size`` (candidates per forward pass; None: from free memory, at most 32,
        or a resumed checkpoint's; the circuit is the same for any size); acdc-eap: acdc's,
        ``steps`` (EAP-IG's interpolation steps, default 5) and ``skip_below`` (skip an edge when
        |EAP-IG score| < skip_below * threshold; default 0.1); eap: exactly one of ``top_n`` (keep
        the top_n edges by |score|) and ``score_threshold`` (keep |score| >= it); eap-ig: eap's and
        ``steps`` (default 5).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from acdc_engine.core.mask import CircuitMask
from acdc_engine.methods.checkpoint import Checkpoint, Checkpointer, resume_state
from acdc_engine.methods.fingerprint import Fingerprint, fingerprint
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.threads import thread_count, using_threads
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import MethodInput, MethodOutcome, MethodSpec, method_spec
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.core.task_data import TaskData
from acdc_engine.methods.arguments import check_discover_arguments, check_discover_options
from acdc_engine.resolve import Resolved, resolve

OWN_PASSES = 5  # besides a method's own: the clean and corrupted runs, full logits, circuit, empty


def model_description(model: torch.nn.Module, name: str | None, split_input: bool) -> dict[str, Any]:
    """The ``model`` block of a circuit file: ``name`` (default: the config's), the graph's shape
    and, where they are not GPT-2's, the architecture's features (``family``, ``features``,
    ``n_key_value_heads``, ``parallel_attn_mlp``)."""
    cfg = model.cfg
    extra: dict[str, Any] = {}
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        extra["n_key_value_heads"] = cfg.n_key_value_heads
    if getattr(cfg, "parallel_attn_mlp", False) and not cfg.attn_only:
        extra["parallel_attn_mlp"] = True
    shape_fields = ("attn_only=",)  # already in the block
    features = [f for f in (cfg.features() if hasattr(cfg, "features") else []) if not f.startswith(shape_fields)]
    if features:
        extra["family"] = cfg.family
        extra["features"] = features
    return {
        "name": name or cfg.model_name,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "attn_only": bool(cfg.attn_only),
        "normalization_type": cfg.normalization_type,
        "split_input": split_input,
        "dtype": str(cfg.dtype).removeprefix("torch."),
        **extra,
    }


def task_description(task: TaskData) -> dict[str, Any]:
    """The ``task`` block of a circuit file: name, prompt count and length (the padded width), read
    positions ([P], or per prompt), each prompt's real length when padded, and the builder's
    parameters."""
    padding = {"lengths": task.lengths.tolist(), "corrupted_lengths": task.corrupted_lengths.tolist()} if task.padded else {}
    return {
        "name": task.name,
        "n_prompts": int(task.clean.shape[0]),
        "n_tokens": int(task.clean.shape[1]),
        "positions": task.positions.tolist(),
        **padding,
        **task.params,
    }


def discover(
    model: torch.nn.Module | str,
    task: TaskData | str | dict | tuple = "induction",
    *,
    method: str = "acdc",
    metric: str | None = None,
    ablation: str = "resample",
    split_input: bool = False,
    permute_corrupted_positions: bool = False,
    task_params: dict[str, Any] | None = None,
    model_name: str | None = None,
    seed: int = 0,
    progress: bool = True,
    metric_cache: MetricCache | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 60.0,
    run_config: Mapping[str, Any] | None = None,
    started: Callable[[], None] | None = None,
    threads: int | None = None,
    **method_params: Any,
) -> Circuit:
    """Find the circuit of ``model`` for ``task`` with ``method`` (arguments: the module docstring):

        check     the arguments and the method's parameters, before any model loads
        resolve   the model to a ModelSpec, the task to TaskData (``acdc_engine.resolve``)
        threads   how many CPU threads the run uses (``threads``, else ``core.threads.thread_count``
                  from the work's size and the free CPUs); the caller's count is restored after
        measure   the graph, the patcher and the metric (``Measurement``; cached if asked)
        run       the method (its registry entry), resuming from and saving to ``checkpoint``
        prune     its decisions to input-to-logits paths, and measure that circuit
        describe  the circuit file's model, task, method and run blocks
    """
    start = time.perf_counter()
    spec, params = _checked_arguments(
        model, task, method, method_params, task_params, checkpoint, metric=metric, ablation=ablation, split_input=split_input,
        permute_corrupted_positions=permute_corrupted_positions, model_name=model_name, seed=seed, progress=progress,
        metric_cache=metric_cache, checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds, threads=threads,
    )
    resolved = resolve(model, task, task_params, model_name=model_name, split_input=split_input, memory=spec.memory)
    threads = thread_count(work_elements(resolved), threads)
    with using_threads(threads):
        return _discover_resolved(
            resolved, spec, params, start, threads, metric=metric, ablation=ablation, split_input=split_input,
            permute_corrupted_positions=permute_corrupted_positions, task_params=task_params, method=method, seed=seed,
            progress=progress, metric_cache=metric_cache, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds, run_config=run_config, started=started,
        )


def work_elements(resolved: Resolved) -> int:
    """The size of one pass of the run, n_prompts x n_tokens x d_model (``core.threads``)."""
    n_prompts, n_tokens = resolved.task.clean.shape
    return n_prompts * n_tokens * resolved.model.cfg.d_model


def _discover_resolved(
    resolved: Resolved, spec: MethodSpec, params: Any, start: float, threads: int, *, metric: str | None, ablation: str,
    split_input: bool, permute_corrupted_positions: bool, task_params: dict[str, Any] | None, method: str, seed: int,
    progress: bool, metric_cache: MetricCache | None, checkpoint: str | Path | None, checkpoint_every: int | None,
    checkpoint_seconds: float | None, run_config: Mapping[str, Any] | None, started: Callable[[], None] | None,
) -> Circuit:
    """``discover``'s steps after the model and task are resolved (measure, run, prune, describe)."""
    metric = metric or resolved.task.default_metric
    resumed = checkpointer = None
    if checkpoint is not None:
        settings = run_config or _run_settings(resolved, method, params, metric, ablation, split_input,
                                               permute_corrupted_positions, task_params, seed)
        resumed, checkpointer = _checkpointing(spec, checkpoint, fingerprint(settings, resolved.model, resolved.task), checkpoint_every, checkpoint_seconds, start)
    measurement = Measurement(resolved.model, resolved.task, metric, ablation, split_input, permute_corrupted_positions, threads)
    evaluate = measurement.evaluate if metric_cache is None else metric_cache.wrap(measurement.evaluate, **measurement.setting)
    inputs = MethodInput(
        graph=measurement.graph, patcher=measurement.patcher, metric=measurement.metric, metric_name=metric,
        evaluate=evaluate, ablation=ablation, progress=progress, resume=resumed.state if resumed else None, checkpointer=checkpointer,
        predict=measurement.predictor,
    )
    outcome, method_start = _run_method(spec, inputs, params, checkpointer, resumed, started)
    in_graph, metric_values = _prune_and_measure(spec, outcome, inputs, measurement)
    return Circuit(
        graph=measurement.graph, kept=outcome.kept, in_graph=in_graph, scores=outcome.scores, metric=metric_values,
        threshold=outcome.threshold,
        model=model_description(resolved.model, resolved.model_name, split_input),
        task=task_description(resolved.task),
        method={**outcome.description, **({"permute_corrupted_positions": True} if permute_corrupted_positions else {})},
        run=_run_block(outcome, measurement, seed, time.perf_counter() - (method_start if resumed else start) + (resumed.seconds if resumed else 0.0)),
    )


def _checked_arguments(
    model: Any, task: Any, method: str, method_params: dict[str, Any], task_params: Any, checkpoint: Any, **options: Any
) -> tuple[MethodSpec, Any]:
    """The method's registry entry and its parameters, once every argument of ``discover`` is
    checked (one AcdcError naming the argument); nothing is loaded or computed."""
    check_discover_options(method=method, task_params=task_params, **options)
    spec = method_spec(method)
    check_discover_arguments(
        model, task, task_params=task_params, checkpoint=checkpoint,
        threshold=method_params.get("threshold", 0.0), uses_threshold="threshold" in method_params,
    )
    return spec, spec.parse(method_params)


def _run_method(
    spec: MethodSpec, inputs: MethodInput, params: Any, checkpointer: Checkpointer | None, resumed: Checkpoint | None,
    started: Callable[[], None] | None,
) -> tuple[MethodOutcome, float]:
    """The method's outcome and when it started (``started`` is called first). A run that
    checkpoints saves its state at its next step on SIGTERM (``Checkpointer.running``); a resumed
    run counts its set-up once, as the run that saved the checkpoint counted it."""
    if started is not None:
        started()
    method_start = time.perf_counter()
    if checkpointer is None:
        return spec.run(inputs, params), method_start
    if resumed is not None:
        checkpointer.started = method_start
    with checkpointer.running():
        return spec.run(inputs, params), method_start


def _prune_and_measure(
    spec: MethodSpec, outcome: MethodOutcome, inputs: MethodInput, measurement: Measurement
) -> tuple[CircuitMask, dict[str, Any]]:
    """The emitted circuit (the outcome's decisions on input-to-logits paths) and the circuit file's
    ``metric`` block measured on exactly it; the method's review sees both."""
    in_graph = on_input_to_logits_paths(measurement.graph, outcome.kept)
    metric_values = {
        "name": inputs.metric_name,
        "full": measurement.full,
        "circuit": float(inputs.evaluate(CircuitMask.stack([in_graph]), 0)[0]),
        "empty": measurement.empty(inputs.evaluate),
    }
    if spec.review is not None:
        spec.review(outcome, inputs, metric_values)
    return in_graph, metric_values


def _run_settings(
    resolved: Resolved, method: str, params: Any, metric: str, ablation: str, split_input: bool,
    permute_corrupted_positions: bool, task_params: Mapping[str, Any] | None, seed: int,
) -> dict[str, Any]:
    """The settings a checkpoint is tied to when the caller gives none: this call's arguments."""
    return {
        "method": method, **dataclasses.asdict(params), "metric": metric, "ablation": ablation,
        "split_input": split_input, **({"permute_corrupted_positions": True} if permute_corrupted_positions else {}),
        "task": resolved.task.name, "task_params": dict(task_params or {}),
        "model_name": resolved.model_name, "seed": seed,
    }


def _run_block(outcome: MethodOutcome, measurement: Measurement, seed: int, seconds: float) -> dict[str, Any]:
    """The circuit file's ``run`` block: seed, versions, time, passes, the method's own entries, the self-check."""
    return {
        "seed": seed,
        "versions": _versions(),
        "seconds": round(seconds, 3),
        "forward_passes": outcome.forward_passes + OWN_PASSES,
        "backward_passes": outcome.backward_passes,
        **outcome.run_block,
        "device": str(measurement.patcher.device),
        "self_check": measurement.patcher.self_check.to_dict(),
    }


def _checkpointing(
    spec: MethodSpec, path: str | Path, run_fingerprint: Fingerprint, every: int | None, seconds: float | None, started: float
) -> tuple[Checkpoint | None, Checkpointer]:
    """The checkpoint to resume from (None when ``path`` does not exist yet; AcdcError when it was
    made from other inputs, or the method takes no checkpoints) and the Checkpointer that saves this
    run's state to ``path``."""
    if not spec.checkpoints:
        raise AcdcError(f"checkpoints are for methods that save their state (ACDC, the learned masks); method '{spec.name}' takes none")
    resumed = resume_state(path, run_fingerprint) if Path(path).exists() else None
    checkpointer = Checkpointer(
        path, run_fingerprint, every, seconds, started=started,
        visited=resumed.state.visited if resumed else 0, seconds_before=resumed.seconds if resumed else 0.0,
    )
    return resumed, checkpointer


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("acdc-engine", "torch", "transformer-lens"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out
