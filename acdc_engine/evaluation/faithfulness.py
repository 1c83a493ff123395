"""Faithfulness: how much of the model's behaviour a circuit keeps, and MIB's CPR and CMD.

For a circuit C, m(C) is the metric with every edge outside C patched (``acdc_engine.measure.measurement``,
the path ``discover`` measures circuits with). Normalised faithfulness

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

is 1 for the full model (the unpatched model: MIB's ``evaluate_baseline``) and 0 for the empty
circuit (every edge patched), whichever way the metric points: MIB's percentages of the full model's
behaviour, as fractions. The metric is averaged over prompts before it is normalised, as MIB does.

MIB's CPR and CMD (Mueller et al. 2025; hannamw/MIB-circuit-track, ``MIB_circuit_track/evaluation.py``
``evaluate_area_under_curve``, and ``print_results.py``), as computed here for a ranking of edges:

  * N, the edge count: that of EAP-IG's graph (``len(graph.edges)``), which has one ``input`` node and
    an MLP in every layer, also in attention-only models (``mib_edge_count``;
    ``core.shape.eap_ig_edge_count``: 110 for 2 layers of 4 heads attention-only, where this engine's
    graph has 81).
  * fractions k: ``MIB_FRACTIONS`` (0.001 ... 0.5 and 1, the full model).
  * the circuit at k: the n = int(k * N) edges ranked first (Python's ``int`` of the float product:
    int(0.001 * 110) = 0, the empty circuit), pruned to its input-to-logits paths
    (``core.pruning``; what EAP-IG's ``Graph.apply_topn(n, absolute, prune=True)`` and ``Graph.prune``
    leave: a node stays while it has an edge in and an edge out). MIB's ``apply_greedy`` is for its
    information-flow-routes method only: ``Ranking.greedy`` (``methods.eap.greedy_order``), which a
    run of that method with ``selection=greedy`` is ranked by.
  * the ranking (``Ranking``): ``signed``, by score, largest first (MIB's ``absolute=False``), or
    ``absolute``, by |score| (MIB's ``--absolute``). MIB's results printer reports CPR from the
    signed run and CMD from the absolute run (``MIB_CPR_RANKING``, ``MIB_CMD_RANKING``; ``mib_scores``).
    The ranking runs over EAP-IG's edges: an attention-only model's MLP edges, which EAP-IG's graph
    holds with score 0, take their places in it (after every positive score in the signed ranking,
    last in the absolute one) and are dropped from the circuit (there is no MLP to connect).
  * ties: MIB sorts with ``torch.argsort``, which is not stable, so it leaves the order of equal
    scores unspecified; here they go in EAP-IG's score-matrix order: senders in forward order, then
    receivers as EAP-IG lists them (per layer the heads' q inputs, their k and v inputs, the MLP;
    logits last).
  * CPR = area under f over k, CMD = area under |1 - f| over k: the trapezoid rule on a linear k
    axis through the fractions only (0.001 to 1, no point at 0; MIB's ``log_scale=False``). CPR is
    higher-is-better (at most 0.999 on MIB's fractions), CMD lower-is-better (0: every circuit
    matches the full model).

MIB measures with its ``logit_diff`` (answer minus wrong answer, per prompt, averaged); the metric
here is the evaluator's. Differences from MIB, by name: the circuit's edge count (``edges``) is this
engine's graph's, without the MLP edges EAP-IG's pruning may leave in an attention-only model's
circuit (they carry nothing); a head of an attention-only model whose only edges in the circuit go
to or come from those MLP edges is pruned here and kept there, which gives the same metric under
resample ablation (its output is then the corrupted one, or read by no edge of the circuit) but
may differ under zero and mean ablation. An edge without a score (NaN) is refused (MIB cannot rank
it either).

A MIB submission of 9 circuits (``formats.mib``: ``circuit_<k>.json`` / ``.pt``, at most int(k * N)
edges each) has no evaluator in MIB's public code; here its curve is each circuit's f at its k and
the full model's at k = 1, with CPR and CMD its areas as above (``faithfulness_of_budgeted_circuits``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import torch
from torch import Tensor

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph, build_graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.nodes import NodeKind, edge_name, parse_node
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.core.shape import GraphShape, eap_ig_edge_count, edge_count
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods.eap import greedy_order
from acdc_engine.tasks import TaskData

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Ranking(Enum):
    """How edges are ranked for MIB's top-k circuits."""

    signed = "signed"  # by score, largest first: MIB's absolute=False, its CPR convention
    absolute = "absolute"  # by |score|, largest first: MIB's --absolute, its CMD convention
    greedy = "greedy"  # grown from the logits (EAP-IG's apply_greedy): MIB's rule for information flow routes


