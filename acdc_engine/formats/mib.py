"""MIB circuit-track submissions: the folder layout MIB's README asks for, written for a model and task.

A submission is a folder OUT holding, for each task and model, one folder ``OUT/<task>_<model>/``
named with MIB's keys (``mib_folder``): the task's MIB name with ``-`` for ``_`` (``ioi``, ``mcqa``,
``arithmetic-addition``, ``arithmetic-subtraction``, ``arc-easy``, ``arc-challenge``, as MIB's
scripts name their folders) and MIB's model key (``gpt2``, ``qwen2.5``, ``gemma2``, ``llama3``,
``interpbench``). ``model_key`` and ``task_key`` find the keys of this engine's names (the
``conf/model`` choices and their Hugging Face ids; the ``ioi`` task); a name without one gets none,
and the caller asks for the key (``acdc-mib --model-key`` / ``--task-key``). The task/model folder
holds exactly what MIB reads, either

  * ``circuits``: 9 binary-membership circuits, one with at most k of the model's edges for each
    fraction k in ``SUBMISSION_FRACTIONS`` (0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%; MIB's
    evaluator adds the full model as 100% itself), files ``circuit_<k>.json`` (or ``.pt``); or
  * ``importances``: one file ``importances.json`` (or ``.pt``) with a score for every edge, from
    which MIB's evaluator takes the top-k circuits itself.

Files are EAP-IG graph files (``acdc_engine.formats.eap_ig``), which MIB reads with EAP-IG's
``Graph.from_json`` / ``from_pt``. "At most k" is ``int(k * N)`` edges (``edge_budget``), N the
edge count of EAP-IG's graph of the model (``core.shape.eap_ig_edge_count``, which MIB's evaluator
uses; for attention-only models it counts EAP-IG's MLP edges too: 110 for 2 layers x 4 heads, where
this engine's graph has 81). How each circuit was reached, and which are empty, is written NEXT TO
the task/model folder, in ``OUT/<task>_<model>.md`` (MIB reads only the folders). How the circuits
are found: ``acdc_engine.evaluation.mib``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.shape import eap_ig_edge_count
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.formats.eap_ig import circuit_to_eap_ig, circuit_to_eap_ig_pt

SUBMISSION_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The 9 circuits' edge fractions: MIB's fractions (``evaluation.faithfulness.MIB_FRACTIONS``) less
the full model, which MIB's evaluator adds itself."""
LAYOUTS = ("circuits", "importances")
FORMATS = ("json", "pt")

MIB_MODELS = {
    "gpt2": "gpt2",
    "qwen2.5": "Qwen/Qwen2.5-0.5B",
    "gemma2": "google/gemma-2-2b",
    "llama3": "meta-llama/Llama-3.1-8B",
    "interpbench": None,
}
"""MIB's model keys and the Hugging Face repository of each (InterpBench's model is MIB's own)."""
MODEL_ALIASES = {"gpt2-small": "gpt2"}
"""Further names of MIB's models: TransformerLens's name of GPT-2 small, which MIB loads."""
MIB_TASKS = ("ioi", "mcqa", "arithmetic-addition", "arithmetic-subtraction", "arc-easy", "arc-challenge")
"""MIB's task names as its folder names spell them (its scripts write ``arc_easy`` as ``arc-easy``)."""
MIB_FOLDERS = (
    "ioi_gpt2", "ioi_qwen2.5", "ioi_gemma2", "ioi_llama3", "ioi_interpbench",
    "mcqa_qwen2.5", "mcqa_gemma2", "mcqa_llama3",
    "arithmetic-addition_llama3", "arithmetic-subtraction_llama3",
    "arc-easy_gemma2", "arc-easy_llama3", "arc-challenge_llama3",
)
"""The task/model folders MIB's evaluator and results table score; it skips any other."""
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
"""A key: letters, digits, ``.`` and ``-`` (``_`` separates task from model in a folder name)."""


