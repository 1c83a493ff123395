"""ROC curves of circuit-discovery methods against a ground-truth circuit.

A point is (FPR, TPR) of one predicted circuit against the truth, counted over
  edges: every edge of the graph; an edge is positive when it is in the truth's emitted circuit
         (``edge_in_graph``);
  nodes: every sender (``input`` or ``tok_embed``/``pos_embed``, heads ``a{L}.h{H}``, MLPs ``m{L}``)
         and ``logits``; a node is in a circuit when it has an in-graph edge, in or out.
TPR = TP / positives, FPR = FP / negatives; both need the truth to have at least one of each.

Curves, following the ACDC paper (Conmy et al. 2023):
  - from circuits (an ACDC threshold sweep): one point per circuit;
  - from scores (EAP, EAP-IG): rank edges by |score|; one point per distinct |score| cut (ties
    enter together). At node level a node's score is the largest |score| of its edges, so the node
    ranking's cuts give exactly the node sets of the edge ranking's cuts.
AUC: the points plus (0, 0) and (1, 1), sorted by FPR (then TPR), by the trapezoid rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.nodes import LOGITS, component_of

LEVELS = ("edge", "node")


@dataclass(frozen=True)
class RocPoint:
    """One predicted circuit against the truth.

    cut: what produced it (an ACDC threshold, or the |score| cut of a ranking); size: predicted
    positives (edges or nodes in the circuit); tp, fp: true and false positives.
    """

    fpr: float
    tpr: float
    cut: float
    size: int
    tp: int
    fp: int


@dataclass
class RocCurve:
    """Points of one method at one level ("edge" or "node"), in the order they were made."""

    level: str
    points: list[RocPoint] = field(default_factory=list)

    @property
    def auc(self) -> float:
        return roc_auc([(p.fpr, p.tpr) for p in self.points])


def roc_auc(points: Sequence[tuple[float, float]]) -> float:
    """Area under the ROC curve through ``points`` (fpr, tpr), (0, 0) and (1, 1): trapezoid rule
    after sorting by FPR, then TPR."""
    curve = sorted({(0.0, 0.0), (1.0, 1.0), *((float(f), float(t)) for f, t in points)})
    return sum((f2 - f1) * (t1 + t2) / 2 for (f1, t1), (f2, t2) in zip(curve, curve[1:]))


def node_names(graph: Graph) -> list[str]:
    """The nodes a node-level ROC counts: every sender, then ``logits``."""
    return graph.senders + [LOGITS]


def _receiver_nodes(graph: Graph) -> Tensor:
    """For each receiver, the index in ``node_names`` of the component it belongs to."""
    index = {name: i for i, name in enumerate(node_names(graph))}
    return torch.tensor([index[component_of(r)] for r in graph.receivers])


def node_mask(graph: Graph, edge_mask: Tensor) -> Tensor:
    """Nodes with at least one edge of ``edge_mask`` ([..., S, R] bool) -> [..., n_nodes] bool."""
    edge_mask = edge_mask & graph.edge_exists
    receiving = torch.zeros(*edge_mask.shape[:-2], len(graph.senders) + 1, dtype=torch.long)
    receiving.index_add_(-1, _receiver_nodes(graph), edge_mask.any(-2).long())
    logits_sends_nothing = torch.zeros(*edge_mask.shape[:-2], 1, dtype=torch.bool)
    sending = torch.cat([edge_mask.any(-1), logits_sends_nothing], -1)
    return sending | (receiving > 0)


def _truth_sets(truth: Circuit, level: str) -> tuple[Tensor, Tensor]:
    """(truth labels, universe) at ``level``: edges over [S, R], nodes over ``node_names``."""
    graph = truth.graph
    if level == "edge":
        return truth.in_graph.edges & graph.edge_exists, graph.edge_exists
    if level == "node":
        return node_mask(graph, truth.in_graph.edges), torch.ones(len(graph.senders) + 1, dtype=torch.bool)
    raise AcdcError(f"unknown ROC level '{level}'; choose one of {', '.join(LEVELS)}")


def _rates(truth: Tensor, universe: Tensor, level: str) -> tuple[int, int]:
    positives = int((truth & universe).sum())
    negatives = int((~truth & universe).sum())
    if positives == 0 or negatives == 0:
        raise AcdcError(
            f"the ground truth has {positives} {level}s in and {negatives} out of its circuit; "
            "a ROC curve needs at least one of each"
        )
    return positives, negatives


def check_same_graph(truth: Circuit, graph: Graph, what: str = "the circuit") -> None:
    """AcdcError unless ``graph`` has the truth's shape (layers, heads, MLPs, input split)."""
    if truth.graph.shape != graph.shape:
        raise AcdcError(f"the ground truth's graph {truth.graph.shape} differs from {what}'s {graph.shape}")


