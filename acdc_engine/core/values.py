"""Values against the fields of a schema dataclass: types, ranges, and the naming conventions for ranges.

One set of rules for every place a value arrives: the command line's composed config
(``acdc_engine.commands.validation``) and the Python API's keyword arguments (``check_values``:
``discover``'s, a method's, a task's). A number lies in its field's range, taken from the field's
metadata (``field(default=2, metadata=bounds(ge=2))``) or else from the naming conventions in
``NAMED_BOUNDS``; a float is finite; an integer fits in 64 bits (token ids, seeds and counts end up
in torch tensors).
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import math
import types
import typing
from typing import Any, Mapping

from acdc_engine.core.errors import AcdcError

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


def check_representable(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise AcdcError(f"{where} must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise AcdcError(f"{where} must fit in a 64-bit integer, got {value}")


def metadata_bounds(spec: dataclasses.Field) -> dict[str, float]:
    return {key: spec.metadata[key] for key in _COMPARISONS if key in spec.metadata}


def check_bounds(rules: dict[str, float], value: int | float, where: str) -> None:
    if not all(_COMPARISONS[key][0](value, bound) for key, bound in rules.items()):
        wanted = " and ".join(f"{_COMPARISONS[k][1]} {b}" for k, b in rules.items())
        noun = "a finite number " if isinstance(value, float) else ""
        raise AcdcError(f"{where} must be {noun}{wanted}, got {value}")


def named_bounds(name: str, value: int | float) -> dict[str, float]:
    for pattern, kind, rule in NAMED_BOUNDS:
        if fnmatch.fnmatchcase(name, pattern) and isinstance(value, kind):
            return rule
    return {}


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
            check_representable(value, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_bounds(metadata_bounds(fields[key]) or named_bounds(key, value), value, name)


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
