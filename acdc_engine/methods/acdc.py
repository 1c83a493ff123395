"""Exact ACDC (Conmy et al. 2023): greedy edge pruning in reverse topological order.

Visiting order (matches the reference implementation's command-line default; keep it stable,
users compare circuits across runs):
  1. ``logits``;
  2. for each layer L from last to first:
     a. the MLP input ``m{L}``;
     b. the head inputs (whole-receiver tests) of every head's ``<v>``, heads from highest index to
        lowest; then every head's ``<k>``; then every head's ``<q>``;
     c. the single edges into each head's ``<v>`` (heads high to low), then ``<k>``, then ``<q>``.
  Senders of one receiver are tried latest first: later layer first, within a layer the MLP before
  the heads, heads high to low, the input last (``pos_embed`` before ``tok_embed``).

For each candidate removal, m = metric(circuit without it); if m - cur < threshold it stays removed
and cur = m, else it is restored. Its score is m - cur. A candidate that can no longer matter is
removed without testing (score None): edges into ``m{L}`` once sender ``m{L}`` has no outgoing edge
left; the head inputs and incoming edges of a head whose sender has no outgoing edge left; the
incoming edges of a head receiver whose head input was removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from acdc_engine.errors import AcdcError
from acdc_engine.graph import QKV, Graph, head_name, head_receiver_name

Evaluate = Callable[[Tensor, Tensor, int], Tensor]
"""(edge masks [C, S, R], head input masks [C, L, H, 3], start layer) -> metric [C], lower is better.

The start layer is where a resumed forward pass may begin: every receiver below it is intact."""


@dataclass(frozen=True)
class Candidate:
    """One removal ACDC tries: an edge (sender, receiver) or a head input (layer, head, qkv index)."""

    name: str
    edge: tuple[int, int] | None = None
    head_input: tuple[int, int, int] | None = None


@dataclass
class AcdcResult:
    """ACDC's raw decisions (before pruning to input-to-logits paths) and its bookkeeping.

    edge_kept [S, R], head_input_kept [L, H, 3]: bool, True = kept in the circuit.
    edge_scores, head_input_scores: float64, m - cur when tested, NaN when removed untested.
    """

    edge_kept: Tensor
    head_input_kept: Tensor
    edge_scores: Tensor
    head_input_scores: Tensor
    metric_full: float
    metric_final: float
    forward_passes: int
    candidates_tested: int


@dataclass(frozen=True)
class Segment:
    """Consecutive candidates of the visiting order that ``start_layer``'s resumed pass can evaluate.

    Whether a candidate is moot (can no longer matter) depends only on decisions of earlier
    segments, so it is decided once, at the segment's start.
    """

    start_layer: int
    candidates: list[Candidate]


def visiting_segments(graph: Graph) -> list[Segment]:
    """The visiting order (module docstring), cut where the resume layer or moot rules change."""
    n_layers, n_heads = graph.shape.n_layers, graph.shape.n_heads

    def edges_into(receiver: str) -> list[Candidate]:
        r = graph.receiver_index[receiver]
        senders = graph.edge_exists[:, r].nonzero().flatten().tolist()
        return [Candidate(f"{graph.senders[s]}->{receiver}", edge=(s, r)) for s in reversed(senders)]

    segments = [Segment(n_layers, edges_into("logits"))]
    for layer in reversed(range(n_layers)):
        if graph.shape.has_mlp:
            segments.append(Segment(layer, edges_into(f"m{layer}")))
        head_inputs, head_edges = [], []
        for x in reversed(range(3)):
            for head in reversed(range(n_heads)):
                head_inputs.append(Candidate(head_receiver_name(layer, head, QKV[x]), head_input=(layer, head, x)))
                head_edges.extend(edges_into(head_receiver_name(layer, head, QKV[x])))
        segments += [Segment(layer, head_inputs), Segment(layer, head_edges)]
    return segments


def visiting_order(graph: Graph) -> list[Candidate]:
    """Every candidate removal, in the order ACDC visits them (see the module docstring)."""
    return [candidate for segment in visiting_segments(graph) for candidate in segment.candidates]


class _Circuit:
    """The masks ACDC is pruning, and which candidates can no longer matter."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.edges = graph.full_edge_mask()
        self.head_inputs = graph.full_head_input_mask()

    def sender_is_dead(self, sender: str) -> bool:
        return not bool(self.edges[self.graph.sender_index[sender]].any())

    def is_moot(self, candidate: Candidate) -> bool:
        """True when removing ``candidate`` cannot change the circuit's output any more."""
        if candidate.head_input is not None:
            layer, head, _ = candidate.head_input
            return self.sender_is_dead(head_name(layer, head))
        _, r = candidate.edge
        receiver = self.graph.receivers[r]
        if receiver == "logits":
            return False
        if not receiver.endswith(">"):  # the MLP input m{L}: the MLP's own output must be used
            return self.sender_is_dead(receiver)
        layer, head, x = self.graph.parse_head_input(receiver)
        return self.sender_is_dead(head_name(layer, head)) or not bool(self.head_inputs[layer, head, x])

    def set(self, candidate: Candidate, kept: bool) -> None:
        if candidate.edge is not None:
            self.edges[candidate.edge] = kept
        else:
            self.head_inputs[candidate.head_input] = kept


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise AcdcError(f"threshold must be a finite number >= 0, got {threshold}")
    return threshold


