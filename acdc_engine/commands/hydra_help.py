"""``--help`` of the Hydra commands, and their console entry points, without importing the engine.

``acdc-discover --help`` (or ``-h``) and ``acdc-evaluate --help`` print a help text built from the
YAML files in ``acdc_engine/conf`` and the model group's schema (``config_schema.ModelConfig``): the
command's purpose (the config file's leading comment), the config groups a user picks from (those
the config's defaults list names, and ``hydra/launcher``; not the internal ``schema/*`` groups)
with their choices, and every key of the chosen group files with its default and comment. Group
choices given before ``--help`` (``method=eap --help``) show that choice's keys. Nothing here
imports torch, so help is instant; a reader that closes the pipe early (``| head -1``) ends it
quietly. The console scripts answer ``--help`` before importing their command: ``commands.entry``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import textwrap
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HELP_FLAGS = ("--help", "-h")
HYDRA_LAUNCHER = "hydra/launcher"
BUILTIN_LAUNCHER = "basic"  # Hydra's own default: the jobs of a multirun one after another, here


def wants_help(argv: list[str]) -> bool:
    """Whether the command line asks for this help (``--help`` or ``-h``; Hydra's other flags,
    ``--hydra-help`` included, stay Hydra's)."""
    return any(arg in HELP_FLAGS for arg in argv)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested mappings; a non-empty mapping is descended into, anything else is a value."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment at the end of its line, for the block-style YAML of ``conf/``."""
    comments, stack = {}, []  # stack: (indent, key) of the mappings the current line is in
    for line in text.splitlines():
        match = re.match(r"^(\s*)([\w.-]+):(.*?)(?:\s+#\s*(.*))?$", line)
        if not match:
            continue
        indent, key, _, comment = len(match[1]), match[2], match[3], match[4]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment:
            comments[".".join(k for _, k in stack)] = comment
    return comments


def _leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _override_text(value: Any) -> str:
    """``value`` as a command-line override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _group_file_keys(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(dotted key -> value, dotted key -> comment) of one config file, without its defaults list
    and ``hydra`` block."""
    text = path.read_text()
    values = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k not in ("defaults", "hydra")}
    return _flat(values), _comments(text)


def _schema_defaults(group: str) -> dict[str, Any]:
    """The defaults of a group's schema fields that a group file may leave out (the model group's)."""
    if group != "model":
        return {}
    from acdc_engine.commands.config_schema import ModelConfig

    defaults = {}
    for field in dataclasses.fields(ModelConfig):
        if field.default is not dataclasses.MISSING and field.default != "???":
            defaults[field.name] = field.default
    return defaults


def _groups(config: dict[str, Any]) -> dict[str, str]:
    """Group -> default choice, from a config's defaults list (``schema`` entries and overrides of
    Hydra's own groups skipped), then ``hydra/launcher``."""
    groups = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, dict):
            ((group, choice),) = entry.items()
            if not group.startswith("override ") and (CONF_DIR / group).is_dir():
                groups[group] = choice
    groups[HYDRA_LAUNCHER] = BUILTIN_LAUNCHER
    return groups


def _choices(group: str) -> list[str]:
    choices = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    return [BUILTIN_LAUNCHER, *choices] if group == HYDRA_LAUNCHER else choices


def help_text(prog: str, config_name: str, argv: list[str]) -> str:
    """The help of command ``prog`` whose config is ``conf/<config_name>.yaml`` (module docstring);
    ``GROUP=CHOICE`` items of ``argv`` pick the group files whose keys are shown."""
    config_path = CONF_DIR / f"{config_name}.yaml"
    text = config_path.read_text()
    groups = _groups(yaml.safe_load(text))
    picked = dict(arg.split("=", 1) for arg in argv if "=" in arg and arg.split("=", 1)[0] in groups)
    lines = [
        f"usage: {prog} [-m] [GROUP=CHOICE ...] [KEY=VALUE ...]",
        "",
        textwrap.fill(_leading_comment(text), width=100),
        "",
        "config groups (GROUP=CHOICE; * marks the default):",
    ]
    for group, default in groups.items():
        names = ", ".join(f"{c}*" if c == default else c for c in _choices(group))
        lines += textwrap.wrap(
            names, width=100, initial_indent=f"  {group:<16}", subsequent_indent=" " * 18, break_on_hyphens=False
        )
    chosen = {g: picked.get(g, default) for g, default in groups.items() if g != HYDRA_LAUNCHER}
    shown = ", ".join(f"{g}={c}" for g, c in chosen.items())
    lines += ["", f"keys (KEY=VALUE; the defaults{' with ' + shown if shown else ''}):"]
    keys: list[tuple[str, Any, str]] = []
    values, comments = _group_file_keys(config_path)
    keys += [(k, v, comments.get(k, "")) for k, v in values.items()]
    for group, choice in chosen.items():
        path = CONF_DIR / group / f"{choice}.yaml"
        values, comments = _group_file_keys(path) if path.is_file() else ({}, {})
        merged = {**values, **{k: v for k, v in _schema_defaults(group).items() if k not in values}}
        keys += [(f"{group}.{k}", v, comments.get(k, "")) for k, v in merged.items()]
    width = min(40, max(len(f"{k}={_override_text(v)}") for k, v, _ in keys) + 2)
    for key, value, comment in keys:
        setting = f"{key}={_override_text(value)}"
        lines.append(f"  {setting:<{width}}  # {comment}" if comment else f"  {setting}")
    group, choice = next(reversed(chosen.items()))
    example = next(c for c in _choices(group) if c != choice)
    lines += [
        "",
        f"  GROUP=CHOICE --help     this help with that choice's keys, e.g. {group}={example} --help",
        "  -m, --multirun          one run per combination of comma-separated values (KEY=A,B)",
        "  --cfg job               print the composed config (every key) and exit",
        "  --hydra-help            Hydra's own options",
    ]
    return "\n".join(lines) + "\n"


def print_help(prog: str, config_name: str, argv: list[str]) -> None:
    """Print ``help_text`` to stdout; a reader that closed the pipe early ends it without an error."""
    try:
        sys.stdout.write(help_text(prog, config_name, argv))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit then succeeds
