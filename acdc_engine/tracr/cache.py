"""Compiled tracr programs are kept on disk, so that each program is compiled once (tracr takes seconds).

A compiled program is one safetensors file: the weights, and in its metadata the rest of the
``CompiledProgram`` and the key it was compiled under. The key hashes everything the weights depend
on: the program's definition (the source of its builder), vocabulary and ``max_seq_len``, the
compiler settings, the installed tracr version, and ``CONVERSION_FORMAT`` (raised whenever the
conversion or the file layout changes). Lookup, first hit wins, a file counting only when its key is
the current one:

  1. ``acdc_engine/tracr/compiled/<name>.safetensors``, shipped with the package (written by
     ``experiments/tracr_ground_truth.py``);
  2. the user cache ``<dir>/tracr/<name>-<key>.safetensors``, where ``<dir>`` is
     ``$ACDC_ENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/acdc-engine``, else ``~/.cache/acdc-engine``.

On a miss the program is compiled (and checked against tracr, see ``compiler``) and written to the
user cache atomically (a temporary file, then a rename), so concurrent runs never read half a file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.tracr.compiler import CompiledProgram, compile_program, require_tracr
from acdc_engine.tracr.programs import COMPILER_BOS, COMPILER_PAD, MLP_EXACTNESS, PROGRAMS, TracrProgram

CONVERSION_FORMAT = 1
SHIPPED_DIR = Path(__file__).parent / "compiled"
METADATA_KEY = "acdc_engine.tracr"


def tracr_version() -> str:
    """The installed tracr distribution's version ("unknown" if it has no package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("tracr-pypi", "tracr"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def cache_key(program: TracrProgram) -> str:
    """A hex digest of everything the compiled weights of ``program`` depend on."""
    try:
        definition = inspect.getsource(program.build)
    except (OSError, TypeError):  # no source available: fall back to the builder's name
        definition = program.build.__qualname__
    parts = {
        "conversion_format": CONVERSION_FORMAT,
        "name": program.name,
        "definition": definition,
        "vocab": [repr(value) for value in program.vocab],
        "max_seq_len": program.max_seq_len,
        "distinct_tokens": program.distinct_tokens,
        "compiler": [COMPILER_BOS, COMPILER_PAD, MLP_EXACTNESS],
        "tracr": tracr_version(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def user_cache_dir() -> Path:
    """Where compiled programs are written: ``<cache dir>/tracr``."""
    root = os.environ.get("ACDC_ENGINE_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "acdc-engine")
    return Path(root) / "tracr"


def compiled_program(name: str) -> CompiledProgram:
    """The compiled program ``name`` (``PROGRAMS``): from the package or user cache, else compiled now."""
    if name not in PROGRAMS:
        raise AcdcError(f"unknown tracr program '{name}'; choose one of {', '.join(PROGRAMS)}")
    require_tracr()
    program = PROGRAMS[name]
    key = cache_key(program)
    cached = user_cache_dir() / f"{name}-{key}.safetensors"
    for path in (SHIPPED_DIR / f"{name}.safetensors", cached):
        found = read_compiled(path, key)
        if found is not None:
            return found
    compiled = compile_program(program)
    try:
        write_compiled(compiled, key, cached)
    except OSError as error:
        warnings.warn(f"could not cache the compiled '{name}' at {cached}: {error.strerror}", stacklevel=2)
    return compiled


def load_tracr_model(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The ``ModelSpec`` of tracr program ``name``, in eval mode."""
    return compiled_program(name).model(device, dtype)


def write_compiled(compiled: CompiledProgram, key: str, path: str | Path) -> Path:
    """Write ``compiled`` under ``key`` to ``path`` (safetensors, atomically)."""
    from safetensors.torch import save

    from acdc_engine.formats.atomic_files import atomic_write_bytes

    metadata = {
        "key": key,
        "name": compiled.name,
        "config": compiled.config,
        "residual_labels": compiled.residual_labels,
        "input_encoding": [[value, token] for value, token in compiled.input_encoding.items()],
        "output_values": compiled.output_values,
        "provenance": compiled.provenance,
    }
    weights = {name: tensor.contiguous() for name, tensor in compiled.weights.items()}
    return atomic_write_bytes(path, save(weights, metadata={METADATA_KEY: json.dumps(metadata)}))


def read_compiled(path: str | Path, key: str) -> CompiledProgram | None:
    """The program stored at ``path`` if the file exists and holds ``key``; None otherwise (a file
    that cannot be read counts as absent, with a warning)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata: dict[str, Any] = json.loads((handle.metadata() or {})[METADATA_KEY])
            if metadata.get("key") != key:
                return None
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
        return CompiledProgram(
            name=metadata["name"],
            config=metadata["config"],
            weights=weights,
            residual_labels=metadata["residual_labels"],
            input_encoding={value: token for value, token in metadata["input_encoding"]},
            output_values=metadata["output_values"],
            provenance=metadata["provenance"],
        )
    except Exception as error:  # a damaged file of any kind: compile again
        warnings.warn(f"ignoring unreadable compiled program {path}: {type(error).__name__}: {error}", stacklevel=2)
        return None