def model_key(name: str) -> str | None:
    """MIB's key of model ``name`` (a ``conf/model`` choice such as ``Qwen2.5-0.5B``, a Hugging Face
    id such as ``Qwen/Qwen2.5-0.5B``, or a MIB key itself; any case), or None when MIB has no such
    model (shipped toy models, local folders, other pretrained models)."""
    lowered = str(name).lower()
    if lowered in MIB_MODELS:
        return lowered
    if lowered in MODEL_ALIASES:
        return MODEL_ALIASES[lowered]
    for key, repository in MIB_MODELS.items():
        if repository is not None and lowered in (repository.lower(), repository.lower().rsplit("/", 1)[-1]):
            return key
    return None


def task_key(name: str) -> str | None:
    """MIB's folder name of task ``name`` (``arc_easy`` or ``arc-easy`` gives ``arc-easy``; this
    engine's ``ioi`` gives ``ioi``), or None when MIB has no such task."""
    normalised = str(name).lower().replace("_", "-")
    return normalised if normalised in MIB_TASKS else None


def check_model_key(key: str) -> str:
    """``key`` as the model part of a folder name; AcdcError unless it is letters, digits, ``.`` and
    ``-`` (no ``_``: MIB splits folder names at it)."""
    return _checked(key, "model")


def check_task_key(key: str) -> str:
    """``key`` as the task part of a folder name, its ``_`` made ``-`` as MIB's scripts write them
    (``arc_easy`` -> ``arc-easy``); AcdcError unless it is then letters, digits, ``.`` and ``-``."""
    return _checked(str(key).replace("_", "-"), "task")


def _checked(key: str, what: str) -> str:
    if not KEY_PATTERN.fullmatch(str(key)):
        raise AcdcError(f"{what} key {key!r}: a key holds only letters, digits, '.' and '-' ('_' separates task from model)")
    return str(key)


def mib_folder(task: str, model: str) -> str:
    """MIB's folder name for task key ``task`` and model key ``model``, e.g. ``arc-easy_llama3``."""
    return f"{check_task_key(task)}_{check_model_key(model)}"


def edge_budget(fraction: float, n_edges: int) -> int:
    """The most edges a circuit at fraction k may have: int(k * n_edges), as MIB counts, with
    ``n_edges`` MIB's edge count of the model (``eap_ig_edge_count``)."""
    return int(fraction * n_edges)


@dataclass
class FractionCircuit:
    """The circuit written for fraction k: at most ``budget`` edges (``edge_budget`` of MIB's edge
    count); ``threshold`` (a threshold search) or ``top_n`` (the top edges of a scoring run) is what
    gave it."""

    fraction: float
    budget: int
    circuit: Circuit
    threshold: float | None = None
    top_n: int | None = None

    @property
    def file_stem(self) -> str:
        """The circuit's file name without its suffix, e.g. ``circuit_0.001``."""
        return f"circuit_{self.fraction:g}"


