"""Checks of ``acdc_engine.discover``'s arguments, before any work.

``check_discover_arguments`` checks ``discover``'s arguments before it computes anything;
``check_task_fits`` refuses a task whose patched forward pass cannot fit in the device's memory,
before the task is built where it can (the memory model: ``acdc_engine.patching.memory``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.values import check_values
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.patching.memory import MemoryProfile, available_memory, cgroup_available, method_bytes

# ----- the Python API's arguments (``acdc_engine.discover``), checked before any work ---------------

MODEL_CLASSES = ("HookedTransformer", "TransformerBridge", "ModelSpec")
"""Class names a model passed to ``discover`` may have (itself or a base class): TransformerLens 3's
HookedTransformer, TransformerLens 4's TransformerBridge, ``acdc_engine.architecture.ModelSpec``."""
TASK_TENSORS = ("clean", "corrupted", "positions", "answers", "wrong_answers", "answer_sets", "wrong_answer_sets")


@dataclasses.dataclass
class DiscoverOptions:
    """The types of ``discover``'s own keyword arguments (``check_discover_options``)."""

    method: str = "acdc"
    metric: Optional[str] = None
    ablation: str = "resample"
    split_input: bool = False
    permute_corrupted_positions: bool = False
    task_params: Optional[dict] = None
    model_name: Optional[str] = None
    seed: int = 0
    progress: bool = True
    metric_cache: Optional[MetricCache] = None
    checkpoint_every: Optional[int] = None
    checkpoint_seconds: Optional[float] = 60.0
    threads: Optional[int] = None


def check_discover_options(**options: Any) -> None:
    """AcdcError naming the argument when one of ``discover``'s own keyword arguments (``DiscoverOptions``'
    fields) does not have its type: ``seed="x"``, ``progress="no"``, ``metric_cache="x"``."""
    check_values(DiscoverOptions, options, "", ranges=False)


def check_discover_arguments(
    model: Any,
    task: Any,
    *,
    task_params: Mapping[str, Any] | None,
    checkpoint: str | os.PathLike[str] | None,
    threshold: Any,
    uses_threshold: bool,
) -> None:
    """AcdcError naming the argument when ``discover``'s ``model``, ``task``, ``task_params``,
    ``checkpoint`` or (if ``uses_threshold``) ``threshold`` cannot work; nothing is computed.

    model: a model name, or an object whose class (or a base class) is named in ``MODEL_CLASSES``,
        with no weights on the meta device. task: a built-in task name taking only its config's
        fields as ``task_params``, or data (TaskData, dict, pair) with no tensor on the meta
        device and no ``task_params``. checkpoint: a file that can be written (its folder exists or
        can be made, and is writable). threshold: a number.
    """
    if uses_threshold:
        try:
            if isinstance(threshold, (bool, str)):
                raise TypeError
            float(threshold)
        except (TypeError, ValueError):
            raise AcdcError(f"threshold must be a number (ACDC's tau, in the metric's units), got {threshold!r}") from None
    _check_model(model)
    _check_task(task, dict(task_params or {}))
    if checkpoint is not None:
        _check_writable_file(checkpoint, "checkpoint")


def check_precision(model: Any) -> None:
    """AcdcError when ``model`` (with a TransformerLens-style ``cfg``) holds float16 or bfloat16
    weights on a CPU: as on the command line (``model.dtype``), half precision is for GPUs."""
    cfg = getattr(model, "cfg", None)
    dtype, device = getattr(cfg, "dtype", None), torch.device(getattr(cfg, "device", None) or "cpu")
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        name = str(dtype).removeprefix("torch.")
        raise AcdcError(
            f"model dtype '{name}' is for GPUs; on the CPU use float32 or float64 (model.to(torch.float32)), "
            "or move the model to a GPU"
        )


def _check_model(model: Any) -> None:
    if isinstance(model, str):
        return
    if not {cls.__name__ for cls in type(model).__mro__} & set(MODEL_CLASSES):
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        raise AcdcError(
            f"model must be a TransformerLens HookedTransformer or TransformerBridge, an acdc_engine ModelSpec, "
            f"or a model name for acdc_engine.models.load_model; got {kind}"
        )
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    if first is not None and first.device.type == "meta":
        raise AcdcError("model has its weights on the meta device (shapes only, no values); load or move them first")


