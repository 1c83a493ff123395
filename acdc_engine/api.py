"""The Python API: ``discover(model, task, ...)`` runs a circuit-discovery method and returns a Circuit.

The Hydra command line (``acdc_engine.cli``) is a thin layer over this function.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from acdc_engine.checkpoint import Checkpointer, fingerprint, resume_state
from acdc_engine.circuit import Circuit, on_input_to_logits_paths
from acdc_engine.errors import AcdcError
from acdc_engine.evaluation.metric_cache import MetricCache
from acdc_engine.graph import build_graph
from acdc_engine.methods.acdc import check_threshold, run_acdc
from acdc_engine.methods.acdc_eap import attribution_skips, check_skip_below
from acdc_engine.methods.eap import METHODS as GRADIENT_METHODS
from acdc_engine.methods.eap import check_selection, ig_alphas, run_eap, warn_if_negligible
from acdc_engine.metrics import at_least_float32, make_metric
from acdc_engine.patching import EdgePatcher
from acdc_engine.tasks import TaskData, make_task
from acdc_engine.validation import check_discover_arguments, check_task_fits

ACDC_METHODS = ("acdc", "acdc-eap")  # the methods that prune by exact ACDC
METHODS = (*ACDC_METHODS, *GRADIENT_METHODS)
OWN_PASSES = 5  # besides a method's own: the clean and corrupted runs, full logits, circuit, empty


def _as_task(task: Any, model: torch.nn.Module, task_params: dict[str, Any]) -> TaskData:
    if isinstance(task, TaskData):
        return task
    if isinstance(task, str):
        return make_task(task, model, **task_params)
    if isinstance(task, dict):
        return TaskData(name=task.get("name", "custom"), **{k: v for k, v in task.items() if k != "name"})
    if isinstance(task, (tuple, list)) and len(task) == 2:
        return TaskData(name="custom", clean=task[0], corrupted=task[1])
    raise AcdcError(f"task must be a task name, a TaskData, a dict or a (clean, corrupted) pair; got {type(task).__name__}")


def model_description(model: torch.nn.Module, name: str | None, split_input: bool) -> dict[str, Any]:
    """The ``model`` block of a circuit file: ``name`` (default: the config's) and the graph's shape."""
    cfg = model.cfg
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
    }


def discover(
    model: torch.nn.Module | str,
    task: TaskData | str | dict | tuple = "induction",
    *,
    method: str = "acdc",
    threshold: float = 0.05,
    metric: str | None = None,
    ablation: str = "resample",
    split_input: bool = False,
    batch_size: int | None = None,
    steps: int = 5,
    top_n: int | None = None,
    score_threshold: float | None = None,
    skip_below: float = 0.1,
    task_params: dict[str, Any] | None = None,
    model_name: str | None = None,
    seed: int = 0,
    progress: bool = True,
    metric_cache: MetricCache | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 60.0,
    run_config: Mapping[str, Any] | None = None,
) -> Circuit:
    """Find the circuit of ``model`` for ``task``.

    Args:
        model: a ``HookedTransformer``, or a name for ``acdc_engine.models.load_model``.
        task: a built-in task name, a ``TaskData``, a dict of TaskData fields, or (clean, corrupted).
        method: "acdc" (exact ACDC), "eap" (edge attribution patching), "eap-ig" (EAP with
            integrated gradients over the input embeddings; see ``acdc_engine.methods.eap``) or
            "acdc-eap" (ACDC that skips edges EAP-IG rates negligible; ``acdc_engine.methods.acdc_eap``).
        threshold: ACDC's tau: a removal stays when it raises the metric by less than this (acdc, acdc-eap).
        metric: "kl", "logit_diff", "prob_diff" or "nll" (``acdc_engine.metrics``); lower is better.
            None: the task's default (kl for induction).
        ablation: what a removed edge carries: "resample" (the corrupted run), "zero" or "mean".
        split_input: token and positional embeddings as two senders instead of ``input``.
        batch_size: candidates evaluated per forward pass (speculatively; the circuit is the same
            for any size); None chooses from free memory (at most 32), or keeps a resumed
            checkpoint's. acdc, acdc-eap.
        steps: EAP-IG's interpolation steps (one forward and one backward pass each); eap-ig, acdc-eap.
        top_n, score_threshold: EAP and EAP-IG keep the top_n edges by |score|, or the edges with
            |score| >= score_threshold; give exactly one.
        skip_below: acdc-eap skips an edge when its |EAP-IG score| < skip_below * threshold.
        task_params: keyword arguments for a built-in task (e.g. ``n_prompts``).
        seed: recorded in the circuit file (built-in tasks take theirs from ``task_params``).
        metric_cache: a ``MetricCache`` shared by runs of one setting (e.g. a threshold sweep):
            circuits it has seen are not evaluated again; the circuit is the same as without it.
        checkpoint: a file (``acdc_engine.checkpoint``) where ACDC saves its state every
            ``checkpoint_every`` candidates or ``checkpoint_seconds`` seconds (None: not by that
            trigger), at the end, and before stopping on a non-finite metric. If the file exists,
            the run resumes from it and gives the uninterrupted run's circuit; a file made with other
            settings, another model or other data is refused (AcdcError saying what differs).
            acdc, acdc-eap.
        run_config: the settings a checkpoint is tied to (the command line passes its resolved
            config); None: this call's arguments.
    """
    start = time.perf_counter()
    check_discover_arguments(
        model, task, task_params=task_params, checkpoint=checkpoint, threshold=threshold, uses_threshold=method in ACDC_METHODS
    )
    if method not in METHODS:
        raise AcdcError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if method in ACDC_METHODS:
        threshold = check_threshold(threshold)
    if method == "acdc-eap":
        check_skip_below(skip_below)
    if method != "acdc":
        ig_alphas(steps)  # AcdcError on a bad step count, before the model loads
    if isinstance(model, str):
        from acdc_engine.models import load_model

        model_name = model_name or model
        model = load_model(model)
    check_task_fits(model, task, task_params, split_input=split_input)  # a built-in task, before it is built
    task_data = _as_task(task, model, dict(task_params or {}))
    check_task_fits(model, task_data, split_input=split_input)
    task_data.check_vocabulary(model.cfg.d_vocab)
    metric = metric or task_data.default_metric
    if task_data.clean.shape[1] > model.cfg.n_ctx:
        raise AcdcError(f"prompts have {task_data.clean.shape[1]} tokens; the model's context is {model.cfg.n_ctx}")
    resumed = checkpointer = None
    if checkpoint is not None:
        if method in GRADIENT_METHODS:
            raise AcdcError(f"checkpoints are for ACDC runs; method '{method}' takes none")
        if run_config is None:
            run_config = {
                "method": method, "threshold": threshold, "metric": metric, "ablation": ablation,
                "split_input": split_input, "task": task_data.name, "task_params": task_params or {},
                "model_name": model_name, "seed": seed,
                **({"steps": steps, "skip_below": skip_below} if method == "acdc-eap" else {}),
            }
        run_fingerprint = fingerprint(run_config, model, task_data)
        resumed = resume_state(checkpoint, run_fingerprint) if Path(checkpoint).exists() else None
        checkpointer = Checkpointer(
            checkpoint, run_fingerprint, checkpoint_every, checkpoint_seconds, started=start,
            position=resumed.state.position if resumed else 0, seconds_before=resumed.seconds if resumed else 0.0,
        )

    graph = build_graph(model.cfg, split_input=split_input)
    if method in GRADIENT_METHODS:
        check_selection(graph, top_n, score_threshold)  # before the patcher's forward passes
    patcher = EdgePatcher(model, graph, task_data.clean, task_data.corrupted, task_data.positions, ablation)
    full_edges, full_heads = graph.full_edge_mask(), graph.full_head_input_mask()
    # the full model's logits through the same pass ACDC's first evaluation uses: metric(full) is exact
    full_logits = patcher.logits(full_edges, full_heads, start_layer=graph.shape.n_layers)
    metric_fn = make_metric(metric, task_data, at_least_float32(full_logits))

    def evaluate(edge_masks: torch.Tensor, head_input_masks: torch.Tensor, start_layer: int = 0) -> torch.Tensor:
        logits = patcher.logits(edge_masks, head_input_masks, start_layer)
        return metric_fn(at_least_float32(logits)).double().cpu()

    if metric_cache is not None:
        evaluate = metric_cache.wrap(evaluate, model=model, task=task_data, metric=metric, ablation=ablation, split_input=split_input)

    task_description = {
        "name": task_data.name,
        "n_prompts": int(task_data.clean.shape[0]),
        "n_tokens": int(task_data.clean.shape[1]),
        "positions": task_data.positions.tolist(),
        **task_data.params,
    }
    if method in GRADIENT_METHODS:
        scored = run_eap(
            patcher,
            metric_fn,
            method=method,
            steps=steps,
            top_n=top_n,
            score_threshold=score_threshold,
            metric_name=metric,
        )
        edge_kept, head_input_kept = scored.edge_kept, full_heads
        head_input_scores = torch.full(full_heads.shape, math.nan, dtype=torch.float64)
        method_description = {"name": method, "ablation": ablation, "top_n": top_n, "score_threshold": score_threshold}
        if method == "eap-ig":
            method_description.update(steps=steps, integration="right Riemann, from the ablated input embeddings")
        run = {"forward_passes": scored.forward_passes + OWN_PASSES, "backward_passes": scored.backward_passes}
        threshold = score_threshold
    else:
        if batch_size is None:  # a resumed run keeps its batching: its file is then the uninterrupted one's
            batch_size = resumed.state.batch_size if resumed else patcher.auto_batch_size()
        skip, attribution_passes = None, 0
        method_description = {"name": method, "ablation": ablation, "order": "reference"}
        if method == "acdc-eap":
            skip, _ = attribution_skips(patcher, metric_fn, threshold, skip_below, steps)
            attribution_passes = len(ig_alphas(steps))
            method_description.update(steps=steps, skip_below=skip_below, edges_skipped=int(skip.sum()))
        scored = run_acdc(
            graph, evaluate, threshold, batch_size=batch_size, progress=progress, skip=skip,
            resume=resumed.state if resumed else None, checkpointer=checkpointer,
        )
        edge_kept, head_input_kept, head_input_scores = scored.edge_kept, scored.head_input_kept, scored.head_input_scores
        run = {
            "forward_passes": scored.forward_passes + attribution_passes + OWN_PASSES,
            "backward_passes": attribution_passes,
            "candidates_tested": scored.candidates_tested,
            "batch_size": batch_size,
        }
    edge_in_graph, head_in_graph = on_input_to_logits_paths(graph, edge_kept, head_input_kept)
    metric_values = {
        "name": metric,
        "full": float(metric_fn(at_least_float32(full_logits[None])).double()[0]),
        "circuit": float(evaluate(edge_in_graph[None], head_in_graph[None])[0]),
        "empty": float(evaluate(torch.zeros_like(full_edges)[None], torch.zeros_like(full_heads)[None])[0]),
    }
    if method in GRADIENT_METHODS:
        warn_if_negligible(method, metric, scored.edge_scores, metric_values["full"], metric_values["empty"])
    return Circuit(
        graph=graph,
        edge_kept=edge_kept,
        head_input_kept=head_input_kept,
        edge_in_graph=edge_in_graph,
        head_input_in_graph=head_in_graph,
        edge_scores=scored.edge_scores,
        head_input_scores=head_input_scores,
        metric=metric_values,
        threshold=threshold,
        model=model_description(model, model_name, split_input),
        task=task_description,
        method=method_description,
        run={
            "seed": seed,
            "versions": _versions(),
            "seconds": round(time.perf_counter() - start + (resumed.seconds if resumed else 0.0), 3),
            **run,
            "device": str(patcher.device),
        },
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("acdc-engine", "torch", "transformer-lens"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out
