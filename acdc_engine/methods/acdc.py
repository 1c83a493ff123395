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
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from acdc_engine.errors import AcdcError
from acdc_engine.graph import QKV, Graph, head_name, head_receiver_name

if TYPE_CHECKING:
    from acdc_engine.checkpoint import Checkpointer

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


@dataclass
class AcdcState:
    """Where a running ACDC stands between two batches: enough to continue exactly.

    position: how many candidates of the visiting order have been visited; the next is at this index.
    edge_kept [S, R], head_input_kept [L, H, 3]: bool, the circuit after those decisions.
    edge_scores, head_input_scores: float64, as in ``AcdcResult`` (NaN: not tested so far).
    cur: the metric of the current circuit, the exact float64 every later decision compares with.
    metric_full: the full model's metric.
    forward_passes, candidates_tested: counters so far.
    window, batch_size: the speculative window of the next batch and its cap; they change the
        number of passes, never the circuit or its scores.
    cur_source: (edge mask, head input mask, start layer) of the circuit ``cur`` was measured on
        when that value came from a batch of several circuits (see ``run_acdc`` on near-ties);
        None when it is the value a lone evaluation gives.
    """

    position: int
    edge_kept: Tensor
    head_input_kept: Tensor
    edge_scores: Tensor
    head_input_scores: Tensor
    cur: float
    metric_full: float
    forward_passes: int
    candidates_tested: int
    window: int
    batch_size: int
    cur_source: tuple[Tensor, Tensor, int] | None = None

    def check_fits(self, graph: Graph, n_candidates: int) -> None:
        """AcdcError unless the masks have ``graph``'s shapes and ``position`` <= ``n_candidates``."""
        if tuple(self.edge_kept.shape) != tuple(graph.edge_exists.shape) or tuple(self.head_input_kept.shape) != (
            graph.shape.n_layers, graph.shape.n_heads, 3
        ):
            raise AcdcError("the saved ACDC state is for a graph of another shape")
        if not 0 <= self.position <= n_candidates:
            raise AcdcError(f"the saved ACDC state's position {self.position} lies outside 0..{n_candidates}")


