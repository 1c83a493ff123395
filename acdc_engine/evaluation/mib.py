"""Finding the circuits of a MIB circuit-track submission (the folder itself: ``acdc_engine.formats.mib``).

For each fraction k of the model's N edges, a circuit with at most ``int(k * N)`` edges, by how the
method makes circuits of other sizes (its registry entry's ``CircuitSelection``):

SCORES (EAP, EAP-IG; ``top_k_circuits``): one scoring run (``discover(method, top_n=0)``); for each
k, the ``int(k * N)`` edges of largest |score|, pruned to their input-to-logits paths (so at most
``int(k * N)``).

THRESHOLD (ACDC; a threshold search, ``acdc_fraction_search``): every run is ``discover(method,
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

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.evaluation.faithfulness import CircuitEvaluator, check_fractions
from acdc_engine.formats.mib import SUBMISSION_FRACTIONS, FractionCircuit, edge_budget
from acdc_engine.resolve import resolve_task
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.methods import CircuitSelection, method_spec
from acdc_engine.methods.eap import select_edges
from acdc_engine.tasks import TaskData

MAX_DOUBLINGS = 30


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
    method: str = "acdc",
    coarse: int = 8,
    refine: int = 3,
    batch_size: int | None = None,
    task_params: dict[str, Any] | None = None,
    **discover_args: Any,
) -> AcdcSearch:
    """Circuits of a threshold method (``CircuitSelection.THRESHOLD``: ACDC) with at most
    int(k * N) edges for each fraction k, by the search of the module docstring; ``discover_args``
    go to every ``discover`` run (metric, ablation, model_name, ...)."""
    fractions = check_fractions(fractions)
    if coarse < 1 or refine < 0:
        raise AcdcError(f"coarse must be >= 1 and refine >= 0, got {coarse} and {refine}")
    if method_spec(method).circuits is not CircuitSelection.THRESHOLD:
        raise AcdcError(f"method '{method}' scores every edge, no threshold sizes its circuits: take its top-k circuits instead")
    runs = _ThresholdRuns(model, resolve_task(model, task, task_params), method, batch_size, discover_args)
    start = time.perf_counter()
    budgets = _coarse_sweep(runs, fractions, coarse)
    for budget in sorted(set(budgets)):
        _refine(runs, budget, refine)
    chosen = _choose(runs, fractions, budgets)
    tried = {t: c.n_edges for t, c in sorted(runs.circuits.items())}
    return AcdcSearch(chosen, tried, runs.cache.stats(), time.perf_counter() - start)


@dataclass
class _ThresholdRuns:
    """The search's runs: ``discover`` once per threshold, all with one ``MetricCache`` and one
    batch size (the first run's automatic choice unless given)."""

    model: torch.nn.Module
    task: TaskData
    method: str
    batch_size: int | None
    discover_args: dict[str, Any]
    cache: MetricCache = field(default_factory=MetricCache)
    circuits: dict[float, Circuit] = field(default_factory=dict)

    def run(self, threshold: float) -> Circuit:
        from acdc_engine.api import discover

        threshold = float(threshold)
        if threshold not in self.circuits:
            self.circuits[threshold] = discover(
                self.model, self.task, method=self.method, threshold=threshold, batch_size=self.batch_size,
                metric_cache=self.cache, **self.discover_args,
            )
            self.batch_size = self.circuits[threshold].run["batch_size"]
        return self.circuits[threshold]

    def best(self, budget: int) -> tuple[float, Circuit] | None:
        """(threshold, circuit) of the most edges at most ``budget`` (ties: the smallest threshold)."""
        fitting = [(t, c) for t, c in self.circuits.items() if c.n_edges <= budget]
        return max(fitting, key=lambda tc: (tc[1].n_edges, -tc[0])) if fitting else None


def _coarse_sweep(runs: _ThresholdRuns, fractions: list[float], coarse: int) -> list[int]:
    """Step 1 of the search: t = 0, ``coarse`` log-spaced thresholds, then the largest doubled until
    its circuit fits the smallest budget. Returns each fraction's edge budget."""
    first = runs.run(0.0)
    budgets = [edge_budget(k, first.n_edges_total) for k in fractions]
    span = abs(first.metric["empty"] - first.metric["full"]) or 1.0
    for threshold in np.geomspace(1e-4, 1.0, coarse) * span:
        runs.run(threshold)
    largest = max(runs.circuits)
    for _ in range(MAX_DOUBLINGS):
        if runs.circuits[largest].n_edges <= min(budgets):
            break
        largest *= 2
        runs.run(largest)
    return budgets


def _refine(runs: _ThresholdRuns, budget: int, refine: int) -> None:
    """Step 2 for one budget: up to ``refine`` runs between the thresholds bracketing it."""
    for _ in range(refine):
        found = runs.best(budget)
        if found is None or found[1].n_edges == budget:
            return
        hi = min(t for t, c in runs.circuits.items() if c.n_edges <= budget)
        below = [t for t in runs.circuits if t < hi]
        if not below:
            return
        lo = max(below)
        runs.run(math.sqrt(lo * hi) if lo > 0 else hi / 10)


def _choose(runs: _ThresholdRuns, fractions: list[float], budgets: list[int]) -> list[FractionCircuit]:
    """Step 3: each fraction's circuit among every threshold tried."""
    chosen = []
    for fraction, budget in zip(fractions, budgets):
        found = runs.best(budget)
        if found is None:
            raise AcdcError(
                f"{runs.method} emitted no circuit with at most {budget} edges (fraction {fraction:g}) "
                f"at thresholds up to {max(runs.circuits):.6g}"
            )
        chosen.append(FractionCircuit(fraction, budget, found[1], threshold=found[0]))
    return chosen


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