def _check_task(task: Any, task_params: dict[str, Any]) -> None:
    from acdc_engine.core.task_data import EAP_IG_PADDING_FIELDS
    from acdc_engine.tasks import TASKS, TaskData

    if isinstance(task, str):
        spec = TASKS.get(task)
        if spec is None:
            return  # make_task names the known tasks
        fields = [f.name for f in dataclasses.fields(spec.config) if f.name != "name"]
        unknown = sorted(set(map(str, task_params)) - set(fields))
        if unknown:
            raise AcdcError(
                f"unknown task_params {', '.join(unknown)} for task '{task}'; it takes {', '.join(fields) or 'none'}"
            )
        check_values(spec.config, task_params, "task_params.")
        return
    if task_params:
        raise AcdcError(
            f"task_params are for a built-in task name; the task given is a {type(task).__name__}, "
            "so its data and settings go into it (TaskData fields)"
        )
    if isinstance(task, dict):
        fields = [f.name for f in dataclasses.fields(TaskData)] + list(EAP_IG_PADDING_FIELDS)
        unknown = sorted(set(map(str, task)) - set(fields))
        if unknown:
            raise AcdcError(f"unknown task field(s) {', '.join(unknown)}; a task dict takes {', '.join(fields)}")
        missing = [key for key in ("clean", "corrupted") if key not in task]
        if missing:
            raise AcdcError(f"a task dict needs {' and '.join(missing)} (token ids [n_prompts, pos]); it has {', '.join(map(str, task)) or 'no field'}")
        tensors = {key: task.get(key) for key in TASK_TENSORS}
    elif isinstance(task, TaskData):
        tensors = {key: getattr(task, key) for key in TASK_TENSORS}
    elif isinstance(task, (tuple, list)):
        tensors = dict(zip(("clean", "corrupted"), task))
    else:
        return  # discover names the accepted kinds
    for key, value in tensors.items():
        if getattr(value, "is_meta", False):
            raise AcdcError(f"task {key} is on the meta device (a shape without token ids); give its tokens on cpu or the model's device")


def _check_writable_file(path: Any, argument: str) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise AcdcError(f"{argument} must be a file path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise AcdcError(f"{argument}={path} is a folder; give a file, e.g. {path / 'checkpoint.safetensors'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folders below it are made on the first save
    if not folder.is_dir():
        raise AcdcError(f"{argument}={path} cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AcdcError(f"{argument}={path} cannot be written: no permission to write into {folder}")


# ----- memory: refuse a task whose patched forward pass cannot fit ---------------------------------

PROBE_ABOVE = 1024
"""A built-in task asked for more prompts than this is first built with ``PROBE_PROMPTS`` prompts,
to learn its prompt length, and refused before the real build if its patched pass cannot fit."""
PROBE_PROMPTS = 2


def check_task_fits(
    model: Any,
    task: Any,
    task_params: Mapping[str, Any] | None = None,
    *,
    split_input: bool = False,
    memory: MemoryProfile = MemoryProfile.PATCHED_PASS,
) -> None:
    """AcdcError when a method of profile ``memory`` would need more memory for ``task`` on
    ``model`` than its device has available (``method_bytes``, ``available_memory``).

    ``task``: a TaskData (its shapes are used), or a built-in task name with ``task_params``: when
    it asks for more than ``PROBE_ABOVE`` prompts, a ``PROBE_PROMPTS``-prompt build gives the
    prompt length and the check runs before the task is built (a task that has no ``n_prompts``,
    or whose small build fails, is checked once built). Any other task, or a model without a
    TransformerLens-style ``cfg``, is not checked.
    """
    from acdc_engine.tasks import TASKS, TaskData, make_task

    cfg = getattr(model, "cfg", None)
    needed_fields = ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "attn_only", "dtype", "device")
    if cfg is None or any(getattr(cfg, name, None) is None for name in needed_fields):
        return
    if isinstance(task, TaskData):
        n_prompts, n_tokens = task.clean.shape
        n_positions, what, fix = task.n_positions, "the task", "fewer prompts"
    elif isinstance(task, str) and task in TASKS:
        params = dict(task_params or {})
        defaults = {f.name: f.default for f in dataclasses.fields(TASKS[task].config)}
        n_prompts = params.get("n_prompts", defaults.get("n_prompts"))
        if not isinstance(n_prompts, int) or n_prompts <= PROBE_ABOVE:
            return
        try:
            probe = make_task(task, model, **{**params, "n_prompts": PROBE_PROMPTS})
        except AcdcError:
            return
        n_tokens, n_positions = probe.clean.shape[1], probe.n_positions
        what, fix = f"task.n_prompts={n_prompts}", "a smaller task.n_prompts"
    else:
        return
    needed = method_bytes(  # gradient passes shrink to one prompt at a time (``patching.gradients``)
        memory, cfg, n_prompts=n_prompts, n_tokens=n_tokens, n_positions=n_positions, split_input=split_input, prompts_per_pass=1
    )
    free = available_memory(cfg.device)
    if free is not None and needed > free:
        limited = torch.device(cfg.device).type == "cpu" and cgroup_available() == free
        raise AcdcError(
            f"{what}: {n_prompts} prompts of {n_tokens} tokens need about {_gib(needed)} for the {memory.value} "
            f"(the patcher's tables and the method's working set), and {cfg.device} has {_gib(free)} available"
            + (" under this job's memory limit (its cgroup: slurm --mem, docker --memory)" if limited else "")
            + f"; use {fix}"
        )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"