def roc_from_masks(truth: Circuit, edge_masks: Tensor, cuts: Sequence[float], level: str = "edge") -> RocCurve:
    """One point per predicted circuit: edge_masks [C, S, R] bool (True = in the circuit)."""
    labels, universe = _truth_sets(truth, level)
    positives, negatives = _rates(labels, universe, level)
    predicted = edge_masks & truth.graph.edge_exists if level == "edge" else node_mask(truth.graph, edge_masks)
    curve = RocCurve(level)
    for cut, mask in zip(cuts, predicted):
        tp = int((mask & labels & universe).sum())
        fp = int((mask & ~labels & universe).sum())
        curve.points.append(RocPoint(fp / negatives, tp / positives, float(cut), int((mask & universe).sum()), tp, fp))
    return curve


def roc_from_circuits(truth: Circuit, circuits: Sequence[Circuit], level: str = "edge") -> RocCurve:
    """One point per circuit (e.g. an ACDC threshold sweep); the cut is each circuit's threshold."""
    for circuit in circuits:
        check_same_graph(truth, circuit.graph)
    if not circuits:
        return RocCurve(level)
    masks = torch.stack([c.in_graph.edges for c in circuits])
    cuts = [math.nan if c.threshold is None else c.threshold for c in circuits]
    return roc_from_masks(truth, masks, cuts, level)


def roc_from_scores(truth: Circuit, scores: Tensor, level: str = "edge") -> RocCurve:
    """The ranking of edges by |score| (scores [S, R], e.g. EAP's): one point per distinct cut."""
    graph = truth.graph
    if tuple(scores.shape) != tuple(graph.edge_exists.shape):
        raise AcdcError(f"scores must have shape {tuple(graph.edge_exists.shape)}, got {tuple(scores.shape)}")
    magnitude = scores.detach().double().abs().where(graph.edge_exists, torch.tensor(-math.inf, dtype=torch.float64))
    if torch.isnan(magnitude).any():
        raise AcdcError("scores hold NaN (untested edges): rank circuits whose every edge has a score")
    labels, universe = _truth_sets(truth, level)
    positives, negatives = _rates(labels, universe, level)
    if level == "node":
        incident = torch.full((len(graph.senders) + 1,), -math.inf, dtype=torch.float64)
        incident[: len(graph.senders)] = magnitude.max(1).values
        magnitude = incident.scatter_reduce(0, _receiver_nodes(graph), magnitude.max(0).values, reduce="amax")
    values, labels_sorted = magnitude[universe], labels[universe]
    order = torch.argsort(values, descending=True, stable=True)
    values, labels_sorted = values[order], labels_sorted[order]
    tp = torch.cumsum(labels_sorted, 0)
    fp = torch.cumsum(~labels_sorted, 0)
    last_of_tie = torch.ones_like(values, dtype=torch.bool)
    last_of_tie[:-1] = values[1:] != values[:-1]
    curve = RocCurve(level)
    for i in last_of_tie.nonzero().flatten().tolist():
        curve.points.append(RocPoint(int(fp[i]) / negatives, int(tp[i]) / positives, float(values[i]), i + 1, int(tp[i]), int(fp[i])))
    return curve