MIB_CPR_RANKING = Ranking.signed
"""The ranking MIB's results printer reports CPR from (``print_results.py``: the abs-False run)."""
MIB_CMD_RANKING = Ranking.absolute
"""The ranking MIB's results printer reports CMD from (the abs-True run)."""


def normalised_faithfulness(metric: float | Tensor, full: float, empty: float) -> float | Tensor:
    """f = (m(C) - m(empty)) / (m(full) - m(empty)): 1 at the full model, 0 at the empty circuit."""
    return (metric - empty) / (full - empty)


def mib_edge_count(shape: GraphShape) -> int:
    """N, the edge count MIB's fractions are of: EAP-IG's graph's (``eap_ig_edge_count``: MLP edges
    counted for attention-only models too). A graph that splits the input has no EAP-IG form; its N
    is this engine's edge count of the same shape with MLPs."""
    if not shape.split_input:
        return eap_ig_edge_count(shape)
    return edge_count(_with_mlps(shape))


def _with_mlps(shape: GraphShape) -> GraphShape:
    return GraphShape(shape.n_layers, shape.n_heads, True, shape.split_input, shape.parallel_attn_mlp)


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

    cuts: what made each circuit: its fraction k of MIB's N (``ranked``), else the circuit's
        threshold (an ACDC sweep; NaN if it has none);
    edges: edges in each emitted circuit (this engine's graph); metric: m(C); faithfulness: f(C);
    total_edges: N, the edge count ``sizes`` are fractions of (``mib_edge_count``);
    ranked: the circuits are MIB's, one per fraction k (a ranking's top-k circuits, or a
        submission's budgeted ones), so CPR and CMD are defined;
    ranking: the ranking the top-k circuits came from; None for circuits given as such.
    nodes: the top-k circuits are MIB's node track's (k a fraction of the scored nodes,
        ``mib_node_scores``), not its edge track's.
    """

    cuts: list[float]
    edges: list[int]
    metric: list[float]
    faithfulness: list[float]
    total_edges: int
    ranked: bool
    ranking: Ranking | None = None
    nodes: bool = False

    @property
    def sizes(self) -> list[float]:
        """Each circuit's edges as a fraction of N."""
        return [n / self.total_edges for n in self.edges]

    @property
    def basis(self) -> str:
        """What the circuits came from, for labels: the ranking's name ("signed", "absolute"; of
        nodes: "signed nodes"), "circuits" (a submission's budgeted circuits) or "thresholds" (a sweep)."""
        if self.ranking is not None:
            return f"{self.ranking.value} nodes" if self.nodes else self.ranking.value
        return "circuits" if self.ranked else "thresholds"

    @property
    def cpr(self) -> float | None:
        """MIB's CPR of this curve (area under f over k; at most 0.999 on MIB's fractions); None
        unless ``ranked``."""
        return area_under(self.cuts, self.faithfulness) if self.ranked else None

    @property
    def cmd(self) -> float | None:
        """MIB's CMD of this curve (area under |1 - f| over k); None unless ``ranked``."""
        return area_under(self.cuts, [abs(1 - f) for f in self.faithfulness]) if self.ranked else None


@dataclass(frozen=True)
class MibScores:
    """MIB's two numbers for one method on one model and task, each with the curve it is the area
    of: CPR (higher is better) and CMD (lower is better)."""

    cpr_curve: FaithfulnessCurve
    cmd_curve: FaithfulnessCurve

    @property
    def cpr(self) -> float:
        return self.cpr_curve.cpr

    @property
    def cmd(self) -> float:
        return self.cmd_curve.cmd

    @property
    def curves(self) -> list[FaithfulnessCurve]:
        """The distinct curves, CPR's first."""
        return [self.cpr_curve] if self.cmd_curve is self.cpr_curve else [self.cpr_curve, self.cmd_curve]


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


# ----- MIB's ranking ----------------------------------------------------------------------------


def _eap_ig_receiver_key(name: str, n_layers: int) -> tuple[int, int, int]:
    """A receiver's place in EAP-IG's receiver order: per layer every head's q input, then k, then
    v, then the MLP; logits last."""
    node = parse_node(name)
    if node.kind is NodeKind.HEAD_RECEIVER:
        return node.layer, node.qkv_index, node.head
    if node.kind is NodeKind.MLP:
        return node.layer, 3, 0
    return n_layers, 0, 0


def mib_ranked_edges(graph: Graph, scores: Tensor, ranking: Ranking | str) -> Tensor:
    """Every edge of EAP-IG's graph for ``graph``'s shape in MIB's order for ``ranking`` (module
    docstring): long [N, 2] of (sender, receiver) indices into ``graph``, (-1, -1) for an MLP edge
    ``graph`` lacks (attention-only models; ranked with score 0). ``scores``: [S, R] of ``graph``."""
    ranking = Ranking(ranking)
    if tuple(scores.shape) != tuple(graph.edge_exists.shape):
        raise AcdcError(f"scores must have shape {tuple(graph.edge_exists.shape)} (senders x receivers), got {tuple(scores.shape)}")
    if ranking is Ranking.greedy:  # every edge of the graph in greedy order; EAP-IG's extra MLP edges last
        order = greedy_order(graph, scores)
        missing = mib_edge_count(graph.shape) - len(order)
        return torch.cat([order, torch.full((missing, 2), -1, dtype=torch.long)])
    mib = build_graph(_with_mlps(graph.shape), split_input=graph.shape.split_input)
    eap_ig_order = sorted(range(len(mib.receivers)), key=lambda r: _eap_ig_receiver_key(mib.receivers[r], graph.shape.n_layers))
    receiver_rank = torch.empty(len(mib.receivers), dtype=torch.long)
    receiver_rank[eap_ig_order] = torch.arange(len(mib.receivers))
    senders, receivers = mib.edge_exists.nonzero(as_tuple=True)
    matrix_order = torch.argsort(senders * len(mib.receivers) + receiver_rank[receivers])
    senders, receivers = senders[matrix_order], receivers[matrix_order]
    to_sender = torch.tensor([graph.sender_index.get(name, -1) for name in mib.senders])
    to_receiver = torch.tensor([graph.receiver_index.get(name, -1) for name in mib.receivers])
    index = torch.stack([to_sender[senders], to_receiver[receivers]], 1)
    real = (index >= 0).all(1)
    index[~real] = -1
    values = torch.zeros(len(index), dtype=torch.float64)
    values[real] = scores.detach().to("cpu", torch.float64)[index[real, 0], index[real, 1]]
    if not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).nonzero()[0])
        raise AcdcError(f"edge '{edge_name(mib.senders[senders[bad]], mib.receivers[receivers[bad]])}' has no finite score: MIB ranks every edge by its score")
    keys = values if ranking is Ranking.signed else values.abs()
    return index[torch.sort(keys, descending=True, stable=True).indices]


