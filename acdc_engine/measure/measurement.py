"""Measuring circuits: the one path by which ``discover``, the evaluator, sweeps and faithfulness
turn a circuit into a metric value.

A ``Measurement`` fixes the setting (model, task, metric, ablation, input split), builds the graph
and the ``EdgePatcher`` (which runs the clean and corrupted prompts once) and the metric (which may
read the full model's logits, e.g. KL from them), and then gives any circuit's metric: the logits
of one patched forward pass with every edge outside the circuit patched, through the metric, in
float64. The full model's value is measured through that same pass (resumed at the last layer), so
``metric(full)`` is exactly what ACDC's first evaluation sees.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.patcher import Evaluate
from acdc_engine.core.threads import thread_count, using_threads
from acdc_engine.measure.metrics import at_least_float32, make_metric
from acdc_engine.patching import EdgePatcher
from acdc_engine.core.task_data import TaskData


class Measurement:
    """The metric of any circuit of ``model`` on ``task``, everything outside the circuit patched.

    Args:
        model: a ``ModelSpec`` (or what ``as_model_spec`` converts).
        task: the task's data (``acdc_engine.resolve``).
        metric: a metric name (``acdc_engine.measure.metrics``); None: the task's default.
        ablation: what a patched edge carries: "resample", "zero" or "mean".
        split_input: token and positional embeddings as two senders.
        permute_corrupted_positions: the original ACDC's permuted positional embedding in the
            corrupted run (``EdgePatcher``).
        threads: CPU threads for its passes; None: ``core.threads.thread_count`` of the work
            (n_prompts x n_tokens x d_model), chosen once.
        self_check: compare the patched pass with the model's own forward first (``EdgePatcher``).
    Attributes:
        model, task, ablation, split_input: the setting, as given.
        graph: the model's graph; patcher: its ``EdgePatcher``.
        metric_name: the metric's name; metric: circuit logits [C, n_prompts, P, d_vocab] -> [C].
        full: the full model's metric (float).
        predictor: an estimate of ``evaluate`` for planning ACDC's passes (``predictor``), or None.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: TaskData,
        metric: str | None = None,
        ablation: str = "resample",
        split_input: bool = False,
        permute_corrupted_positions: bool = False,
        threads: int | None = None,
        self_check: bool = True,
    ) -> None:
        self.model, self.task, self.ablation, self.split_input = model, task, ablation, split_input
        self.threads = thread_count(task.clean.numel() * model.cfg.d_model, threads)
        self.metric_name = metric or task.default_metric
        with using_threads(self.threads):
            self.patcher = EdgePatcher(
                model, task.clean, task.corrupted, task.positions, ablation,
                split_input=split_input, permute_corrupted_positions=permute_corrupted_positions,
                lengths=task.lengths, corrupted_lengths=task.corrupted_lengths, self_check=self_check,
            )
        self.graph = self.patcher.graph
        full_logits = at_least_float32(
            self.patcher.logits(self.graph.full_mask(), start_layer=self.graph.shape.n_layers)
        )
        self.metric = make_metric(self.metric_name, task, full_logits)
        self.full = float(self.metric(full_logits[None]).double()[0])
        self.predictor = predictor(model, task, self.evaluate, metric=self.metric_name, ablation=ablation, split_input=split_input,
                                   permute_corrupted_positions=permute_corrupted_positions, threads=self.threads)

    @property
    def setting(self) -> dict[str, Any]:
        """What the measurement depends on (the keywords of ``MetricCache.wrap``)."""
        return {"model": self.model, "task": self.task, "metric": self.metric_name, "ablation": self.ablation, "split_input": self.split_input}

    def evaluate(self, masks: CircuitMask, start_layer: int = 0) -> Tensor:
        """The metric of circuits ``masks`` (bool, [C, ...]) in one patched pass that may start at
        ``start_layer`` (every receiver below it intact): [C] float64 on the CPU. A circuit gets the
        same bits alone and in any batch (``EdgePatcher.logits``)."""
        with using_threads(self.threads):
            logits = self.patcher.logits(masks, start_layer)
        return self.metric(at_least_float32(logits)).double().cpu()

    def empty(self, evaluate: Evaluate | None = None) -> float:
        """The empty circuit's metric, measured by ``evaluate`` (default: ``self.evaluate``; a sweep
        passes its cached one)."""
        evaluate = evaluate or self.evaluate
        return float(evaluate(CircuitMask.stack([self.graph.empty_mask()]), 0)[0])


PREDICTOR_PROMPTS = 4
"""How many of a task's prompts ``predictor``'s subset measures on."""

PREDICTOR_BELOW = 2**17
"""The work (n_prompts x n_tokens x d_model) below which ``predictor`` offers an estimate. In small
passes the cost of a pass, not of its circuits, dominates, and probes save many passes; at GPT-2
shape (245,760) their passes cost more than the passes they save (the first 400 candidates: 14.8
to 15.8 s with the subset's probes, 12.9 s without, measured)."""

SUBSET_FROM = 2**15
"""The work from which ``predictor`` measures on a subset of the prompts. Below it a pass costs
about the same on 4 prompts as on all, so a second measurement's set-up and cold first pass cost
more than its cheaper circuits save: the measurement's own passes probe instead (measured on the
benchmark: ``autocircuit-shape``, work 15,360, is faster so; ``default``, 34,816, with the subset)."""


def predictor(model: torch.nn.Module, task: TaskData, evaluate: Evaluate, **setting: Any) -> Evaluate | None:
    """What ACDC's probes measure with (``run_acdc``'s ``predict``) for ``evaluate``, a
    ``Measurement``'s of ``model`` on ``task`` (``setting``: its other keywords), or None where
    probes cost more than they save (work ``PREDICTOR_BELOW`` or more).

    Below ``SUBSET_FROM``, ``evaluate`` itself. From it, the same metric on ``PREDICTOR_PROMPTS`` of
    the task's prompts, evenly spaced: a ``Measurement`` of those prompts built at the first call
    (without the self-check: the model is the one the full measurement checks); on the
    benchmark's tasks it decides a removal as the whole task does for about 95% of ACDC's
    candidates. None also where the task has fewer than ``2 * PREDICTOR_PROMPTS`` prompts (a
    subset would cost about what the task costs)."""
    n_prompts, work = len(task.clean), task.clean.numel() * model.cfg.d_model
    if work >= PREDICTOR_BELOW:
        return None
    if work < SUBSET_FROM:
        return evaluate
    if n_prompts < 2 * PREDICTOR_PROMPTS:
        return None
    prompts = torch.arange(PREDICTOR_PROMPTS) * n_prompts // PREDICTOR_PROMPTS
    subset: list[Measurement] = []

    def predict(masks: CircuitMask, start_layer: int = 0) -> Tensor:
        if not subset:
            subset.append(Measurement(model, task.subset(prompts), **setting, self_check=False))
        return subset[0].evaluate(masks, start_layer)

    return predict