def run_acdc(
    graph: Graph,
    evaluate: Evaluate,
    threshold: float,
    batch_size: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
) -> AcdcResult:
    """Exact ACDC on ``graph``; ``evaluate`` scores circuits (lower is better), see ``Evaluate``.

    ``batch_size`` > 1 evaluates candidates speculatively: batch element i holds the circuit with the
    next candidates 1..i all removed. Walking the results in order, every removal that stays is
    exactly the sequential algorithm's; at the first candidate that is kept, the later elements
    (computed on a wrong assumption) are discarded and the walk resumes after it. The window adapts
    (at most ``batch_size``): it doubles after a batch whose removals all stay and shrinks to the
    run of removals seen before a kept candidate. Any window gives the same circuit.
    ``stop_after`` visits only that many candidates of the order (benchmarks time a prefix); the
    rest stay in the circuit untested.
    """
    threshold = check_threshold(threshold)
    if batch_size < 1:
        raise AcdcError(f"batch_size must be at least 1, got {batch_size}")
    circuit = _Circuit(graph)
    edge_scores = torch.full(graph.edge_exists.shape, math.nan, dtype=torch.float64)
    head_input_scores = torch.full(circuit.head_inputs.shape, math.nan, dtype=torch.float64)
    counts = {"forward_passes": 0, "tested": 0}

    def metrics_of(edges: Tensor, heads: Tensor, start_layer: int, names: list[str]) -> list[float]:
        values = evaluate(edges, heads, start_layer).tolist()
        counts["forward_passes"] += 1
        for name, value in zip(names, values):
            if not math.isfinite(value):
                raise AcdcError(f"the metric is {value} (not finite) while testing '{name}'")
        return values

    cur = metric_full = metrics_of(circuit.edges[None], circuit.head_inputs[None], graph.shape.n_layers, ["the full model"])[0]
    segments = visiting_segments(graph)
    bar = tqdm(total=sum(len(s.candidates) for s in segments), desc="ACDC candidates", unit="cand", disable=not progress, leave=False)
    budget = math.inf if stop_after is None else stop_after
    window = batch_size
    for segment in segments:
        candidates = segment.candidates[: max(0, min(len(segment.candidates), budget))]
        budget -= len(candidates)
        moot = [circuit.is_moot(c) for c in candidates]
        i = 0
        while i < len(candidates):
            # speculate: the circuits with candidates i..j removed, one per candidate to test
            edges, heads, tested = circuit.edges.clone(), circuit.head_inputs.clone(), []
            stack_edges, stack_heads = [], []
            j = i
            while j < len(candidates) and len(tested) < window:
                _remove(candidates[j], edges, heads)
                if not moot[j]:
                    tested.append(j)
                    stack_edges.append(edges.clone())
                    stack_heads.append(heads.clone())
                j += 1
            if not tested:  # only moot candidates left: removed untested
                circuit.edges, circuit.head_inputs = edges, heads
                bar.update(j - i)
                i = j
                continue
            values = metrics_of(torch.stack(stack_edges), torch.stack(stack_heads), segment.start_layer, [candidates[k].name for k in tested])
            next_i = j
            for n, (k, m) in enumerate(zip(tested, values)):
                candidate = candidates[k]
                score = m - cur
                counts["tested"] += 1
                _record_score(candidate, score, edge_scores, head_input_scores)
                circuit.edges, circuit.head_inputs = stack_edges[n], stack_heads[n]
                if score < threshold:
                    cur = m
                else:  # kept: later speculative results assumed its removal
                    circuit.set(candidate, True)
                    next_i = k + 1
                    window = max(1, n)
                    break
            else:
                circuit.edges, circuit.head_inputs = edges, heads  # includes trailing moot removals
                window = min(batch_size, 2 * window)
            bar.update(next_i - i)
            i = next_i
    bar.close()
    return AcdcResult(
        edge_kept=circuit.edges,
        head_input_kept=circuit.head_inputs,
        edge_scores=edge_scores,
        head_input_scores=head_input_scores,
        metric_full=metric_full,
        metric_final=cur,
        forward_passes=counts["forward_passes"],
        candidates_tested=counts["tested"],
    )


def _remove(candidate: Candidate, edges: Tensor, heads: Tensor) -> None:
    if candidate.edge is not None:
        edges[candidate.edge] = False
    else:
        heads[candidate.head_input] = False


def _record_score(candidate: Candidate, score: float, edge_scores: Tensor, head_input_scores: Tensor) -> None:
    if candidate.edge is not None:
        edge_scores[candidate.edge] = score
    else:
        head_input_scores[candidate.head_input] = score
