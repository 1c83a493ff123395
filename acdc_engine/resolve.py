"""Resolving what a user passes into what the engine runs on: a ``ModelSpec`` and a ``TaskData``.

``resolve(model, task, ...)`` is the one step that does it, for ``discover`` and the evaluation
tools alike: a model name is loaded (``acdc_engine.models``), a TransformerBridge or
HookedTransformer becomes a ``ModelSpec`` once (``acdc_engine.architecture.as_model_spec``), a
built-in task is built for the model (``acdc_engine.tasks``), and the patched pass's memory is
checked before and after the task is built (``acdc_engine.methods.arguments.check_task_fits``); half
precision is refused on a CPU (``check_precision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from acdc_engine.architecture import ModelSpec, as_model_spec
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, task_from_fields
from acdc_engine.methods.arguments import check_precision, check_task_fits
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.tasks import make_task


@dataclass(frozen=True)
class Resolved:
    """The model as the engine runs it, the name to record for it (None: its config's), the task's data."""

    model: ModelSpec
    model_name: str | None
    task: TaskData


def resolve(
    model: torch.nn.Module | str,
    task: Any,
    task_params: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    split_input: bool = False,
    memory: MemoryProfile = MemoryProfile.PATCHED_PASS,
) -> Resolved:
    """The model and the task ``discover`` takes (see its arguments) as a ``Resolved``; AcdcError
    naming the problem when either cannot be used, or when the task cannot fit in the device's
    memory for a method of profile ``memory`` (``check_task_fits``)."""
    if isinstance(model, str):
        from acdc_engine.models import load_model

        model_name = model_name or model
        model = load_model(model)
    spec = as_model_spec(model)
    check_precision(spec)
    check_task_fits(spec, task, task_params, split_input=split_input, memory=memory)  # a built-in task, before it is built
    task_data = resolve_task(spec, task, task_params)
    check_task_fits(spec, task_data, split_input=split_input, memory=memory)
    return Resolved(spec, model_name, task_data)


def resolve_task(model: torch.nn.Module, task: Any, task_params: dict[str, Any] | None = None) -> TaskData:
    """A ``TaskData`` for ``model`` from ``task``: a TaskData as it is, a built-in task name (built
    with ``task_params``), a dict of TaskData fields (``task_from_fields``), or a (clean, corrupted)
    pair. AcdcError when its token ids fall outside the model's vocabulary, its prompts are longer
    than the context, or right-padded prompts come without their lengths (``TaskData.check_padding``)."""
    if isinstance(task, TaskData):
        task_data = task
    elif isinstance(task, str):
        task_data = make_task(task, model, **dict(task_params or {}))
    elif isinstance(task, dict):
        task_data = task_from_fields(task)
    elif isinstance(task, (tuple, list)) and len(task) == 2:
        task_data = TaskData(name="custom", clean=task[0], corrupted=task[1])
    else:
        raise AcdcError(f"task must be a task name, a TaskData, a dict or a (clean, corrupted) pair; got {type(task).__name__}")
    task_data.check_vocabulary(model.cfg.d_vocab)
    task_data.check_padding(pad_token_of(model))
    if task_data.clean.shape[1] > model.cfg.n_ctx:
        raise AcdcError(f"prompts have {task_data.clean.shape[1]} tokens; the model's context is {model.cfg.n_ctx}")
    return task_data


def pad_token_of(model: Any) -> int | None:
    """The padding token id of ``model``'s tokenizer (None: no tokenizer, or it pads with nothing)."""
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    return pad if isinstance(pad, int) else None
