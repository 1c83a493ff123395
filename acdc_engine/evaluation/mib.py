"""Finding the circuits of a MIB circuit-track submission (the folder itself: ``acdc_engine.formats.mib``).

For each fraction k, a circuit with at most B = ``int(k * N)`` edges, N MIB's edge count of the
model: the edge count of EAP-IG's graph (``core.shape.eap_ig_edge_count``, which MIB's evaluator
uses; for attention-only models it includes EAP-IG's MLP edges, so B is larger than k times this
engine's edge count). Circuits are made as the method's registry entry says its circuits of other
sizes are (``CircuitSelection``):

SCORES (eap, eap-ig, eap-ig-activations, clean-corrupted, exact, edge-pruning; ``top_k_circuits``):
one scoring run (``discover(method, top_n=0)``); for each k, the B edges of largest |score|, pruned
to their input-to-logits paths (so at most B), each measured in a patched pass of its own (one
circuit's memory at a time). edge-pruning is a SCORES method here too: ONE training run at its
``target_sparsity`` (0.9 unless set), whose learned mask scores sigmoid(log_alpha) in (0, 1) rank
every edge, as MIB ranks the continuous masks of its own mask-learning method (UGS) by their value;
a training run per budget (nine trainings) is not made.

THRESHOLD (acdc, acdc-eap; a threshold search, ``acdc_fraction_search``): every run is
``discover(method, threshold=t)`` with one shared ``MetricCache`` and one batch size (the first
run's automatic choice), so each threshold's circuit is exactly a plain run's, and the circuits runs
have in common are evaluated once (``acdc_engine.evaluation.sweep``). ACDC's size is not monotone in
the threshold in general, so the search brackets each budget among the thresholds it has tried:

  1. t = 0 (this gives the metric range r = |m(empty) - m(full)|), then ``coarse`` thresholds spaced
     evenly on a log scale from 1e-4 r to r; then the largest is doubled (at most 30 times) until
     its circuit fits the smallest budget: ACDC with a threshold above every metric change it meets
     removes every edge.
  2. For each budget B, up to ``refine`` times: hi = the smallest tried threshold whose circuit has
     at most B edges, lo = the largest tried threshold below it; run ACDC at sqrt(lo * hi) (hi / 10
     when lo = 0). Stop early when a circuit of exactly B edges is found.
  3. For each k, the circuit with the most edges, at most B, among all thresholds tried (ties: the
     smallest threshold).

A budget B of 0 (a small model's smallest fractions) gives the empty circuit, whatever the method.
Progress (``acdc_engine.core.progress``): a bar over the thresholds run, or over the budgets measured.
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
from acdc_engine.core.progress import progress_bar
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.core.shape import eap_ig_edge_count
from acdc_engine.evaluation.faithfulness import CircuitEvaluator, check_fractions
from acdc_engine.formats.mib import SUBMISSION_FRACTIONS, FractionCircuit, edge_budget
from acdc_engine.resolve import resolve_task
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.methods import CircuitSelection, method_spec
from acdc_engine.methods.eap import greedy_edges, select_edges
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
    int(k * N) edges for each fraction k (N: MIB's edge count, ``eap_ig_edge_count``), by the
    search of the module docstring; ``discover_args`` go to every ``discover`` run (metric,
    ablation, model_name, progress, ...); ``progress`` also draws a bar over the thresholds run."""
    fractions = check_fractions(fractions)
    if coarse < 1 or refine < 0:
        raise AcdcError(f"coarse must be >= 1 and refine >= 0, got {coarse} and {refine}")
    if method_spec(method).circuits is not CircuitSelection.THRESHOLD:
        raise AcdcError(f"method '{method}' scores every edge, no threshold sizes its circuits: take its top-k circuits instead")
    runs = _ThresholdRuns(model, resolve_task(model, task, task_params), method, batch_size, discover_args)
    start = time.perf_counter()
    with progress_bar(progress=discover_args.get("progress", True), desc=f"MIB {method} thresholds", unit="run") as runs.bar:
        budgets = _coarse_sweep(runs, fractions, coarse)
        for budget in sorted(set(budgets)):
            _refine(runs, budget, refine)
    chosen = _choose(runs, fractions, budgets)
    tried = {t: c.n_edges for t, c in sorted(runs.circuits.items())}
    return AcdcSearch(chosen, tried, runs.cache.stats(), time.perf_counter() - start)


