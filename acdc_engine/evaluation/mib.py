"""MIB circuit-track submissions: the folder layout MIB's README asks for, written for a model and task.

A submission is a folder holding one folder per task and model, named ``<task>_<model>`` (``_``
separates the two, so ``_`` inside either becomes ``-``; a model path gives its last component).
Each holds either

  * ``circuits``: 9 binary-membership circuits, one with at most k of the model's edges for each
    fraction k in ``SUBMISSION_FRACTIONS`` (0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%; MIB's
    evaluator adds the full model as 100% itself), files ``circuit_<k>.json`` (or ``.pt``); or
  * ``importances``: one file ``importances.json`` (or ``.pt``) with a score for every edge, from
    which MIB's evaluator takes the top-k circuits itself (EAP / EAP-IG only: ACDC's scores do not
    rank every edge, since edges it removes untested have none).

Files are EAP-IG graph files (``acdc_engine.formats.eap_ig``), which MIB reads with EAP-IG's
``Graph.from_json`` / ``from_pt``. ``README.md`` beside them records how each circuit was reached
(MIB reads only ``.json`` and ``.pt`` files). "At most k" is ``int(k * N)`` edges, N the model's
edge count in this engine's graph (as MIB's evaluator computes its top-k sizes; for
attention-only models EAP-IG's graph counts MLP edges too, so this bound is the stricter one).

How the circuits are reached:

EAP / EAP-IG (top-k): one scoring run (``discover(method, top_n=0)``); for each k, the ``int(k * N)``
edges of largest |score|, pruned to their input-to-logits paths (so at most ``int(k * N)``).

ACDC (a threshold search, ``acdc_fraction_search``): every run is ``discover(method="acdc",
threshold=t)`` with one shared ``MetricCache`` and one batch size (the first run's automatic
choice), so each threshold's circuit is exactly a plain run's, and the circuits runs have in common
are evaluated once (``acdc_engine.evaluation.sweep``). ACDC's size is not monotone in the threshold
in general, so the search brackets each budget among the thresholds it has tried:

  1. t = 0 (this gives the metric range r = |m(empty) - m(full)|), then ``coarse`` thresholds spaced
     evenly on a log scale from 1e-4 r to r; then the largest is doubled (at most 30 times) until
     its circuit fits the smallest budget: ACDC with a threshold above every metric change it meets
     removes every edge.
  2. For each budget B, up to ``refine`` times: hi = the smallest tried threshold whose circuit has
     at most B edges, lo = the largest tried threshold below it; run ACDC at sqrt(lo * hi) (hi / 10
     when lo = 0). Stop early when a circuit of exactly B edges is found.
  3. For each k, the circuit with the most edges, at most B, among all thresholds tried (ties: the
     smallest threshold).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.core.errors import AcdcError
from acdc_engine.evaluation.faithfulness import MIB_FRACTIONS, CircuitEvaluator, check_fractions
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.resolve import resolve_task
from acdc_engine.formats.eap_ig import circuit_to_eap_ig, circuit_to_eap_ig_pt
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.methods.eap import select_edges
from acdc_engine.tasks import TaskData

SUBMISSION_FRACTIONS = tuple(k for k in MIB_FRACTIONS if k < 1)  # the 9 circuits; MIB adds 100% itself
LAYOUTS = ("circuits", "importances")
FORMATS = ("json", "pt")
MAX_DOUBLINGS = 30


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
    """The circuit written for fraction k: at most ``budget`` edges; ``threshold`` (ACDC) or
    ``top_n`` (EAP, EAP-IG) is what gave it."""

    fraction: float
    budget: int
    circuit: Circuit
    threshold: float | None = None
    top_n: int | None = None


@dataclass
class AcdcSearch:
    """An ACDC threshold search: the circuit chosen for each fraction, every threshold tried and
    its circuit's edge count, the shared cache's counters and the wall time."""

    chosen: list[FractionCircuit]
    tried: dict[float, int]
    cache: dict[str, int]
    seconds: float


def acdc_fraction_search(
    model: torch.nn.Module,
    task: TaskData | str,
    fractions: Sequence[float] = SUBMISSION_FRACTIONS,
    *,
    coarse: int = 8,
    refine: int = 3,
    batch_size: int | None = None,
    task_params: dict[str, Any] | None = None,
    **discover_args: Any,
) -> AcdcSearch:
    """ACDC circuits with at most int(k * N) edges for each fraction k, by the search of the module
    docstring; ``discover_args`` go to every ``discover`` run (metric, ablation, model_name, ...)."""
    from acdc_engine.api import discover

    fractions = check_fractions(fractions)
    if coarse < 1 or refine < 0:
        raise AcdcError(f"coarse must be >= 1 and refine >= 0, got {coarse} and {refine}")
    task_data = resolve_task(model, task, task_params)
    cache = MetricCache()
    runs: dict[float, Circuit] = {}
    start = time.perf_counter()

    def run(threshold: float) -> Circuit:
        nonlocal batch_size
        threshold = float(threshold)
        if threshold not in runs:
            runs[threshold] = discover(
                model, task_data, method="acdc", threshold=threshold, batch_size=batch_size, metric_cache=cache, **discover_args
            )
            batch_size = runs[threshold].run["batch_size"]
        return runs[threshold]

    first = run(0.0)
    budgets = [edge_budget(k, first.n_edges_total) for k in fractions]
    span = abs(first.metric["empty"] - first.metric["full"]) or 1.0
    for threshold in np.geomspace(1e-4, 1.0, coarse) * span:
        run(threshold)
    largest = max(runs)
    for _ in range(MAX_DOUBLINGS):
        if runs[largest].n_edges <= min(budgets):
            break
        largest *= 2
        run(largest)

    def best(budget: int) -> tuple[float, Circuit] | None:
        fitting = [(t, c) for t, c in runs.items() if c.n_edges <= budget]
        return max(fitting, key=lambda tc: (tc[1].n_edges, -tc[0])) if fitting else None

    for budget in sorted(set(budgets)):
        for _ in range(refine):
            found = best(budget)
            if found is None or found[1].n_edges == budget:
                break
            hi = min(t for t, c in runs.items() if c.n_edges <= budget)
            below = [t for t in runs if t < hi]
            if not below:
                break
            lo = max(below)
            run(math.sqrt(lo * hi) if lo > 0 else hi / 10)
    chosen = []
    for fraction, budget in zip(fractions, budgets):
        found = best(budget)
        if found is None:
            raise AcdcError(
                f"ACDC emitted no circuit with at most {budget} edges (fraction {fraction:g}) at thresholds up to {max(runs):.6g}"
            )
        chosen.append(FractionCircuit(fraction, budget, found[1], threshold=found[0]))
    tried = {t: c.n_edges for t, c in sorted(runs.items())}
    return AcdcSearch(chosen, tried, cache.stats(), time.perf_counter() - start)


def top_k_circuits(
    model: torch.nn.Module,
    scored: Circuit,
    task: TaskData,
    fractions: Sequence[float] = SUBMISSION_FRACTIONS,
    *,
    metric: str | None = None,
    ablation: str = "resample",
) -> list[FractionCircuit]:
    """For each fraction k, the circuit of the int(k * N) edges of largest |score| of a scoring run
    (``scored``: EAP / EAP-IG), pruned to input-to-logits paths, its metric measured on ``task``."""
    graph = scored.graph
    evaluator = CircuitEvaluator(model, task, metric or scored.metric.get("name"), ablation, graph.shape.split_input)
    chosen, masks = [], []
    for fraction in check_fractions(fractions):
        budget = edge_budget(fraction, graph.n_edges)
        kept = select_edges(graph, scored.scores.edges, top_n=budget)
        masks.append(on_input_to_logits_paths(graph, CircuitMask(kept, graph.full_head_input_mask())))
        chosen.append((fraction, budget, kept))
    values = evaluator.metrics(CircuitMask.stack(masks)).tolist()
    out = []
    for (fraction, budget, kept), emitted, value in zip(chosen, masks, values):
        circuit = Circuit(
            graph=graph, kept=CircuitMask(kept, graph.full_head_input_mask()), in_graph=emitted,
            scores=scored.scores,
            metric={"name": evaluator.metric_name, "full": evaluator.full, "circuit": value, "empty": evaluator.empty},
            threshold=None, model=scored.model, task=scored.task,
            method={**scored.method, "top_n": budget, "fraction": fraction}, run=scored.run,
        )
        out.append(FractionCircuit(fraction, budget, circuit, top_n=budget))
    return out


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
    if any(m.get(k) is None for k in ("circuit", "full", "empty")) or m["full"] == m["empty"]:
        return "–"
    return f"{(m['circuit'] - m['empty']) / (m['full'] - m['empty']) + 0.0:.3f}"


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
    folder = Path(out) / folder_name(task, model)
    if folder.exists() and not folder.is_dir():
        raise AcdcError(f"{folder} is a file, not a folder")
    stale = [p for p in folder.glob("*") if p.suffix in (".json", ".pt")] if folder.is_dir() else []
    for path in stale:  # MIB reads every .json / .pt file of the folder: leave none from an earlier run
        path.unlink()
    submission = Submission(folder)
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
