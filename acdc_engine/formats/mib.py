"""MIB circuit-track submissions: the folder layout MIB's README asks for, written for a model and task.

A submission is a folder holding one folder per task and model, named ``<task>_<model>`` (``_``
separates the two, so ``_`` inside either becomes ``-``; a model path gives its last component).
Each holds either

  * ``circuits``: 9 binary-membership circuits, one with at most k of the model's edges for each
    fraction k in ``SUBMISSION_FRACTIONS`` (0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%; MIB's
    evaluator adds the full model as 100% itself), files ``circuit_<k>.json`` (or ``.pt``); or
  * ``importances``: one file ``importances.json`` (or ``.pt``) with a score for every edge, from
    which MIB's evaluator takes the top-k circuits itself (for methods that score every edge, such
    as EAP and EAP-IG; not ACDC, whose edges removed untested have no score).

Files are EAP-IG graph files (``acdc_engine.formats.eap_ig``), which MIB reads with EAP-IG's
``Graph.from_json`` / ``from_pt``. ``README.md`` beside them records how each circuit was reached
(MIB reads only ``.json`` and ``.pt`` files). "At most k" is ``int(k * N)`` edges
(``edge_budget``), N the model's edge count in this engine's graph (as MIB's evaluator computes its
top-k sizes; for attention-only models EAP-IG's graph counts MLP edges too, so this bound is the
stricter one). How the circuits are found: ``acdc_engine.evaluation.mib``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.formats.eap_ig import circuit_to_eap_ig, circuit_to_eap_ig_pt

SUBMISSION_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The 9 circuits' edge fractions: MIB's fractions (``evaluation.faithfulness.MIB_FRACTIONS``) less
the full model, which MIB's evaluator adds itself."""
LAYOUTS = ("circuits", "importances")
FORMATS = ("json", "pt")


def slug(name: str) -> str:
    """A task or model name as a part of MIB's ``<task>_<model>`` folder name."""
    return Path(str(name).rstrip("/")).name.replace("_", "-")


def folder_name(task: str, model: str) -> str:
    """MIB's folder for a task and model, e.g. ``ioi_gpt2``."""
    return f"{slug(task)}_{slug(model)}"


def edge_budget(fraction: float, n_edges: int) -> int:
    """The most edges a circuit at fraction k may have: int(k * n_edges), as MIB counts."""
    return int(fraction * n_edges)


@dataclass
class FractionCircuit:
    """The circuit written for fraction k: at most ``budget`` edges; ``threshold`` (a threshold
    search) or ``top_n`` (the top edges of a scoring run) is what gave it."""

    fraction: float
    budget: int
    circuit: Circuit
    threshold: float | None = None
    top_n: int | None = None


@dataclass
class Submission:
    """What ``write_submission`` wrote: the task/model folder and its files."""

    folder: Path
    files: list[Path] = field(default_factory=list)


def _encode(circuit: Circuit, fmt: str) -> bytes:
    if fmt == "pt":
        return circuit_to_eap_ig_pt(circuit)
    return json.dumps(circuit_to_eap_ig(circuit), allow_nan=False).encode()


def _faithfulness(m: dict[str, Any]) -> str:
    """(circuit - empty) / (full - empty) from a circuit's metric block, for the README; "–" when
    a value is missing or the range is empty."""
    if any(m.get(k) is None for k in ("circuit", "full", "empty")) or m["full"] == m["empty"]:
        return "–"
    return f"{(m['circuit'] - m['empty']) / (m['full'] - m['empty']) + 0.0:.3f}"


def _clear_folder(out: str | Path, task: str, model: str) -> Path:
    """The task/model folder, without the .json / .pt files of an earlier run (MIB reads every one)."""
    folder = Path(out) / folder_name(task, model)
    if folder.exists() and not folder.is_dir():
        raise AcdcError(f"{folder} is a file, not a folder")
    stale = [p for p in folder.glob("*") if p.suffix in (".json", ".pt")] if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return folder


def write_submission(
    out: str | Path,
    task: str,
    model: str,
    *,
    circuits: Sequence[FractionCircuit] | None = None,
    importances: Circuit | None = None,
    fmt: str = "json",
    notes: Sequence[str] = (),
) -> Submission:
    """Write ``out/<task>_<model>/`` with the circuits at MIB's fractions, or the importance file,
    and its README.md (``notes``: lines on how the circuits were reached)."""
    if fmt not in FORMATS:
        raise AcdcError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if (circuits is None) == (importances is None):
        raise AcdcError("give either the circuits at MIB's fractions or one importance-score circuit")
    submission = Submission(_clear_folder(out, task, model))
    folder = submission.folder
    lines = [f"# MIB circuit-track submission: task {task}, model {model}", ""]
    if importances is not None:
        path = folder / f"importances.{fmt}"
        submission.files.append(atomic_write_bytes(path, _encode(importances, fmt)))
        lines += [f"`{path.name}`: a score for each of the {importances.n_edges_total} edges "
                  f"({importances.method.get('name', '?')}); MIB takes its top-k circuits itself.", ""]
    else:
        lines += ["| fraction | at most | edges | from | faithfulness | file |", "|---|---|---|---|---|---|"]
        for chosen in circuits:
            path = folder / f"circuit_{chosen.fraction:g}.{fmt}"
            submission.files.append(atomic_write_bytes(path, _encode(chosen.circuit, fmt)))
            source = f"threshold {chosen.threshold:.6g}" if chosen.threshold is not None else f"top {chosen.top_n} by \\|score\\|"
            lines.append(f"| {chosen.fraction:g} | {chosen.budget} | {chosen.circuit.n_edges} | {source} | "
                         f"{_faithfulness(chosen.circuit.metric)} | `{path.name}` |")
        lines.append("")
    lines += list(notes) + ["", "How the circuits are reached: `acdc_engine/evaluation/mib.py`."]
    submission.files.append(atomic_write_bytes(folder / "README.md", ("\n".join(lines) + "\n").encode()))
    return submission