@dataclass
class _ThresholdRuns:
    """The search's runs: ``discover`` once per threshold, all with one ``MetricCache`` and one
    batch size (the first run's automatic choice unless given); ``bar`` counts the runs."""

    model: torch.nn.Module
    task: TaskData
    method: str
    batch_size: int | None
    discover_args: dict[str, Any]
    cache: MetricCache = field(default_factory=MetricCache)
    circuits: dict[float, Circuit] = field(default_factory=dict)
    bar: Any = None

    def run(self, threshold: float) -> Circuit:
        from acdc_engine.api import discover

        threshold = float(threshold)
        if threshold not in self.circuits:
            self.circuits[threshold] = discover(
                self.model, self.task, method=self.method, threshold=threshold, batch_size=self.batch_size,
                metric_cache=self.cache, **self.discover_args,
            )
            self.batch_size = self.circuits[threshold].run["batch_size"]
            if self.bar is not None:
                self.bar.update(1)
        return self.circuits[threshold]

    def best(self, budget: int) -> tuple[float, Circuit] | None:
        """(threshold, circuit) of the most edges at most ``budget`` (ties: the smallest threshold)."""
        fitting = [(t, c) for t, c in self.circuits.items() if c.n_edges <= budget]
        return max(fitting, key=lambda tc: (tc[1].n_edges, -tc[0])) if fitting else None


def _coarse_sweep(runs: _ThresholdRuns, fractions: list[float], coarse: int) -> list[int]:
    """Step 1 of the search: t = 0, ``coarse`` log-spaced thresholds, then the largest doubled until
    its circuit fits the smallest budget. Returns each fraction's edge budget."""
    first = runs.run(0.0)
    budgets = [edge_budget(k, eap_ig_edge_count(first.graph.shape)) for k in fractions]
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
    progress: bool = True,
) -> list[FractionCircuit]:
    """For each fraction k, the circuit of the B = int(k * N) edges of largest |score| of a scoring
    run (``scored``; N: MIB's edge count, ``eap_ig_edge_count``; at most every edge of this engine's
    graph), or the first B of its greedy order for a run with ``selection=greedy`` (information flow
    routes, as MIB sizes them: ``methods.eap.greedy_edges``), pruned to input-to-logits paths, its metric measured on ``task`` one circuit per patched
    pass (``progress``: a bar over the budgets)."""
    graph = scored.graph
    evaluator = CircuitEvaluator(model, task, metric or scored.metric.get("name"), ablation, graph.shape.split_input)
    metric_block = {"name": evaluator.metric_name, "full": evaluator.full, "empty": evaluator.empty}
    n_edges = eap_ig_edge_count(graph.shape)
    greedy = scored.method.get("selection") == "greedy"  # information flow routes: MIB grows its circuits greedily
    select = greedy_edges if greedy else lambda graph, scores, n: select_edges(graph, scores, top_n=n)
    out = []
    for fraction in progress_bar(check_fractions(fractions), progress=progress, desc="MIB budgets", unit="circuit"):
        budget = edge_budget(fraction, n_edges)
        top_n = min(budget, graph.n_edges)
        kept = CircuitMask(select(graph, scored.scores.edges, top_n), graph.full_head_input_mask())
        emitted = on_input_to_logits_paths(graph, kept)
        value = float(evaluator.metrics(CircuitMask.stack([emitted]))[0])
        circuit = Circuit(
            graph=graph, kept=kept, in_graph=emitted, scores=scored.scores,
            metric={**metric_block, "circuit": value}, threshold=None, model=scored.model, task=scored.task,
            method={**scored.method, "top_n": top_n, "fraction": fraction}, run=scored.run,
        )
        out.append(FractionCircuit(fraction, budget, circuit, top_n=top_n))
    return out
