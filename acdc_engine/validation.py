"""Checks before any work: the composed run config, the Python API's arguments, memory.

``validate_config`` checks a composed run config before any model loads (below);
``check_discover_arguments`` checks ``acdc_engine.discover``'s arguments before it computes anything;
``check_task_fits`` refuses a task whose patched forward pass cannot fit in the device's memory,
before the task is built where it can (``patched_pass_bytes``); ``dtype_name`` reads a dtype given as
a name or a torch.dtype.

Hydra's structured configs (``acdc_engine.config``) reject unknown keys and wrong types while the
config is composed; they cannot say "at least 1". ``validate_config`` walks the composed config
once and raises an ``AcdcError`` that names the key, e.g. ``method.batch_size must be >= 1, got 0``.

Every value, wherever it is:
  - resolves (an interpolation such as ``${oc.env:X}`` that fails is reported by its key);
  - a float is finite (no nan or inf); an integer fits in 64 bits (token ids, seeds and counts
    end up in torch tensors).
Every node typed by a schema dataclass (the model, task and method groups, the root):
  - holds only the schema's fields (Hydra lets ``+key=value`` add others);
  - its ``name``, where the schema fixes one (``name: str = "acdc"``), is left as it is: the name
    picks the code that runs, the group picks the schema, and the two must agree;
  - each number lies in its field's range, taken from the field's metadata
    (``field(default=2, metadata=bounds(ge=2))``) or else from the naming conventions in
    ``NAMED_BOUNDS``, so a new task's ``n_examples`` or ``corrupt_seed`` is checked without
    registering anything; each number of a list field lies in the range its metadata gives
    (``acdc-evaluate``'s ``thresholds`` and ``fractions``);
  - the dataclass is built from the values, so its ``__post_init__`` can check rules that span
    fields (EAP's "exactly one of top_n and score_threshold"); an AcdcError from it is reported
    under the node's key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from acdc_engine.errors import AcdcError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# (pattern on the field name, value type, bounds); the first pattern and type that match apply.
NAMED_BOUNDS: tuple[tuple[str, type, dict[str, float]], ...] = (
    ("seed", int, {"ge": 0}),
    ("*_seed", int, {"ge": 0}),
    ("n_*", int, {"ge": 1}),  # counts: n_prompts, ...
    ("*_size", int, {"ge": 1}),  # batch_size, ...
    ("length", int, {"ge": 1}),
    ("*_length", int, {"ge": 1}),  # half_length, ...
    ("steps", int, {"ge": 1}),
    ("*_steps", int, {"ge": 1}),
    ("top_n", int, {"ge": 1}),
    ("every_*", int, {"ge": 1}),  # periods: checkpoint.every_decisions, ...
    ("every_*", float, {"gt": 0}),  # checkpoint.every_seconds, ...
    ("*_token", int, {"ge": 0}),  # token ids: bos_token, ...
    ("threshold", float, {"ge": 0}),
    ("*_threshold", float, {"ge": 0}),
)
_COMPARISONS = {
    "ge": (lambda value, bound: value >= bound, ">="),
    "gt": (lambda value, bound: value > bound, ">"),
    "le": (lambda value, bound: value <= bound, "<="),
    "lt": (lambda value, bound: value < bound, "<"),
}


def bounds(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> dict[str, float]:
    """Field metadata giving a numeric range: ``field(default=8, metadata=bounds(ge=2))``.

    A field with bounds in its metadata is checked against them instead of ``NAMED_BOUNDS``.
    """
    given = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    return {key: bound for key, bound in given.items() if bound is not None}


def validate_config(cfg: DictConfig) -> None:
    """Raise AcdcError naming the key if the composed run config ``cfg`` holds a value out of range
    (see the module docstring for every rule)."""
    _check_node(cfg, "")


def _check_node(node: DictConfig | ListConfig, path: str) -> None:
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        where = f"{path}[{key}]" if isinstance(key, int) else _join(path, str(key))
        if fields is not None and key not in fields:
            names = ", ".join(name for name in fields if name != "defaults")  # Hydra's defaults list is no setting
            raise AcdcError(f"unknown key {where}; {schema.__name__} has {names}")
        value = _resolved(node, key, where)
        if isinstance(value, (DictConfig, ListConfig)):
            _check_node(value, where)
            if fields is not None and isinstance(value, ListConfig):
                _check_items(fields[key], value, where)
            continue
        _check_representable(value, where)
        if fields is not None:
            _check_field(fields[key], value, where)
    if fields is not None:
        _check_schema_rules(node, path or "config", schema.__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _resolved(node: DictConfig | ListConfig, key: Any, where: str) -> Any:
    try:
        return node[key]
    except OmegaConfBaseException as error:  # failed interpolation, missing mandatory value, bad enum
        raise AcdcError(f"{where}: {str(error).splitlines()[0]}") from None


def _check_representable(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise AcdcError(f"{where} must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise AcdcError(f"{where} must fit in a 64-bit integer, got {value}")


def _check_field(spec: dataclasses.Field, value: Any, where: str) -> None:
    if spec.name == "name" and isinstance(spec.default, str) and spec.default != MISSING and value != spec.default:
        group = where.rpartition(".")[0] or "config"
        raise AcdcError(
            f"{where} is {value!r}, but the {group} chosen is {spec.default!r}; pick another with {group}={value}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    _check_bounds(_metadata_bounds(spec) or _named_bounds(spec.name, value), value, where)


def _check_items(spec: dataclasses.Field, items: ListConfig, where: str) -> None:
    """Each number of a list field against the bounds in the field's metadata (``thresholds[1]``)."""
    rules = _metadata_bounds(spec)
    for i, item in enumerate(items):
        if rules and not isinstance(item, bool) and isinstance(item, (int, float)):
            _check_bounds(rules, item, f"{where}[{i}]")


