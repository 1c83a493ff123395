"""Faithfulness: how much of the model's behaviour a circuit keeps, and MIB's CPR and CMD.

For a circuit C, m(C) is the metric with every edge outside C patched (``acdc_engine.measure.measurement``,
the path ``discover`` measures circuits with; lower is better). Normalised faithfulness

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

is 1 for the full model and 0 for the empty circuit, whichever way the metric points.

MIB (Mueller et al. 2025) scores a method that ranks edges (EAP, EAP-IG) by the circuits of its
top int(k * n_edges) edges by |score| for k in ``MIB_FRACTIONS``; here each is pruned to its
input-to-logits paths, as ``discover`` emits circuits. With f_k their faithfulness,

    CPR = area under f_k over k,   CMD = area under |1 - f_k| over k

by the trapezoid rule on a linear k axis from 0.001 to 1, as MIB's evaluation code computes them.
Higher CPR is better, lower CMD is better (0: every circuit matches the full model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods.eap import select_edges
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.tasks import TaskData

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def normalised_faithfulness(metric: float | Tensor, full: float, empty: float) -> float | Tensor:
    """f = (m(C) - m(empty)) / (m(full) - m(empty)): 1 at the full model, 0 at the empty circuit."""
    return (metric - empty) / (full - empty)


class CircuitEvaluator:
    """The metric of many circuits of ``model`` on ``task`` (a ``Measurement``), in batches, and
    their normalised faithfulness.

    Args:
        model: a HookedTransformer.
        task: the task's data (clean and corrupted prompts, positions, answers).
        metric: a metric name (``acdc_engine.measure.metrics``); None: the task's default.
        ablation: "resample", "zero" or "mean".
        split_input: token and positional embeddings as two senders.
        batch_size: circuits per forward pass.
    Attributes: measurement, graph, metric_name, full (m(full model)), empty (m(empty circuit)),
    as ``discover`` measures them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: TaskData,
        metric: str | None = None,
        ablation: str = "resample",
        split_input: bool = False,
        batch_size: int = 16,
    ) -> None:
        self.measurement = Measurement(model, task, metric, ablation, split_input)
        self.batch_size = max(1, int(batch_size))
        self.full = self.measurement.full
        self.empty = self.measurement.empty()

    @property
    def graph(self) -> Graph:
        return self.measurement.graph

    @property
    def metric_name(self) -> str:
        return self.measurement.metric_name

    def metrics(self, masks: CircuitMask) -> Tensor:
        """m(C) of circuits ``masks`` (bool, edges [C, S, R], head inputs [C, L, H, 3]) -> [C] float64."""
        if masks.edges.shape[1:] != self.graph.edge_exists.shape:
            raise AcdcError(f"edge masks must be [C, {', '.join(map(str, self.graph.edge_exists.shape))}], got {tuple(masks.edges.shape)}")
        values = [self.measurement.evaluate(masks[i : i + self.batch_size]) for i in range(0, len(masks), self.batch_size)]
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)

    def faithfulness(self, values: Tensor) -> Tensor:
        """f = (m - m(empty)) / (m(full) - m(empty)) of metric values [C]."""
        if self.full == self.empty:
            raise AcdcError(
                f"the full model and the empty circuit score the same {self.metric_name} ({self.full:.6g}): "
                "faithfulness is undefined for this task and metric"
            )
        return normalised_faithfulness(values, self.full, self.empty)

    def circuit_masks(self, circuits: Sequence[Circuit]) -> CircuitMask:
        """The emitted circuits' masks, stacked; AcdcError if a circuit's graph is not this model's."""
        for circuit in circuits:
            if circuit.graph.shape != self.graph.shape:
                raise AcdcError(f"circuit graph {circuit.graph.shape} does not match the model's {self.graph.shape}")
        return CircuitMask.stack([c.in_graph for c in circuits])


@dataclass
class FaithfulnessCurve:
    """Faithfulness of a method's circuits against their size.

    cuts: what made each circuit: the fraction k of the graph's edges for top-k circuits
        (``ranked``), else the circuit's threshold (an ACDC sweep; NaN if it has none);
    edges: edges in each emitted circuit; metric: m(C); faithfulness: f(C);
    total_edges: the graph's edge count.
    """

    cuts: list[float]
    edges: list[int]
    metric: list[float]
    faithfulness: list[float]
    total_edges: int
    ranked: bool

    @property
    def sizes(self) -> list[float]:
        """Each circuit's edges as a fraction of the graph's."""
        return [n / self.total_edges for n in self.edges]

    @property
    def cpr(self) -> float | None:
        """MIB's CPR (area under f over k; at most 0.999 on MIB's fractions); None unless ``ranked``."""
        return area_under(self.cuts, self.faithfulness) if self.ranked else None

    @property
    def cmd(self) -> float | None:
        """MIB's CMD (area under |1 - f| over k); None unless ``ranked``."""
        return area_under(self.cuts, [abs(1 - f) for f in self.faithfulness]) if self.ranked else None


def area_under(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoid rule over the points (xs[i], ys[i]), xs increasing."""
    if len(xs) != len(ys):
        raise AcdcError(f"{len(xs)} x values but {len(ys)} y values")
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise AcdcError(f"fractions must increase strictly, got {list(xs)}")
    return sum((x2 - x1) * (y1 + y2) / 2 for x1, x2, y1, y2 in zip(xs, xs[1:], ys, ys[1:]))


def check_fractions(fractions: Sequence[float]) -> list[float]:
    values = [float(k) for k in fractions]
    if not values or any(not 0 < k <= 1 for k in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise AcdcError(f"fractions must be increasing numbers in (0, 1], got {list(fractions)}")
    return values


def top_fraction_masks(evaluator: CircuitEvaluator, scores: Tensor, fractions: Sequence[float]) -> CircuitMask:
    """The emitted circuits of the top int(k * n_edges) edges by |score| for each k: [K, ...]."""
    graph = evaluator.graph
    return CircuitMask.stack(
        on_input_to_logits_paths(graph, CircuitMask(select_edges(graph, scores, top_n=int(k * graph.n_edges)), graph.full_head_input_mask()))
        for k in check_fractions(fractions)
    )


def faithfulness_of_scores(evaluator: CircuitEvaluator, scores: Tensor, fractions: Sequence[float] = MIB_FRACTIONS) -> FaithfulnessCurve:
    """MIB's curve for a ranking: the top-k circuits' faithfulness for each fraction k."""
    return _curve(evaluator, top_fraction_masks(evaluator, scores, fractions), check_fractions(fractions), ranked=True)


def faithfulness_of_circuits(evaluator: CircuitEvaluator, circuits: Sequence[Circuit]) -> FaithfulnessCurve:
    """Faithfulness of given circuits (e.g. an ACDC sweep), sorted by size."""
    masks = evaluator.circuit_masks(circuits)
    order = torch.argsort(masks.edges.flatten(1).sum(1), stable=True)
    cuts = [math.nan if circuits[i].threshold is None else float(circuits[i].threshold) for i in order.tolist()]
    return _curve(evaluator, masks[order], cuts, ranked=False)


def _curve(evaluator: CircuitEvaluator, masks: CircuitMask, cuts: list[float], ranked: bool) -> FaithfulnessCurve:
    values = evaluator.metrics(masks)
    return FaithfulnessCurve(
        cuts=cuts,
        edges=masks.edges.flatten(1).sum(1).tolist(),
        metric=values.tolist(),
        faithfulness=evaluator.faithfulness(values).tolist(),
        total_edges=evaluator.graph.n_edges,
        ranked=ranked,
    )
