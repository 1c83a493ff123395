"""Checks before any work on configs: the composed run config, and dtype names.

``validate_config`` checks a composed run config before any model loads (below); ``dtype_name``
reads a dtype given as a name or a torch.dtype. (The Python API's arguments and the memory bound,
which need the task registry: ``acdc_engine.argument_checks``.)

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
import enum
import fnmatch
import math
import types
import typing
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


# ----- keyword arguments against a schema (the Python API) ------------------------------------------


def check_values(schema: type, values: Mapping[str, Any], where: str, *, ranges: bool = True) -> None:
    """AcdcError naming ``{where}{key}`` when a value of ``values`` does not have its ``schema``
    field's type, strictly: an ``int`` field takes an integer (not a bool, not 1.5, not "8"), a
    ``float`` field a real number (not a bool), ``Optional`` fields None too, an enum field one of
    its values; and, with ``ranges``, when a number is not finite, does not fit 64 bits, or lies
    outside the field's range (as ``validate_config`` checks the command line's). Keys that are not fields are the caller's to
    refuse; they are skipped here."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in values.items():
        if key not in fields:
            continue
        name = f"{where}{key}"
        wanted = _type_mismatch(hints.get(key, Any), value)
        if wanted is not None:
            raise AcdcError(f"{name} must be {wanted}, got {value!r:.80} ({type(value).__name__})")
        if ranges:
            _check_representable(value, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                _check_bounds(_metadata_bounds(fields[key]) or _named_bounds(key, value), value, name)


def _type_mismatch(annotation: Any, value: Any) -> str | None:
    """None when ``value`` fits ``annotation``, else what it must be ("an integer", ...)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(annotation)
        wants = [_type_mismatch(arm, value) for arm in arms]
        if None in wants:
            return None
        return " or ".join(dict.fromkeys(w for w in wants))
    if annotation is type(None):
        return None if value is None else "None"
    if annotation is bool:
        return None if isinstance(value, bool) else "True or False"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if annotation is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if annotation is str:
        return None if isinstance(value, str) else "a string"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = [member.value for member in annotation]
        return None if isinstance(value, annotation) or value in allowed else f"one of {', '.join(map(str, allowed))}"
    if origin in (list, tuple) or annotation in (list, tuple):
        return None if isinstance(value, (list, tuple)) else "a list"
    if origin is dict or annotation is dict:
        return None if isinstance(value, Mapping) else "a mapping"
    if isinstance(annotation, type) and origin is None:
        return None if isinstance(value, annotation) else f"a {annotation.__name__}"
    return None


# ----- load_model's dtype ---------------------------------------------------------------------------


def dtype_name(dtype: Any, choices: Iterable[str]) -> str:
    """The name among ``choices`` of ``dtype``, given as a name (``"float16"``) or a torch.dtype
    (``torch.float16``); AcdcError listing the choices otherwise."""
    choices = list(choices)
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype
    if not isinstance(name, str) or name not in choices:
        raise AcdcError(f"unknown dtype {dtype!r}; choose one of {', '.join(choices)} (a name or the torch.dtype)")
    return name