@dataclass(frozen=True)
class Segment:
    """Consecutive candidates of the visiting order that ``start_layer``'s resumed pass can evaluate.

    Whether a candidate is moot (can no longer matter) depends only on decisions of earlier
    segments, so it is decided once, at the segment's start (a run resumed mid-segment decides it
    the same way).
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


def _is_skipped(candidate: Candidate, skip: Tensor | None) -> bool:
    return skip is not None and candidate.edge is not None and bool(skip[candidate.edge])


def near_tie_margin(m: float, cur: float) -> float:
    """How close to the threshold a batched score must lie to be re-measured alone: far above the
    last-bit differences that batching could cause on a backend whose kernels sum a row
    differently in a larger batch (about 1e-7 of the metric's scale in float32)."""
    return 1e-5 * (1.0 + abs(m) + abs(cur))


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
    resume: AcdcState | None = None,
    checkpointer: Checkpointer | None = None,
    skip: Tensor | None = None,
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
    Near-ties are decided on lone evaluations. The engine's patched pass gives a circuit the same
    float bits alone and in a batch (``EdgePatcher.logits``; tested on CPU), but an ``evaluate``
    need not (a GPU's kernels may sum a row differently in a larger batch). So when a score from
    a batch of several circuits lies within ``near_tie_margin`` of the threshold, the candidate's
    circuit, and the circuit ``cur`` came from if that value was batched too, are evaluated alone
    (as batch size 1 evaluates them) and the decision is taken on those values: the circuit is the
    same for every batch size whatever the backend.
    ``skip`` [S, R] bool marks edges to remove untested at their turn, like moot ones (method acdc-eap).
    ``resume`` continues from a saved state (``AcdcState``) instead of the full model: the result is
    the uninterrupted run's. ``checkpointer`` receives the state between batches when it says a
    save is due, once more when the visit ends, and before the AcdcError that a non-finite metric
    of a tested candidate raises (then it holds the circuit before that candidate).
    """
    threshold = check_threshold(threshold)
    if batch_size < 1:
        raise AcdcError(f"batch_size must be at least 1, got {batch_size}")
    segments = visiting_segments(graph)
    total = sum(len(s.candidates) for s in segments)
    limit = total if stop_after is None else min(total, stop_after)
    circuit = _Circuit(graph)
    counts = {"forward_passes": 0, "tested": 0}

    def metrics_of(edges: Tensor, heads: Tensor, start_layer: int) -> list[float]:
        counts["forward_passes"] += 1
        return evaluate(edges, heads, start_layer).tolist()

    if resume is None:
        edge_scores = torch.full(graph.edge_exists.shape, math.nan, dtype=torch.float64)
        head_input_scores = torch.full(circuit.head_inputs.shape, math.nan, dtype=torch.float64)
        cur = metric_full = metrics_of(circuit.edges[None], circuit.head_inputs[None], graph.shape.n_layers)[0]
        if not math.isfinite(cur):
            raise AcdcError(f"the metric is {cur} (not finite) on the full model")
        position, window = 0, batch_size
    else:
        resume.check_fits(graph, limit)
        circuit.edges, circuit.head_inputs = resume.edge_kept.clone(), resume.head_input_kept.clone()
        edge_scores, head_input_scores = resume.edge_scores.clone(), resume.head_input_scores.clone()
        cur, metric_full = resume.cur, resume.metric_full
        counts = {"forward_passes": resume.forward_passes, "tested": resume.candidates_tested}
        position, window = resume.position, max(1, min(batch_size, resume.window))
    cur_source = None if resume is None else resume.cur_source

    def alone(edges: Tensor, heads: Tensor, start_layer: int) -> float:
        return metrics_of(edges[None], heads[None], start_layer)[0]

    def state() -> AcdcState:
        return AcdcState(
            position=position,
            edge_kept=circuit.edges,
            head_input_kept=circuit.head_inputs,
            edge_scores=edge_scores,
            head_input_scores=head_input_scores,
            cur=cur,
            metric_full=metric_full,
            forward_passes=counts["forward_passes"],
            candidates_tested=counts["tested"],
            window=window,
            batch_size=batch_size,
            cur_source=cur_source,
        )

    bar = tqdm(total=total, initial=position, desc="ACDC candidates", unit="cand", disable=not progress, leave=False)
    end = 0
    for segment in segments:
        offset, end = end, end + len(segment.candidates)  # the segment's indices in the visiting order
        candidates = segment.candidates[: max(0, min(end, limit) - offset)]
        i = max(0, position - offset)
        if i >= len(candidates):  # visited before the resumed state was saved, or beyond stop_after
            continue
        moot = [circuit.is_moot(c) or _is_skipped(c, skip) for c in candidates]
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
                next_i = j
            else:
                values = metrics_of(torch.stack(stack_edges), torch.stack(stack_heads), segment.start_layer)
                next_i = j
                for n, (k, m) in enumerate(zip(tested, values)):
                    candidate = candidates[k]
                    batched = len(values) > 1
                    if math.isfinite(m) and (batched or cur_source) and abs(m - cur - threshold) <= near_tie_margin(m, cur):
                        m, batched = alone(stack_edges[n], stack_heads[n], segment.start_layer), False
                        if cur_source is not None:
                            cur, cur_source = alone(*cur_source), None
                    if not math.isfinite(m):  # stop, saving the circuit before this candidate
                        position = offset + (tested[n - 1] + 1 if n else i)
                        bar.close()
                        saved = ""
                        if checkpointer is not None:
                            checkpointer.save(state())
                            saved = f"; the state before it is saved in {checkpointer.path}"
                        raise AcdcError(f"the metric is {m} (not finite) while testing '{candidate.name}'{saved}")
                    score = m - cur
                    counts["tested"] += 1
                    _record_score(candidate, score, edge_scores, head_input_scores)
                    circuit.edges, circuit.head_inputs = stack_edges[n], stack_heads[n]
                    if score < threshold:
                        cur = m
                        cur_source = (stack_edges[n], stack_heads[n], segment.start_layer) if batched else None
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
            position = offset + i
            if checkpointer is not None and position < limit and checkpointer.due(position):
                checkpointer.save(state())
    bar.close()
    position = limit
    if checkpointer is not None:
        checkpointer.save(state())
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
