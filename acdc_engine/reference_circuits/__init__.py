"""Circuits shipped with the package: ground truths and published circuits, as circuit JSON files.

``reference_circuit(name)`` reads ``<name>.json`` from this folder with the engine's validating loader.
"""

from __future__ import annotations

from pathlib import Path

from acdc_engine.core.errors import AcdcError

FOLDER = Path(__file__).parent


def reference_circuit_names() -> list[str]:
    """Names of the shipped circuits, sorted."""
    return sorted(path.stem for path in FOLDER.glob("*.json"))


def reference_circuit_path(name: str) -> Path:
    """The file of shipped circuit ``name``; AcdcError naming the choices if there is none."""
    path = FOLDER / f"{name}.json"
    if not path.is_file():
        raise AcdcError(f"no shipped circuit '{name}'; choose one of {', '.join(reference_circuit_names()) or '(none)'}")
    return path


def reference_circuit(name: str):
    """The shipped circuit ``name`` as a ``Circuit``."""
    from acdc_engine.formats.reader import load_circuit

    return load_circuit(reference_circuit_path(name))
