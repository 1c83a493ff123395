"""Checks of the composed run config before any work (the rules: ``acdc_engine.core.values``).

``validate_config`` checks a composed run config before any model loads (below). (The Python API's
arguments: ``acdc_engine.methods.arguments``.)

Hydra's structured configs (``acdc_engine.commands.config_schema``) reject unknown keys and wrong types while the
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
    ``acdc_engine.core.values.NAMED_BOUNDS``, so a new task's ``n_examples`` or ``corrupt_seed`` is checked without
    registering anything; each number of a list field lies in the range its metadata gives
    (``acdc-evaluate``'s ``thresholds`` and ``fractions``);
  - the dataclass is built from the values, so its ``__post_init__`` can check rules that span
    fields (EAP's "exactly one of top_n and score_threshold"); an AcdcError from it is reported
    under the node's key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.values import check_bounds, check_representable, metadata_bounds, named_bounds

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
        check_representable(value, where)
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


def _check_field(spec: dataclasses.Field, value: Any, where: str) -> None:
    if spec.name == "name" and isinstance(spec.default, str) and spec.default != MISSING and value != spec.default:
        group = where.rpartition(".")[0] or "config"
        raise AcdcError(
            f"{where} is {value!r}, but the {group} chosen is {spec.default!r}; pick another with {group}={value}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    check_bounds(metadata_bounds(spec) or named_bounds(spec.name, value), value, where)


def _check_items(spec: dataclasses.Field, items: ListConfig, where: str) -> None:
    """Each number of a list field against the bounds in the field's metadata (``thresholds[1]``)."""
    rules = metadata_bounds(spec)
    for i, item in enumerate(items):
        if rules and not isinstance(item, bool) and isinstance(item, (int, float)):
            check_bounds(rules, item, f"{where}[{i}]")


def _check_schema_rules(node: DictConfig, where: str, schema_name: str) -> None:
    try:
        OmegaConf.to_object(node)  # builds the dataclass: its __post_init__ sees the values
    except AcdcError as error:
        raise AcdcError(f"{where}: {error}") from None
    except OmegaConfBaseException as error:
        raise AcdcError(f"{where}: does not fit {schema_name}: {str(error).splitlines()[0]}") from None
