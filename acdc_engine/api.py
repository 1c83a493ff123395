"""The Python API: ``discover(model, task, ...)`` runs a circuit-discovery method and returns a Circuit.

``discover`` is the same six steps for every method: check the method's parameters (its registry
entry, ``acdc_engine.methods``), resolve the model and the task, set up checkpointing (methods that
checkpoint), build the measurement (graph, patcher, metric: ``acdc_engine.measurement``), run the
method, then prune its decisions to input-to-logits paths and measure the emitted circuit. The
Hydra command line (``acdc_engine.cli``) is a thin layer over this function.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from acdc_engine.checkpoint import Checkpoint, Checkpointer, Fingerprint, fingerprint, resume_state
from acdc_engine.circuit import Circuit
from acdc_engine.errors import AcdcError
from acdc_engine.measurement import Measurement, resolve_task
from acdc_engine.methods import MethodInput, method_spec
from acdc_engine.metric_cache import MetricCache
from acdc_engine.pruning import on_input_to_logits_paths
from acdc_engine.tasks import TaskData
from acdc_engine.argument_checks import check_discover_arguments, check_discover_options, check_precision, check_task_fits

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
    """The ``task`` block of a circuit file: name, prompt count and length, read positions, and the
    builder's parameters."""
    return {
        "name": task.name,
        "n_prompts": int(task.clean.shape[0]),
        "n_tokens": int(task.clean.shape[1]),
        "positions": task.positions.tolist(),
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
    **method_params: Any,
) -> Circuit:
    """Find the circuit of ``model`` for ``task``.

    Args:
        model: a ``ModelSpec``, a TransformerLens ``TransformerBridge`` or ``HookedTransformer``
            (``acdc_engine.architecture.as_model_spec``), or a name for ``acdc_engine.models.load_model``.
        task: a built-in task name, a ``TaskData``, a dict of TaskData fields, or (clean, corrupted).
        method: "acdc" (exact ACDC), "acdc-eap" (ACDC that skips edges EAP-IG rates negligible),
            "eap" (edge attribution patching) or "eap-ig" (EAP with integrated gradients); see
            ``acdc_engine.methods``.
        metric: "kl", "logit_diff", "prob_diff", "nll", ... (``acdc_engine.metrics``); lower is
            better. None: the task's default (kl for induction).
        ablation: what a removed edge carries: "resample" (the corrupted run), "zero" or "mean".
        split_input: token and positional embeddings as two senders instead of ``input``.
        permute_corrupted_positions: under resample ablation with split_input, run the corrupted
            prompts with their positional embedding at permuted positions (seed 49), as the original
            ACDC does, so that its tracr resample circuits can be reproduced (recorded in the
            circuit file's ``method`` block); off by default.
        task_params: keyword arguments for a built-in task (e.g. ``n_prompts``).
        model_name: the name recorded in the circuit file (default: the model's config's, or ``model``
            when it is a name).
        seed: recorded in the circuit file (built-in tasks take theirs from ``task_params``).
        progress: show a progress bar (ACDC).
        metric_cache: a ``MetricCache`` shared by runs of one setting (e.g. a threshold sweep):
            circuits it has seen are not evaluated again; the circuit is the same as without it.
        checkpoint: a file (``acdc_engine.checkpoint``) where a method that checkpoints (acdc,
            acdc-eap) saves its state every ``checkpoint_every`` candidates or
            ``checkpoint_seconds`` seconds (None: not by that trigger), at the end, and before
            stopping on a non-finite metric. If the file exists, the run resumes from it and gives
            the uninterrupted run's circuit; a file made with other settings, another model or
            other data is refused (AcdcError saying what differs).
        run_config: the settings a checkpoint is tied to (the command line passes its resolved
            config); None: this call's arguments.
        started: called once the run can start (the model and task resolved, the checkpoint
            accepted, the self-check passed), just before the method runs; the command line writes
            its run record then, so that a run refused at start writes nothing.
        method_params: the method's own parameters, checked by its entry (AcdcError naming one it
            does not take):
            acdc: ``threshold`` (tau, default 0.05; a removal stays when it raises the metric by
                less), ``batch_size`` (candidates per forward pass; None: from free memory, at most
                32, or a resumed checkpoint's; the circuit is the same for any size);
            acdc-eap: acdc's, ``steps`` (EAP-IG's interpolation steps, default 5) and
                ``skip_below`` (skip an edge when |EAP-IG score| < skip_below * threshold; default 0.1);
            eap: exactly one of ``top_n`` (keep the top_n edges by |score|) and ``score_threshold``
                (keep |score| >= it);
            eap-ig: eap's and ``steps`` (default 5).
    """
    start = time.perf_counter()
    check_discover_options(
        method=method, metric=metric, ablation=ablation, split_input=split_input,
        permute_corrupted_positions=permute_corrupted_positions, task_params=task_params, model_name=model_name,
        seed=seed, progress=progress, metric_cache=metric_cache, checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
    )
    spec = method_spec(method)
    check_discover_arguments(
        model, task, task_params=task_params, checkpoint=checkpoint,
        threshold=method_params.get("threshold", 0.0), uses_threshold="threshold" in method_params,
    )
    params = spec.parse(method_params)  # before the model loads
    if isinstance(model, str):
        from acdc_engine.models import load_model

        model_name = model_name or model
        model = load_model(model)
    from acdc_engine.architecture import as_model_spec

    model = as_model_spec(model)
    check_precision(model)
    check_task_fits(model, task, task_params, split_input=split_input)  # a built-in task, before it is built
    task_data = resolve_task(model, task, task_params)
    check_task_fits(model, task_data, split_input=split_input)
    metric = metric or task_data.default_metric
    resumed = checkpointer = None
    if checkpoint is not None:
        if not spec.checkpoints:
            raise AcdcError(f"checkpoints are for ACDC runs; method '{method}' takes none")
        if run_config is None:
            run_config = {
                "method": method, **dataclasses.asdict(params), "metric": metric, "ablation": ablation,
                "split_input": split_input, **({"permute_corrupted_positions": True} if permute_corrupted_positions else {}),
                "task": task_data.name, "task_params": task_params or {},
                "model_name": model_name, "seed": seed,
            }
        resumed, checkpointer = _checkpointing(
            checkpoint, fingerprint(run_config, model, task_data), checkpoint_every, checkpoint_seconds, start
        )

    measurement = Measurement(model, task_data, metric, ablation, split_input, permute_corrupted_positions)
    evaluate = measurement.evaluate
    if metric_cache is not None:
        evaluate = metric_cache.wrap(evaluate, model=model, task=task_data, metric=metric, ablation=ablation, split_input=split_input)
    inputs = MethodInput(
        graph=measurement.graph, patcher=measurement.patcher, metric=measurement.metric, metric_name=metric,
        evaluate=evaluate, ablation=ablation, progress=progress,
        resume=resumed.state if resumed else None, checkpointer=checkpointer,
    )
    if started is not None:
        started()
    method_start = time.perf_counter()
    if checkpointer is None:
        outcome = spec.run(inputs, params)
    else:
        if resumed is not None:  # the set-up was counted once, by the run that saved the checkpoint
            checkpointer.started = method_start
        with checkpointer.running():  # a SIGTERM saves the state at the next step (checkpoint.stop_on_signal)
            outcome = spec.run(inputs, params)

    graph = measurement.graph
    edge_in_graph, head_in_graph = on_input_to_logits_paths(graph, outcome.edge_kept, outcome.head_input_kept)
    metric_values = {
        "name": metric,
        "full": measurement.full,
        "circuit": float(evaluate(edge_in_graph[None], head_in_graph[None])[0]),
        "empty": measurement.empty(evaluate),
    }
    if spec.review is not None:
        spec.review(outcome, inputs, metric_values)
    return Circuit(
        graph=graph,
        edge_kept=outcome.edge_kept,
        head_input_kept=outcome.head_input_kept,
        edge_in_graph=edge_in_graph,
        head_input_in_graph=head_in_graph,
        edge_scores=outcome.edge_scores,
        head_input_scores=outcome.head_input_scores,
        metric=metric_values,
        threshold=outcome.threshold,
        model=model_description(model, model_name, split_input),
        task=task_description(task_data),
        method={**outcome.description, **({"permute_corrupted_positions": True} if permute_corrupted_positions else {})},
        run={
            "seed": seed,
            "versions": _versions(),
            "seconds": round(time.perf_counter() - (method_start if resumed else start) + (resumed.seconds if resumed else 0.0), 3),
            "forward_passes": outcome.forward_passes + OWN_PASSES,
            "backward_passes": outcome.backward_passes,
            **outcome.run_block,
            "device": str(measurement.patcher.device),
            "self_check": measurement.patcher.self_check.to_dict(),
        },
    )


def _checkpointing(
    path: str | Path, run_fingerprint: Fingerprint, every: int | None, seconds: float | None, started: float
) -> tuple[Checkpoint | None, Checkpointer]:
    """The checkpoint to resume from (None when ``path`` does not exist yet; AcdcError when it was
    made from other inputs) and the Checkpointer that saves this run's state to ``path``."""
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