@dataclass
class Submission:
    """What ``write_submission`` wrote: the task/model folder, its files, the description file
    beside the folder, and the budgeted circuits that are empty (none for importances)."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    description: Path | None = None
    empty: list[FractionCircuit] = field(default_factory=list)


def _encode(circuit: Circuit, fmt: str) -> bytes:
    if fmt == "pt":
        return circuit_to_eap_ig_pt(circuit)
    return json.dumps(circuit_to_eap_ig(circuit), allow_nan=False).encode()


def _faithfulness(m: dict[str, Any]) -> str:
    """(circuit - empty) / (full - empty) from a circuit's metric block, for the description; "–"
    when a value is missing or the range is empty."""
    if any(m.get(k) is None for k in ("circuit", "full", "empty")) or m["full"] == m["empty"]:
        return "–"
    return f"{(m['circuit'] - m['empty']) / (m['full'] - m['empty']) + 0.0:.3f}"


def check_folder(out: str | Path, folder: str) -> list[Path]:
    """The .json / .pt files of an earlier run in ``out/folder`` (to be replaced: MIB reads every
    one). AcdcError when it is a file, or holds anything else (a README.md, a folder): it must hold
    exactly what MIB reads, and nothing here deletes what it did not write."""
    path = Path(out) / folder
    if path.exists() and not path.is_dir():
        raise AcdcError(f"{path} is a file, not a folder")
    entries = sorted(path.iterdir()) if path.is_dir() else []
    other = [p.name for p in entries if not (p.is_file() and p.suffix in (".json", ".pt"))]
    if other:
        raise AcdcError(f"{path} holds {', '.join(other)}, which MIB does not read: remove it (the folder holds only circuit files)")
    return entries


def _prepare_folder(out: str | Path, folder: str) -> Path:
    """``out/folder`` without the circuit files of an earlier run (``check_folder``)."""
    for stale in check_folder(out, folder):
        stale.unlink()
    return Path(out) / folder


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
    """Write ``out/<task>_<model>/`` (``task``, ``model``: MIB's keys) with the circuits at MIB's
    fractions or the importance file, and the description ``out/<task>_<model>.md`` beside it
    (``notes``: lines on how the circuits were reached)."""
    if fmt not in FORMATS:
        raise AcdcError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if (circuits is None) == (importances is None):
        raise AcdcError("give either the circuits at MIB's fractions or one importance-score circuit")
    name = mib_folder(task, model)
    submission = Submission(_prepare_folder(out, name))
    reference = importances if importances is not None else circuits[0].circuit
    lines = [f"# MIB circuit-track submission `{name}`", "",
             f"Model {reference.model.get('name', '?')}, task {reference.task.get('name', '?')}; "
             f"MIB counts {eap_ig_edge_count(reference.graph.shape)} edges (EAP-IG's graph), "
             f"this engine's graph {reference.n_edges_total}.", ""]
    if importances is not None:
        path = submission.folder / f"importances.{fmt}"
        submission.files.append(atomic_write_bytes(path, _encode(importances, fmt)))
        lines += [f"`{name}/{path.name}`: a score for each edge ({importances.method.get('name', '?')}); "
                  "MIB takes its top-k circuits itself.", ""]
    else:
        for chosen in circuits:
            submission.files.append(atomic_write_bytes(submission.folder / f"{chosen.file_stem}.{fmt}", _encode(chosen.circuit, fmt)))
        submission.empty = [c for c in circuits if c.circuit.n_edges == 0]
        lines += _circuit_table(circuits, fmt) + _empty_lines(submission.empty, len(circuits))
    lines += list(notes) + ["", "How the circuits are reached: `acdc_engine/evaluation/mib.py`."]
    submission.description = atomic_write_bytes(Path(out) / f"{name}.md", ("\n".join(lines) + "\n").encode())
    return submission


def _circuit_table(circuits: Sequence[FractionCircuit], fmt: str) -> list[str]:
    """The description's table: one row per circuit (fraction, budget, edges, source, faithfulness, file)."""
    lines = ["| fraction | at most | edges | from | faithfulness | file |", "|---|---|---|---|---|---|"]
    for chosen in circuits:
        source = f"threshold {chosen.threshold:.6g}" if chosen.threshold is not None else f"top {chosen.top_n} by \\|score\\|"
        lines.append(f"| {chosen.fraction:g} | {chosen.budget} | {chosen.circuit.n_edges} | {source} | "
                     f"{_faithfulness(chosen.circuit.metric)} | `{chosen.file_stem}.{fmt}` |")
    return lines + [""]


def _empty_lines(empty: Sequence[FractionCircuit], total: int) -> list[str]:
    """The description's list of the empty circuits among ``total`` (none: no lines)."""
    if not empty:
        return []
    return [f"Empty circuits ({len(empty)} of {total}):",
            *[f"- {empty_warning(c)}" for c in empty], ""]


def empty_warning(chosen: FractionCircuit) -> str:
    """One line naming an empty budgeted circuit: its file, fraction and budget of MIB's edges."""
    n_edges = eap_ig_edge_count(chosen.circuit.graph.shape)
    return f"{chosen.file_stem} is empty (fraction {chosen.fraction:g}: at most {chosen.budget} of {n_edges} edges)"