def top_fraction_masks(evaluator: CircuitEvaluator, scores: Tensor, ranking: Ranking | str, fractions: Sequence[float]) -> CircuitMask:
    """MIB's top-k circuits of ``scores`` for each fraction k: the first int(k * N) edges of
    ``mib_ranked_edges``, pruned to input-to-logits paths: [K, ...]."""
    graph = evaluator.graph
    ranked = mib_ranked_edges(graph, scores, ranking)
    masks = []
    for k in check_fractions(fractions):
        top = ranked[: int(k * len(ranked))]
        top = top[top[:, 0] >= 0]
        edges = torch.zeros_like(graph.edge_exists)
        edges[top[:, 0], top[:, 1]] = True
        masks.append(on_input_to_logits_paths(graph, CircuitMask(edges, graph.full_head_input_mask())))
    return CircuitMask.stack(masks)


def faithfulness_of_scores(
    evaluator: CircuitEvaluator, scores: Tensor, ranking: Ranking | str, fractions: Sequence[float] = MIB_FRACTIONS
) -> FaithfulnessCurve:
    """MIB's curve for one ranking of ``scores``: the top-k circuits' faithfulness for each fraction k."""
    ranking = Ranking(ranking)
    fractions = check_fractions(fractions)
    return _curve(evaluator, top_fraction_masks(evaluator, scores, ranking, fractions), fractions, ranked=True, ranking=ranking)


def mib_scores(
    evaluator: CircuitEvaluator,
    scores: Tensor,
    fractions: Sequence[float] = MIB_FRACTIONS,
    cpr_ranking: Ranking | str = MIB_CPR_RANKING,
    cmd_ranking: Ranking | str = MIB_CMD_RANKING,
) -> MibScores:
    """MIB's CPR and CMD of ``scores`` [S, R]: CPR from the curve of ``cpr_ranking``, CMD from that of
    ``cmd_ranking`` (MIB's defaults: signed and absolute); one curve when they are the same."""
    cpr_ranking, cmd_ranking = Ranking(cpr_ranking), Ranking(cmd_ranking)
    cpr_curve = faithfulness_of_scores(evaluator, scores, cpr_ranking, fractions)
    cmd_curve = cpr_curve if cmd_ranking is cpr_ranking else faithfulness_of_scores(evaluator, scores, cmd_ranking, fractions)
    return MibScores(cpr_curve, cmd_curve)


