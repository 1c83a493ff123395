"""Checks of ``acdc_engine.discover``'s arguments and of memory, before any work.

``check_discover_arguments`` checks ``discover``'s arguments before it computes anything;
``check_task_fits`` refuses a task whose patched forward pass cannot fit in the device's memory,
before the task is built where it can (``patched_pass_bytes``, ``available_memory``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from acdc_engine.errors import AcdcError
from acdc_engine.metric_cache import MetricCache
from acdc_engine.validation import check_values

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
        fields = [f.name for f in dataclasses.fields(TaskData)]
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


def patched_pass_bytes(cfg: Any, *, n_prompts: int, n_tokens: int, n_positions: int, split_input: bool) -> int:
    """An estimate, in bytes, of the memory ``acdc_engine.patching.EdgePatcher`` holds for a task of
    ``n_prompts`` prompts of ``n_tokens`` tokens whose metric reads ``n_positions`` positions, on a
    model with TransformerLens config ``cfg``, while it evaluates one circuit: every sender's output,
    q/k/v and residual reads of the clean, the ablated and the all-edges-removed runs, one circuit's
    working set, and the logits at the metric's positions. Measured on CPU (the default toy model,
    and a 4-layer model with MLPs), the peak while evaluating one circuit is about 0.75 of this."""
    layers, heads, d_model, d_head, d_vocab = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
    d_mlp = 0 if cfg.attn_only else (cfg.d_mlp or 0)
    has_mlp = 0 if cfg.attn_only else 1
    senders = (2 if split_input else 1) + layers * (heads + has_mlp)
    reads = 2 * layers + 1  # before each layer's heads, before its MLP, and the logits
    logits_per_token = n_positions * d_vocab / n_tokens
    held = (
        3 * senders * d_model  # sender outputs: clean, ablated, their difference
        + 3 * layers * 3 * heads * d_head  # q/k/v: clean, ablated, from the all-removed inputs
        + 3 * reads * d_model  # residual reads: clean, ablated, all-removed
        + has_mlp * layers * d_model  # MLP outputs of the all-removed inputs
        + 3 * heads * d_model  # one layer's q/k/v inputs while they are built
        + heads * n_tokens  # an attention pattern
    )
    circuit = (
        senders * d_model
        + 4 * 3 * heads * (d_model + d_head)  # receiver inputs, corrections, LayerNorm, q/k/v
        + 2 * heads * n_tokens  # scores, pattern
        + 3 * d_mlp
        + logits_per_token
    )
    per_token = held + circuit + 2 * logits_per_token  # the full model's logits, and the metric's
    element = torch.empty((), dtype=cfg.dtype).element_size()
    return int(per_token * n_prompts * n_tokens * element)


def available_memory(device: str | torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: free GPU memory; on a CPU the smaller of
    the kernel's MemAvailable and what the process's memory cgroup still allows
    (``cgroup_available``: the job's limit under slurm ``--mem``, docker ``--memory``); None where
    none can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    limits = [_machine_available(), cgroup_available()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)
# (mount below CGROUP_ROOT, limit file, usage file, memory.stat key of reclaimable page cache)
_CGROUP_FILES = {
    2: ("", "memory.max", "memory.current", "inactive_file"),
    1: ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def cgroup_available(proc_cgroup: Path | None = None, root: Path | None = None) -> int | None:
    """Bytes the memory cgroups of this process still allow: for its cgroup and each one above it
    that sets a limit, the limit less the usage (page cache the kernel can drop not counted), the
    smallest of them; cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``). ``proc_cgroup``
    names the process's cgroups (None: ``PROC_CGROUP``), ``root`` is where they are mounted (None:
    ``CGROUP_ROOT``). A
    cgroup namespace whose path is not found under the mount reads the mount's own files. None:
    no limit set, or nothing readable."""
    proc_cgroup, root = proc_cgroup or PROC_CGROUP, root or CGROUP_ROOT
    try:
        lines = proc_cgroup.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    allowed: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        version = 2 if controllers == "" else 1 if "memory" in controllers.split(",") else None
        if version is None:
            continue
        mount_name, limit_name, usage_name, cache_key = _CGROUP_FILES[version]
        mount = root / mount_name if mount_name else root
        folder = mount / path.strip("/")
        levels = [folder, *(p for p in folder.parents if p.is_relative_to(mount))] if folder.is_dir() else [mount]
        for here in levels:
            limit, usage = _read_bytes(here / limit_name), _read_bytes(here / usage_name)
            if limit is None or usage is None or limit >= _UNLIMITED:
                continue
            allowed.append(max(0, limit - max(0, usage - _stat_bytes(here / "memory.stat", cache_key))))
    return min(allowed) if allowed else None


def _read_bytes(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat_bytes(path: Path, key: str) -> int:
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except (OSError, UnicodeDecodeError):
        pass
    return 0


def check_task_fits(model: Any, task: Any, task_params: Mapping[str, Any] | None = None, *, split_input: bool = False) -> None:
    """AcdcError when the patched pass for ``task`` on ``model`` would need more memory than its
    device has available (``patched_pass_bytes``, ``available_memory``).

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
        n_positions, what, fix = len(task.positions), "the task", "fewer prompts"
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
        n_tokens, n_positions = probe.clean.shape[1], len(probe.positions)
        what, fix = f"task.n_prompts={n_prompts}", "a smaller task.n_prompts"
    else:
        return
    needed = patched_pass_bytes(cfg, n_prompts=n_prompts, n_tokens=n_tokens, n_positions=n_positions, split_input=split_input)
    free = available_memory(cfg.device)
    if free is not None and needed > free:
        limited = torch.device(cfg.device).type == "cpu" and cgroup_available() == free
        raise AcdcError(
            f"{what}: {n_prompts} prompts of {n_tokens} tokens need about {_gib(needed)} for the patched forward "
            f"pass, and {cfg.device} has {_gib(free)} available"
            + (" under this job's memory limit (its cgroup: slurm --mem, docker --memory)" if limited else "")
            + f"; use {fix}"
        )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"
