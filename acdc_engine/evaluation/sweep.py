"""ACDC threshold sweeps that evaluate each circuit once.

ACDC's runs at thresholds t1 < t2 make the same decisions up to the first candidate whose score lies
in [t1, t2) and so evaluate the same circuits up to there. ``acdc_threshold_sweep`` runs ``discover``
once per threshold with one shared ``MetricCache``: every circuit that recurs is looked up, not
evaluated again, and each threshold's circuit is exactly the one a plain ``discover`` run gives
(tests/test_roc.py checks it, scores included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.progress import progress_bar
from acdc_engine.resolve import resolve_task
from acdc_engine.measure.metric_cache import MetricCache
from acdc_engine.tasks import TaskData


@dataclass
class ThresholdSweep:
    """ACDC circuits at several thresholds.

    thresholds: as given; circuits[i] is the circuit at thresholds[i].
    cache: the shared MetricCache; its counters say how much evaluation the sweep saved.
    seconds: wall time of the whole sweep.
    """

    thresholds: list[float]
    circuits: list[Circuit]
    cache: MetricCache
    seconds: float


def acdc_threshold_sweep(
    model: torch.nn.Module,
    task: TaskData | str,
    thresholds: Sequence[float],
    *,
    method: str = "acdc",
    batch_size: int | None = None,
    task_params: dict[str, Any] | None = None,
    progress: bool = True,
    **discover_args: Any,
) -> ThresholdSweep:
    """A threshold method (exact ACDC by default, or another ``CircuitSelection.THRESHOLD`` method
    such as acdc-eap) at every threshold of ``thresholds``, sharing evaluations between the runs.

    Args:
        model: a HookedTransformer.
        task: a TaskData, or anything ``discover`` takes as a task (built once, with ``task_params``).
        thresholds: ACDC's tau values, in any order.
        batch_size: candidates per forward pass; None: the first run's automatic choice, kept for
            every run so that their speculative batches coincide.
        progress: a bar over the thresholds, and each run's own (``acdc_engine.core.progress``: drawn
            in a terminal, not under CI).
        discover_args: passed to ``discover`` (metric, ablation, split_input, model_name, ...).
    """
    from acdc_engine.api import discover
    from acdc_engine.methods import CircuitSelection, method_spec

    if method_spec(method).circuits is not CircuitSelection.THRESHOLD:
        raise AcdcError(f"a threshold sweep runs a threshold method such as acdc; '{method}' scores every edge")
    if not thresholds:
        raise AcdcError("a threshold sweep needs at least one threshold")
    task_data = resolve_task(model, task, task_params)
    cache = MetricCache()
    circuits = []
    start = time.perf_counter()
    for threshold in progress_bar(thresholds, progress=progress, desc="ACDC sweep", unit="threshold"):
        circuit = discover(
            model, task_data, method=method, threshold=threshold, batch_size=batch_size, metric_cache=cache,
            progress=progress, **discover_args,
        )
        batch_size = circuit.run["batch_size"]
        circuits.append(circuit)
    return ThresholdSweep(list(thresholds), circuits, cache, time.perf_counter() - start)
