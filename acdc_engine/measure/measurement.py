"""Measuring circuits: the one path by which ``discover``, the evaluator, sweeps and faithfulness
turn a circuit into a metric value.

A ``Measurement`` fixes the setting (model, task, metric, ablation, input split), builds the graph
and the ``EdgePatcher`` (which runs the clean and corrupted prompts once) and the metric (which may
read the full model's logits, e.g. KL from them), and then gives any circuit's metric: the logits
of one patched forward pass with every edge outside the circuit patched, through the metric, in
float64. The full model's value is measured through that same pass (resumed at the last layer), so
``metric(full)`` is exactly what ACDC's first evaluation sees.

``resolve_task`` turns what a user passes as a task into a ``TaskData`` checked against the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import build_graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.patcher import Evaluate
from acdc_engine.measure.metrics import at_least_float32, make_metric
from acdc_engine.patching import EdgePatcher
from acdc_engine.tasks import TaskData, make_task


def resolve_task(model: torch.nn.Module, task: Any, task_params: dict[str, Any] | None = None) -> TaskData:
    """A ``TaskData`` for ``model`` from ``task``: a TaskData as it is, a built-in task name (built
    with ``task_params``), a dict of TaskData fields, or a (clean, corrupted) pair. AcdcError when
    its token ids fall outside the model's vocabulary or its prompts are longer than the context."""
    if isinstance(task, TaskData):
        task_data = task
    elif isinstance(task, str):
        task_data = make_task(task, model, **dict(task_params or {}))
    elif isinstance(task, dict):
        task_data = TaskData(name=task.get("name", "custom"), **{k: v for k, v in task.items() if k != "name"})
    elif isinstance(task, (tuple, list)) and len(task) == 2:
        task_data = TaskData(name="custom", clean=task[0], corrupted=task[1])
    else:
        raise AcdcError(f"task must be a task name, a TaskData, a dict or a (clean, corrupted) pair; got {type(task).__name__}")
    task_data.check_vocabulary(model.cfg.d_vocab)
    if task_data.clean.shape[1] > model.cfg.n_ctx:
        raise AcdcError(f"prompts have {task_data.clean.shape[1]} tokens; the model's context is {model.cfg.n_ctx}")
    return task_data


class Measurement:
    """The metric of any circuit of ``model`` on ``task``, everything outside the circuit patched.

    Args:
        model: a ``ModelSpec`` (or what ``as_model_spec`` converts).
        task: the task's data (``resolve_task``).
        metric: a metric name (``acdc_engine.measure.metrics``); None: the task's default.
        ablation: what a patched edge carries: "resample", "zero" or "mean".
        split_input: token and positional embeddings as two senders.
        permute_corrupted_positions: the original ACDC's permuted positional embedding in the
            corrupted run (``EdgePatcher``).
    Attributes:
        model, task, ablation, split_input: the setting, as given.
        graph: the model's graph; patcher: its ``EdgePatcher``.
        metric_name: the metric's name; metric: circuit logits [C, n_prompts, P, d_vocab] -> [C].
        full: the full model's metric (float).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: TaskData,
        metric: str | None = None,
        ablation: str = "resample",
        split_input: bool = False,
        permute_corrupted_positions: bool = False,
    ) -> None:
        self.model, self.task, self.ablation, self.split_input = model, task, ablation, split_input
        self.graph = build_graph(model.cfg, split_input=split_input)
        self.metric_name = metric or task.default_metric
        self.patcher = EdgePatcher(
            model, self.graph, task.clean, task.corrupted, task.positions, ablation,
            permute_corrupted_positions=permute_corrupted_positions,
        )
        full_logits = at_least_float32(
            self.patcher.logits(self.graph.full_mask(), start_layer=self.graph.shape.n_layers)
        )
        self.metric = make_metric(self.metric_name, task, full_logits)
        self.full = float(self.metric(full_logits[None]).double()[0])

    def evaluate(self, masks: CircuitMask, start_layer: int = 0) -> Tensor:
        """The metric of circuits ``masks`` (bool, [C, ...]) in one patched pass that may start at
        ``start_layer`` (every receiver below it intact): [C] float64 on the CPU. A circuit gets the
        same bits alone and in any batch (``EdgePatcher.logits``)."""
        logits = self.patcher.logits(masks, start_layer)
        return self.metric(at_least_float32(logits)).double().cpu()

    def empty(self, evaluate: Evaluate | None = None) -> float:
        """The empty circuit's metric, measured by ``evaluate`` (default: ``self.evaluate``; a sweep
        passes its cached one)."""
        evaluate = evaluate or self.evaluate
        return float(evaluate(CircuitMask.stack([self.graph.empty_mask()]), 0)[0])
