"""Node-level ACDC (method ``acdc-nodes``): exact ACDC over whole nodes instead of edges.

Nodes are the graph's senders: the input sender(s), every head, every MLP
(``acdc_engine.methods.node_circuits``). Removing a node removes every edge out of it at once (each
receiver reads the node's ablated output: resample, zero or mean, as every patched pass).

**Visiting order**: the nodes latest first, the order in which edge-level ACDC tries the senders of
a receiver (``acdc_engine.methods.acdc``): later layer first, within a layer the MLP before the
heads, heads from highest index to lowest, the input sender(s) last (``pos_embed`` before
``tok_embed``). The input is a candidate like every other node, as its edges are in edge-level
ACDC; removing it leaves no input-to-logits path, so its circuit is emitted empty.

**Rule** (ACDC's, same sign and threshold): start from the full model with cur = metric(full);
for each node, m = metric(current circuit without the node); if m - cur < threshold the node stays
removed and cur = m, else it is restored. Every node is tested (a node always has an edge to
``logits``, so none becomes moot).

**Circuit**: the edges between the kept nodes (``node_circuit``) and their heads' head inputs;
``discover`` prunes it to input-to-logits paths. **Scores**: a node's m - cur, on each edge out of it
(``node_edge_scores``), and as ``node_scores`` {node: m - cur} in the circuit file's method block.

**Passes**: the nodes fall into segments that resume at one layer (``node_circuits.start_layer``:
the layer of a node's earliest reader; the nodes visited before it only change receivers at or
after that layer, so the resumed pass is exact). Within a segment, ``batch_size`` > 1 evaluates
a speculative chain: circuit j removes the next j + 1 nodes, as if the j before it are all removed;
decisions are taken in order from it until a node is kept (the chain's later circuits assumed its
removal and are discarded). A chain holds a circuit only while the chance that its guesses come
true, at the rate nodes were kept so far, is at least ``acdc.MIN_CHANCE`` (as edge-level ACDC's
speculation), and at most the window: it doubles after a chain that was removed whole, and is
otherwise the number of decisions the last chain gave (at least ``acdc.MIN_WINDOW``, at most
``batch_size``). Near-ties are measured alone as edge-level ACDC measures them
(``acdc.near_tie_margin``), so the circuit and its scores are the same for every batch size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.patcher import Evaluate
from acdc_engine.core.progress import progress_bar
from acdc_engine.methods.acdc import MIN_CHANCE, MIN_WINDOW, AcdcParams, batch_size_for, check_batch_size, check_threshold, near_tie_margin, threshold_selection
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.methods.node_circuits import node_circuit, node_edge_scores, node_score_block, start_layer, without_senders


@dataclass(frozen=True)
class NodeSegment:
    """Consecutive nodes of the visiting order (sender indices) whose passes resume at ``start_layer``."""

    start_layer: int
    senders: list[int]


def node_visiting_segments(graph: Graph) -> list[NodeSegment]:
    """The visiting order (module docstring: the senders latest first), cut where the layer a
    pass may resume at changes."""
    latest_first = list(reversed(range(len(graph.senders))))
    return [
        NodeSegment(layer, list(senders))
        for layer, senders in itertools.groupby(latest_first, key=lambda s: start_layer(graph, s))
    ]


@dataclass
class NodeAcdcResult:
    """kept: bool [n_senders], True = the node stays; scores: float64 [n_senders], m - cur of each
    node's test; metric_full, metric_final: the full model's and the final circuit's metric;
    forward_passes: the patched passes run."""

    kept: Tensor
    scores: Tensor
    metric_full: float
    metric_final: float
    forward_passes: int


@dataclass
class _State:
    """Where a run stands: the kept nodes, their scores so far (NaN: not yet tested), the metric
    ``cur`` of the current circuit, and (mask, start layer) of the circuit ``cur`` came from when
    that value was measured in a batch of several circuits (None: a lone evaluation's)."""

    kept: Tensor
    scores: Tensor
    cur: float
    metric_full: float
    forward_passes: int
    window: int
    cur_source: tuple[CircuitMask, int] | None = None

    def measure(self, evaluate: Evaluate, masks: list[CircuitMask], layer: int) -> list[float]:
        self.forward_passes += 1
        return evaluate(CircuitMask.stack(masks), layer).tolist()


def run_acdc_nodes(graph: Graph, evaluate: Evaluate, threshold: float, batch_size: int = 1, progress: bool = True) -> NodeAcdcResult:
    """Node-level ACDC on ``graph`` (module docstring); ``evaluate`` scores circuits, lower is better.
    AcdcError on a bad threshold or batch size, or a metric that is not finite."""
    threshold = check_threshold(threshold)
    check_batch_size(batch_size)
    n = len(graph.senders)
    state = _State(torch.ones(n, dtype=torch.bool), torch.full((n,), math.nan, dtype=torch.float64), math.nan, math.nan, 0, batch_size)
    state.cur = state.metric_full = state.measure(evaluate, [without_senders(graph, state.kept)], graph.shape.n_layers)[0]
    if not math.isfinite(state.cur):
        raise AcdcError(f"the metric is {state.cur} (not finite) on the full model")
    with progress_bar(total=n, progress=progress, desc="ACDC nodes", unit="node") as bar:
        for segment in node_visiting_segments(graph):
            i = 0
            while i < len(segment.senders):
                decided = _decide_chain(state, graph, segment, i, evaluate, threshold, batch_size)
                bar.update(decided)
                i += decided
    return NodeAcdcResult(state.kept, state.scores, state.metric_full, state.cur, state.forward_passes)


def _decide_chain(
    state: _State, graph: Graph, segment: NodeSegment, start: int, evaluate: Evaluate, threshold: float, batch_size: int
) -> int:
    """Measure the speculative chain from node ``start`` of ``segment`` and take its decisions
    (module docstring); returns how many nodes were decided."""
    chain = segment.senders[start : start + _chain_length(state)]
    circuits, kept = [], state.kept.clone()
    for s in chain:
        kept = kept.clone()
        kept[s] = False
        circuits.append(without_senders(graph, kept))
    values = state.measure(evaluate, circuits, segment.start_layer)
    batched = len(values) > 1
    decided = 0
    for s, circuit, m in zip(chain, circuits, values):
        lone = not batched
        if math.isfinite(m) and (batched or state.cur_source) and abs(m - state.cur - threshold) <= near_tie_margin(m, state.cur):
            m, lone = state.measure(evaluate, [circuit], segment.start_layer)[0], True
            if state.cur_source is not None:
                state.cur, state.cur_source = state.measure(evaluate, [state.cur_source[0]], state.cur_source[1])[0], None
        if not math.isfinite(m):
            raise AcdcError(f"the metric is {m} (not finite) while testing node '{graph.senders[s]}'")
        state.scores[s] = m - state.cur
        decided += 1
        if m - state.cur >= threshold:  # restored: the rest of the chain assumed its removal
            break
        state.kept[s] = False
        state.cur, state.cur_source = m, (None if lone else (circuit, segment.start_layer))
    removed_whole = decided == len(chain) and not state.kept[chain[-1]]
    state.window = min(batch_size, 2 * state.window if removed_whole else max(MIN_WINDOW, decided))
    return decided


def _chain_length(state: _State) -> int:
    """How many circuits the next chain holds: at most the window, and only those whose guesses
    (every node before it in the chain removed) all come true with a chance of at least
    ``acdc.MIN_CHANCE``, each node guessed kept at the rate tested nodes were kept so far (with one
    kept and one removed added, as ``acdc.keep_rate``)."""
    tested = ~state.scores.isnan()
    p_keep = (int((tested & state.kept).sum()) + 1) / (int(tested.sum()) + 2)
    length = 1
    while length < state.window and (1 - p_keep) ** length >= MIN_CHANCE:
        length += 1
    return length


# ----- the method, for discover ---------------------------------------------------------------------


@dataclass
class AcdcNodesParams(AcdcParams):
    """Node-level ACDC's parameters (``discover(method="acdc-nodes", ...)``), checked as ACDC's.

    threshold: tau, in the metric's units: a node stays removed when removing it raises the metric
        by less.
    batch_size: circuits per forward pass (a speculative chain; the circuit is the same for any
        size); None: chosen from free memory (at most 32).
    """


@dataclass
class AcdcNodesConfig(AcdcNodesParams):
    """``conf/method/acdc-nodes.yaml``."""

    name: str = "acdc-nodes"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


def _run(inputs: MethodInput, params: AcdcNodesParams) -> MethodOutcome:
    batch_size = batch_size_for(inputs, params.batch_size)
    graph = inputs.graph
    result = run_acdc_nodes(graph, inputs.evaluate, params.threshold, batch_size, inputs.progress)
    description = {
        "name": "acdc-nodes",
        "ablation": inputs.ablation,
        "nodes": "the input sender(s), every head and every MLP, each removed whole (every edge out of it)",
        "order": "nodes latest first (the order edge-level ACDC tries a receiver's senders)",
        "score": "m - cur when the node was tested, on each edge out of it; lower metric is better",
        "node_scores": node_score_block(graph, result.scores),
    }
    return MethodOutcome(
        kept=node_circuit(graph, result.kept),
        scores=node_edge_scores(graph, result.scores),
        description=description,
        threshold=params.threshold,
        forward_passes=result.forward_passes,
        run_block={"candidates_tested": len(graph.senders), "batch_size": batch_size},
    )


SPEC = MethodSpec(
    name="acdc-nodes", params=AcdcNodesParams, config=AcdcNodesConfig, run=_run, selection=threshold_selection,
    circuits=CircuitSelection.THRESHOLD,
)