def node_fraction_masks(
    evaluator: CircuitEvaluator, node_scores: Mapping[str, float], ranking: Ranking | str, fractions: Sequence[float]
) -> CircuitMask:
    """MIB's node-track circuits of ``node_scores`` {node: score} for each fraction k, as EAP-IG's
    ``Graph.apply_topn(n, absolute, level="node", prune=True)`` makes them: the first
    n = int(k * n_scored) nodes by score (``signed``) or |score| (``absolute``; ties in forward
    order), every edge out of a kept node, pruned to input-to-logits paths (an edge into a node
    that is not kept then goes: that node's output is patched whole): [K, ...]."""
    ranking = Ranking(ranking)
    if ranking is Ranking.greedy:
        raise AcdcError("MIB's node track ranks nodes by score or |score|; the greedy rule is for edges")
    graph = evaluator.graph
    unknown = sorted(set(node_scores) - set(graph.senders))
    if unknown:
        raise AcdcError(f"node scores name nodes this graph lacks: {', '.join(unknown[:5])}")
    names = [name for name in graph.senders if name in node_scores]
    values = torch.tensor([float(node_scores[name]) for name in names], dtype=torch.float64)
    order = torch.sort(values if ranking is Ranking.signed else values.abs(), descending=True, stable=True).indices
    sender_row = torch.tensor([graph.sender_index[name] for name in names], dtype=torch.long)
    masks = []
    for k in check_fractions(fractions):
        edges = torch.zeros_like(graph.edge_exists)
        edges[sender_row[order[: int(k * len(names))]]] = True
        masks.append(on_input_to_logits_paths(graph, CircuitMask(edges & graph.edge_exists, graph.full_head_input_mask())))
    return CircuitMask.stack(masks)


def mib_node_scores(
    evaluator: CircuitEvaluator,
    node_scores: Mapping[str, float],
    fractions: Sequence[float] = MIB_FRACTIONS,
    cpr_ranking: Ranking | str = MIB_CPR_RANKING,
    cmd_ranking: Ranking | str = MIB_CMD_RANKING,
) -> MibScores:
    """MIB's node-track CPR and CMD of ``node_scores`` {node: score} (``node_fraction_masks``), CPR
    from ``cpr_ranking``'s curve and CMD from ``cmd_ranking``'s, as ``mib_scores`` for edges."""
    fractions = check_fractions(fractions)

    def curve(ranking: Ranking) -> FaithfulnessCurve:
        masks = node_fraction_masks(evaluator, node_scores, ranking, fractions)
        return dataclasses.replace(_curve(evaluator, masks, fractions, ranked=True, ranking=ranking), nodes=True)

    cpr_ranking, cmd_ranking = Ranking(cpr_ranking), Ranking(cmd_ranking)
    cpr_curve = curve(cpr_ranking)
    return MibScores(cpr_curve, cpr_curve if cmd_ranking is cpr_ranking else curve(cmd_ranking))


# ----- circuits given as such -------------------------------------------------------------------


def faithfulness_of_circuits(evaluator: CircuitEvaluator, circuits: Sequence[Circuit]) -> FaithfulnessCurve:
    """Faithfulness of given circuits (e.g. an ACDC sweep), sorted by size."""
    masks = evaluator.circuit_masks(circuits)
    order = torch.argsort(masks.edges.flatten(1).sum(1), stable=True)
    cuts = [math.nan if circuits[i].threshold is None else float(circuits[i].threshold) for i in order.tolist()]
    return _curve(evaluator, masks[order], cuts, ranked=False)


def faithfulness_of_budgeted_circuits(evaluator: CircuitEvaluator, circuits: Mapping[float, Circuit]) -> MibScores:
    """MIB's CPR and CMD of a submission's circuits {k: circuit with at most int(k * N) edges} (module
    docstring): one curve through each circuit at its k and the full model at k = 1. AcdcError names
    a circuit over its budget (counted on its emitted circuit)."""
    fractions = check_fractions(sorted(circuits))
    total = mib_edge_count(evaluator.graph.shape)
    for k in fractions:
        n, budget = circuits[k].n_edges, int(k * total)
        if n > budget:
            raise AcdcError(f"the circuit for k = {k:g} has {n} edges, more than the int({k:g} * {total}) = {budget} MIB allows")
    masks = evaluator.circuit_masks([circuits[k] for k in fractions])
    if fractions[-1] < 1:
        masks = CircuitMask.stack(masks.unbind() + [evaluator.graph.full_mask()])
        fractions.append(1.0)
    curve = _curve(evaluator, masks, fractions, ranked=True)
    return MibScores(curve, curve)


def _curve(evaluator: CircuitEvaluator, masks: CircuitMask, cuts: list[float], ranked: bool, ranking: Ranking | None = None) -> FaithfulnessCurve:
    values = evaluator.metrics(masks)
    return FaithfulnessCurve(
        cuts=cuts,
        edges=masks.edges.flatten(1).sum(1).tolist(),
        metric=values.tolist(),
        faithfulness=(evaluator.faithfulness(values) + 0.0).tolist(),  # + 0.0: no -0.0 at the empty circuit
        total_edges=mib_edge_count(evaluator.graph.shape),
        ranked=ranked,
        ranking=ranking,
    )