def _metadata_bounds(spec: dataclasses.Field) -> dict[str, float]:
    return {key: spec.metadata[key] for key in _COMPARISONS if key in spec.metadata}


def _check_bounds(rules: dict[str, float], value: int | float, where: str) -> None:
    if not all(_COMPARISONS[key][0](value, bound) for key, bound in rules.items()):
        wanted = " and ".join(f"{_COMPARISONS[k][1]} {b}" for k, b in rules.items())
        noun = "a finite number " if isinstance(value, float) else ""
        raise AcdcError(f"{where} must be {noun}{wanted}, got {value}")


def _named_bounds(name: str, value: int | float) -> dict[str, float]:
    for pattern, kind, rule in NAMED_BOUNDS:
        if fnmatch.fnmatchcase(name, pattern) and isinstance(value, kind):
            return rule
    return {}


def _check_schema_rules(node: DictConfig, where: str, schema_name: str) -> None:
    try:
        OmegaConf.to_object(node)  # builds the dataclass: its __post_init__ sees the values
    except AcdcError as error:
        raise AcdcError(f"{where}: {error}") from None
    except OmegaConfBaseException as error:
        raise AcdcError(f"{where}: does not fit {schema_name}: {str(error).splitlines()[0]}") from None


# ----- the Python API's arguments (``acdc_engine.discover``), checked before any work ---------------

MODEL_CLASSES = ("HookedTransformer", "TransformerBridge", "ModelSpec")
"""Class names a model passed to ``discover`` may have (itself or a base class): TransformerLens 3's
HookedTransformer, TransformerLens 4's TransformerBridge, ``acdc_engine.architecture.ModelSpec``."""
TASK_TENSORS = ("clean", "corrupted", "positions", "answers", "wrong_answers", "answer_sets", "wrong_answer_sets")


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
            float(threshold)
        except (TypeError, ValueError):
            raise AcdcError(f"threshold must be a number (ACDC's tau, in the metric's units), got {threshold!r}") from None
    _check_model(model)
    _check_task(task, dict(task_params or {}))
    if checkpoint is not None:
        _check_writable_file(checkpoint, "checkpoint")


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
    """Bytes that can still be allocated on ``device``: free GPU memory, or the kernel's
    MemAvailable on a CPU; None where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
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
        raise AcdcError(
            f"{what}: {n_prompts} prompts of {n_tokens} tokens need about {_gib(needed)} for the patched forward "
            f"pass, and {cfg.device} has {_gib(free)} available; use {fix}"
        )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


# ----- load_model's dtype ---------------------------------------------------------------------------


def dtype_name(dtype: Any, choices: Iterable[str]) -> str:
    """The name among ``choices`` of ``dtype``, given as a name (``"float16"``) or a torch.dtype
    (``torch.float16``); AcdcError listing the choices otherwise."""
    choices = list(choices)
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype
    if not isinstance(name, str) or name not in choices:
        raise AcdcError(f"unknown dtype {dtype!r}; choose one of {', '.join(choices)} (a name or the torch.dtype)")
    return name
