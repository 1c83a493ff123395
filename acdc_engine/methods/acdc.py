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

import dataclasses
import heapq
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.progress import progress_bar
from acdc_engine.core.graph import Graph
from acdc_engine.core.patcher import Evaluate
from acdc_engine.methods.method import Checkpointing, CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.core.nodes import LOGITS, QKV, NodeKind, edge_name, head_name, head_receiver_name, mlp_name, parse_node


@dataclass(frozen=True)
class Candidate:
    """One removal ACDC tries: an edge (sender, receiver) or a head input (layer, head, qkv index)."""

    name: str
    edge: tuple[int, int] | None = None
    head_input: tuple[int, int, int] | None = None


@dataclass
class AcdcResult:
    """ACDC's raw decisions (before pruning to input-to-logits paths) and its bookkeeping.

    kept: bool masks (edges [S, R], head inputs [L, H, 3]), True = kept in the circuit.
    scores: float64 in the same layout, m - cur when tested, NaN when removed untested.
    """

    kept: CircuitMask
    scores: Scores
    metric_full: float
    metric_final: float
    forward_passes: int
    candidates_tested: int


@dataclass
class AcdcState:
    """Where a running ACDC stands: the one object ``run_acdc`` updates, and enough to continue exactly.

    visited: how many candidates of the visiting order have been visited; the next is at this index.
    kept: bool masks, the circuit after those decisions.
    scores: float64, as in ``AcdcResult`` (NaN: not tested so far).
    cur: the metric of the current circuit, the exact float64 every later decision compares with.
    metric_full: the full model's metric.
    forward_passes, candidates_tested: counters so far.
    window, batch_size: the speculative window of the next batch and its cap; they change the
        number of passes, never the circuit or its scores.
    cur_source: (mask, start layer) of the circuit ``cur`` was measured on
        when that value came from a batch of several circuits (see ``run_acdc`` on near-ties);
        None when it is the value a lone evaluation gives.
    hints: {visiting-order index: kept} for candidates not yet visited, the decision a circuit
        computed on a wrong guess gave them (``_learn_hints``); the speculation trusts them
        (``HINT_TRUST``). Like the window they change the number of passes, never the circuit.
    """

    visited: int
    kept: CircuitMask
    scores: Scores
    cur: float
    metric_full: float
    forward_passes: int
    candidates_tested: int
    window: int
    batch_size: int
    cur_source: tuple[CircuitMask, int] | None = None
    hints: dict[int, bool] = dataclasses.field(default_factory=dict)

    def check_fits(self, graph: Graph, n_candidates: int) -> None:
        """AcdcError unless the masks have ``graph``'s shapes and ``visited`` <= ``n_candidates``."""
        if tuple(self.kept.edges.shape) != tuple(graph.edge_exists.shape) or tuple(self.kept.head_inputs.shape) != (
            graph.shape.n_layers, graph.shape.n_heads, 3
        ):
            raise AcdcError("the saved ACDC state is for a graph of another shape")
        if not 0 <= self.visited <= n_candidates:
            raise AcdcError(f"the saved ACDC state's position {self.visited} lies outside 0..{n_candidates}")

    def result(self) -> AcdcResult:
        return AcdcResult(
            kept=self.kept,
            scores=self.scores,
            metric_full=self.metric_full,
            metric_final=self.cur,
            forward_passes=self.forward_passes,
            candidates_tested=self.candidates_tested,
        )

    def measure(self, evaluate: Evaluate, masks: CircuitMask, start_layer: int) -> list[float]:
        """``evaluate`` on a stack of circuits [C, ...], counted as one forward pass."""
        self.forward_passes += 1
        return evaluate(masks, start_layer).tolist()

    def measure_alone(self, evaluate: Evaluate, mask: CircuitMask, start_layer: int) -> float:
        """``evaluate`` on one circuit in a pass of its own."""
        return self.measure(evaluate, CircuitMask.stack([mask]), start_layer)[0]

    def set(self, candidate: Candidate, kept: bool) -> None:
        """Keep (or remove) ``candidate`` in the current circuit."""
        _set_mask(candidate, kept, self.kept)

    def record_score(self, candidate: Candidate, score: float) -> None:
        if candidate.edge is not None:
            _writable(self.scores.edges)[candidate.edge] = score
        else:
            _writable(self.scores.head_inputs)[candidate.head_input] = score

    def moot(self, graph: Graph, candidates: list[Candidate]) -> list[bool]:
        """For each of ``candidates``: True when removing it cannot change the circuit's output any
        more (module docstring): the component it feeds (or, for a head input, its head) has no
        outgoing edge left, or its head input is removed."""
        alive = _readable(self.kept.edges).any(1)  # [S]: the sender has an outgoing edge
        head_inputs = _readable(self.kept.head_inputs)
        result = []
        for candidate in candidates:
            if candidate.head_input is not None:
                layer, head, _ = candidate.head_input
                result.append(not alive[graph.sender_index[head_name(layer, head)]])
                continue
            receiver = parse_node(graph.receivers[candidate.edge[1]])
            if receiver.kind is NodeKind.LOGITS:
                result.append(False)
            elif receiver.kind is NodeKind.MLP:  # the MLP's own output must be used
                result.append(not alive[graph.sender_index[receiver.name]])
            else:
                head_input = (receiver.layer, receiver.head, receiver.qkv_index)
                result.append(not alive[graph.sender_index[receiver.component]] or not head_inputs[head_input])
        return result


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
    exists = _readable(graph.edge_exists)

    def edges_into(receiver: str) -> list[Candidate]:
        r = graph.receiver_index[receiver]
        senders = exists[:, r].nonzero()[0].tolist()
        return [Candidate(edge_name(graph.senders[s], receiver), edge=(s, r)) for s in reversed(senders)]

    segments = [Segment(n_layers, edges_into(LOGITS))]
    for layer in reversed(range(n_layers)):
        if graph.shape.has_mlp:
            segments.append(Segment(layer, edges_into(mlp_name(layer))))
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


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise AcdcError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def run_acdc(
    graph: Graph,
    evaluate: Evaluate,
    threshold: float,
    batch_size: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
    resume: AcdcState | None = None,
    checkpointer: Checkpointing | None = None,
    skip: Tensor | None = None,
    predict: Evaluate | None = None,
) -> AcdcResult:
    """Exact ACDC on ``graph``; ``evaluate`` scores circuits (lower is better), see ``Evaluate``.

    ``batch_size`` > 1 evaluates candidates speculatively: a batch holds a tree of guesses, each
    circuit the one that decides a candidate if the guessed decisions (kept or removed) of the
    candidates before it come true; the most likely guesses go in first (``_speculate``). Walking
    from the root, each decision picks the branch the sequential algorithm takes, so every decision
    is exactly its; the walk stops where the branch taken is not in the batch. The circuits off the
    path (computed on wrong guesses) decide nothing; they hint at their candidates' decisions for
    later batches' guesses (``AcdcState.hints``). The window (circuits per batch, at most
    ``batch_size``) adapts to how far batches get (``_decide``). ``predict``, an estimate of
    ``evaluate`` (``Measurement.predictor``) or ``evaluate`` itself, hints at every candidate of a
    long segment of the top layer or the logits before the segment's first batch (``_probe``; its
    passes count in ``forward_passes``). Any window or hint gives the same circuit.
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
    save is due, once more when the visit ends (unless the resumed state had ended it), and before the AcdcError that a non-finite metric
    of a tested candidate raises (then it holds the circuit before that candidate).
    """
    threshold = check_threshold(threshold)
    check_batch_size(batch_size)
    segments = visiting_segments(graph)
    total = sum(len(s.candidates) for s in segments)
    limit = total if stop_after is None else min(total, stop_after)
    state = _start(graph, evaluate, batch_size) if resume is None else _resumed(graph, resume, batch_size, limit)
    bar = progress_bar(total=total, initial=state.visited, progress=progress, desc="ACDC candidates", unit="cand")
    end = 0
    for segment in segments:
        offset, end = end, end + len(segment.candidates)  # the segment's indices in the visiting order
        candidates = segment.candidates[: max(0, min(end, limit) - offset)]
        _visit(state, graph, candidates, segment.start_layer, offset, limit, evaluate, threshold, skip, checkpointer, bar, predict)
    bar.close()
    finished_before = resume is not None and resume.visited >= limit  # its checkpoint already says so
    state.visited = limit
    if checkpointer is not None and not finished_before:
        checkpointer.save(state)
    return state.result()


def _visit(
    state: AcdcState, graph: Graph, candidates: list[Candidate], start_layer: int, offset: int, limit: int,
    evaluate: Evaluate, threshold: float, skip: Tensor | None, checkpointer: Checkpointing | None, bar: tqdm,
    predict: Evaluate | None = None,
) -> None:
    """Decide the ``candidates`` of one segment (at indices ``offset``.. of the visiting order, each
    pass resuming at ``start_layer``) from where ``state`` stands, batch by batch, saving through
    ``checkpointer`` when it says a save is due; AcdcError on a non-finite metric, the state
    before that candidate saved."""
    i = max(0, state.visited - offset)
    if i >= len(candidates):  # visited before the resumed state was saved, or beyond stop_after
        return
    moot = [moot or _is_skipped(c, skip) for c, moot in zip(candidates, state.moot(graph, candidates))]
    probes = predict is not None and start_layer >= graph.shape.n_layers - 1 and state.batch_size >= PROBE_BATCH_FROM
    if probes and i == 0 and moot.count(False) >= PROBE_FROM:
        _probe(state, candidates, moot, start_layer, offset, predict, threshold)
    while i < len(candidates):
        batch = _speculate(state, candidates, moot, i, offset)
        try:
            next_i = _decide(state, batch, candidates, start_layer, evaluate, threshold, offset)
        except _NonFiniteMetric as stop:  # stop, saving the circuit before this candidate
            state.visited = offset + stop.resume_at
            bar.close()
            saved = ""
            if checkpointer is not None:
                checkpointer.save(state)
                saved = f"; the state before it is saved in {checkpointer.path}"
            raise AcdcError(f"the metric is {stop.value} (not finite) while testing '{stop.candidate.name}'{saved}") from None
        bar.update(next_i - i)
        i = next_i
        state.visited = offset + i
        if checkpointer is not None and state.visited < limit and checkpointer.due(state.visited):
            checkpointer.save(state)


def _start(graph: Graph, evaluate: Evaluate, batch_size: int) -> AcdcState:
    """The state before the first candidate: the full model, its metric measured."""
    full = graph.full_mask()
    state = AcdcState(
        visited=0,
        kept=full,
        scores=Scores.unscored(full),
        cur=math.nan,
        metric_full=math.nan,
        forward_passes=0,
        candidates_tested=0,
        window=batch_size,
        batch_size=batch_size,
    )
    state.cur = state.metric_full = state.measure_alone(evaluate, full, graph.shape.n_layers)
    if not math.isfinite(state.cur):
        raise AcdcError(f"the metric is {state.cur} (not finite) on the full model")
    return state


def _resumed(graph: Graph, saved: AcdcState, batch_size: int, limit: int) -> AcdcState:
    """A copy of a saved state to continue from, under this run's ``batch_size``."""
    saved.check_fits(graph, limit)
    return dataclasses.replace(
        saved,
        kept=saved.kept.clone(),
        scores=saved.scores.clone(),
        hints=dict(saved.hints),
        window=max(1, min(batch_size, saved.window)),
        batch_size=batch_size,
    )


@dataclass
class _Batch:
    """One speculative batch over a segment from candidate ``start``: a tree of guesses.

    tested: the segment indices of the candidates from ``start`` on that are tested (not moot), as
    far as the tree can reach; nodes maps guessed decisions d (True = kept) on tested[0..n-1] to
    the index of its circuit: circuits[i] has those decisions taken, every moot candidate before
    tested[n] removed, and tested[n] removed (the circuit that decides tested[n] when the guesses
    are right), the circuits stacked [C, ...] (None when nothing is tested). complete: ``tested``
    holds every tested candidate left in the segment.
    """

    start: int
    tested: list[int]
    complete: bool
    nodes: dict[tuple[bool, ...], int]
    circuits: CircuitMask | None


MIN_CHANCE = 0.3
"""A speculative circuit enters a batch only when the chance that its guesses all come true is at
least this (besides the window): on small models a pass costs about as much per circuit as it
saves, so unlikely guesses cost more than they save (measured on the benchmark's small cases)."""

MIN_WINDOW = 4
"""The fewest circuits a batch may hold after a batch that stopped short (when ``batch_size``
allows): below it the fixed cost of a pass dominates on every benchmark case."""

HINT_TRUST = 0.9
"""The chance the speculation gives a candidate's hinted decision (``AcdcState.hints``): a
candidate's decision rarely changes with the decisions just before it, so a circuit computed on a
wrong guess usually predicts it."""


def keep_rate(state: AcdcState) -> float:
    """The fraction of tested candidates kept so far, with one kept and one removed added (so it
    lies strictly between 0 and 1): the chance the next tested candidate is kept, as the
    speculation guesses it."""
    tested = ~np.isnan(_readable(state.scores.edges))
    tested_heads = ~np.isnan(_readable(state.scores.head_inputs))
    kept = np.count_nonzero(tested & _readable(state.kept.edges)) + np.count_nonzero(tested_heads & _readable(state.kept.head_inputs))
    return (kept + 1) / (np.count_nonzero(tested) + np.count_nonzero(tested_heads) + 2)


RECENT_DECISIONS = 16
"""How many of the segment's latest tested candidates ``segment_keep_rate`` looks back at."""


def segment_keep_rate(state: AcdcState, candidates: list[Candidate], start: int) -> float:
    """The chance the segment's next tested candidate is kept, as the speculation guesses it: the
    kept fraction of its latest ``RECENT_DECISIONS`` tested candidates before ``start``, with the
    run's ``keep_rate`` as a prior worth two of them. A segment whose candidates are mostly kept
    (the input's edges into layer 0, say) is then guessed kept, so a batch still decides several of
    them. It reads only the state, so a resumed run speculates as the uninterrupted one did."""
    kept = tested = 0
    edge_scores, edges_kept = _readable(state.scores.edges), _readable(state.kept.edges)
    head_scores, heads_kept = _readable(state.scores.head_inputs), _readable(state.kept.head_inputs)
    for candidate in reversed(candidates[:start]):
        if tested == RECENT_DECISIONS:
            break
        if candidate.edge is not None:
            score, in_circuit = edge_scores[candidate.edge], edges_kept[candidate.edge]
        else:
            score, in_circuit = head_scores[candidate.head_input], heads_kept[candidate.head_input]
        if score == score:  # tested (not NaN)
            tested += 1
            kept += in_circuit
    return (int(kept) + 2 * keep_rate(state)) / (tested + 2)


def _current(state: AcdcState) -> tuple[np.ndarray, np.ndarray]:
    """The state's circuit as (edges [S, R], head inputs [L, H, 3]) numpy masks, to read (``_copied`` to set entries)."""
    return _readable(state.kept.edges), _readable(state.kept.head_inputs)


def _copied(circuit: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a circuit's (edges [S, R], head inputs [L, H, 3]) numpy masks, to set entries in."""
    return circuit[0].copy(), circuit[1].copy()


def _stacked(circuits: list[tuple[np.ndarray, np.ndarray]]) -> CircuitMask:
    """Circuits' (edges, head inputs) numpy masks as one ``CircuitMask`` [C, ...]."""
    return CircuitMask(*(torch.from_numpy(np.stack(part)) for part in zip(*circuits)))


PROBE_FROM = 8
"""The fewest tested candidates a segment must have for ``predict`` to probe it (``_probe``): a probe
costs a pass per ``batch_size - 1`` candidates (and a predictor's set-up once), and pays where
guesses from the keep rate alone would take several passes. ACDC probes only the segments of the
top layer and the logits: there a removal changes one receiver of the top layer, so a probe circuit
costs little beside its pass; deeper, every layer above changes in each circuit, and on random
models with 2 to 3 layers probing every segment made runs up to 18% slower (measured; on the
benchmark's ``default`` it was 4% faster than the top layer alone)."""

PROBE_BATCH_FROM = 12
"""The smallest batch size at which ACDC probes: a probe pass hints at ``batch_size - 1``
candidates, while a batch without hints decides a few (measured on the benchmark's small cases:
probes cost passes at batch size 4, break even at 8, and save 5 to 10% of the time from 12 to 32)."""


def _probe(
    state: AcdcState, candidates: list[Candidate], moot: list[bool], start_layer: int, offset: int, predict: Evaluate,
    threshold: float,
) -> None:
    """Hint at the decision of each tested candidate of a segment about to be visited, as ``predict``
    measures it: the current circuit with the candidate removed (and the moot candidates before it,
    as its circuit in a batch has them) against the current circuit, in passes of
    ``state.batch_size`` circuits (counted in ``state.forward_passes``). A candidate's decision
    rarely changes with the decisions before it, so the speculation then mostly guesses the path
    the sequential algorithm takes (``HINT_TRUST``)."""
    current = _current(state)
    before = _copied(current)  # the current circuit less the moot candidates so far
    per_pass = max(1, state.batch_size - 1)
    last = len(moot) - 1 - moot[::-1].index(False)
    tested: list[int] = []
    circuits = [current]
    for j in range(last + 1):
        if moot[j]:
            _set_entry(candidates[j], False, *before)
            continue
        circuit = _copied(before)
        _set_entry(candidates[j], False, *circuit)
        tested.append(j)
        circuits.append(circuit)
        if len(tested) == per_pass or j == last:
            values = state.measure(predict, _stacked(circuits), start_layer)
            for k, value in zip(tested, values[1:]):
                state.hints[offset + k] = value - values[0] >= threshold
            tested, circuits = [], [current]


def _speculate(state: AcdcState, candidates: list[Candidate], moot: list[bool], start: int, offset: int) -> _Batch:
    """The next batch from segment index ``start`` (the segment starts at ``offset`` in the
    visiting order): the ``state.window`` most likely circuits to be needed next (best first: a
    circuit's chance is the product of its guessed decisions' chances, ``HINT_TRUST`` for a
    candidate's hint, else ``segment_keep_rate``), so that one pass decides as many candidates as
    the guesses allow. With every guess "removed" this is the chain of circuits with candidates
    ``start``.. removed one after another."""
    tested, complete = [], True
    for j in range(start, len(candidates)):
        if not moot[j]:
            if len(tested) == state.window:
                complete = False
                break
            tested.append(j)
    if not tested:
        return _Batch(start, [], True, {}, None)
    rate = segment_keep_rate(state, candidates, start)
    hints = [state.hints.get(offset + k) for k in tested]
    p_keeps = [rate if hint is None else HINT_TRUST if hint else 1 - HINT_TRUST for hint in hints]
    nodes: dict[tuple[bool, ...], int] = {}
    circuits: list[tuple[np.ndarray, np.ndarray]] = []  # (edges, head inputs) of each circuit
    # (-chance, order, guesses, the parent's circuit (the state's for the root)), likeliest first
    frontier = [(-1.0, 0, (), _current(state))]
    order = 1
    while frontier and len(circuits) < state.window and -frontier[0][0] >= MIN_CHANCE:
        negative_chance, _, guesses, parent = heapq.heappop(frontier)
        circuit = _copied(parent)
        n = len(guesses)
        if n and guesses[-1]:  # the parent's candidate guessed kept
            _set_entry(candidates[tested[n - 1]], True, *circuit)
        for m in range(tested[n - 1] + 1 if n else start, tested[n] + 1):  # moot ones on the way, then the candidate
            _set_entry(candidates[m], False, *circuit)
        nodes[guesses] = len(circuits)
        circuits.append(circuit)
        if n + 1 < len(tested):
            p_keep = p_keeps[n]
            for guess, chance in ((False, 1 - p_keep), (True, p_keep)):
                heapq.heappush(frontier, (negative_chance * chance, order, guesses + (guess,), circuit))
                order += 1
    return _Batch(start, tested, complete, nodes, _stacked(circuits))


class _NonFiniteMetric(Exception):
    """The metric of a tested candidate's circuit is not finite; ``resume_at`` is the segment index
    of the first candidate whose decision is not final (the state holds the circuit before it)."""

    def __init__(self, value: float, candidate: Candidate, resume_at: int) -> None:
        self.value, self.candidate, self.resume_at = value, candidate, resume_at


def _decide(
    state: AcdcState, batch: _Batch, candidates: list[Candidate], start_layer: int, evaluate: Evaluate,
    threshold: float, offset: int,
) -> int:
    """Measure the batch and take the sequential algorithm's decisions from it, updating ``state``
    (its hints too, ``_learn_hints``); returns the segment index of the next candidate to visit.

    From the root, each circuit whose guesses all came true decides its candidate: a removal stays
    when it raises the metric by less than ``threshold``. The walk stops at the first decision
    whose circuit is not in the batch. After a wrong guess (the batch held the other branch of the
    walk's last step) the window becomes the number of decisions the batch gave less one, at least
    ``MIN_WINDOW``; else (every guess the walk met came true) it doubles; at most ``batch_size``.
    """
    if not batch.tested:  # only moot candidates: removed untested
        _remove_rest(state, candidates, batch.start)
        return len(candidates)
    values = state.measure(evaluate, batch.circuits, start_layer)
    cur_before = state.cur
    batched = len(values) > 1
    guesses: tuple[bool, ...] = ()
    resume_at = batch.start
    last: tuple[int, Candidate, bool] | None = None  # the walk's latest decision: (its circuit, candidate, kept)
    while guesses in batch.nodes:
        k, node = batch.tested[len(guesses)], batch.nodes[guesses]
        candidate, m, lone = candidates[k], values[node], not batched
        if math.isfinite(m) and (batched or state.cur_source) and abs(m - state.cur - threshold) <= near_tie_margin(m, state.cur):
            m, lone = state.measure_alone(evaluate, batch.circuits[node], start_layer), True
            if state.cur_source is not None:
                state.cur, state.cur_source = state.measure_alone(evaluate, *state.cur_source), None
        if not math.isfinite(m):
            _take_decision(state, batch, last)
            raise _NonFiniteMetric(m, candidate, resume_at)
        score = m - state.cur
        state.candidates_tested += 1
        state.record_score(candidate, score)
        kept = score >= threshold
        if not kept:  # a kept candidate is restored: the circuit and cur stay those before it
            state.cur = m
            state.cur_source = None if lone else (batch.circuits[node], start_layer)
        last = (node, candidate, kept)
        guesses += (kept,)
        resume_at = k + 1
    _take_decision(state, batch, last)
    state.hints = _learn_hints(state.hints, batch, values, cur_before, guesses, threshold, offset, offset + resume_at)
    decided_all = len(guesses) == len(batch.tested)
    # a wrong guess: the batch held the branch not taken at the walk's last step
    missed = bool(guesses) and not decided_all and guesses[:-1] + (not guesses[-1],) in batch.nodes
    state.window = min(state.batch_size, max(MIN_WINDOW, len(guesses) - 1) if missed else 2 * state.window)
    if batch.complete and decided_all:  # the rest of the segment is moot
        _remove_rest(state, candidates, resume_at)
        return len(candidates)
    return resume_at


def _take_decision(state: AcdcState, batch: _Batch, decision: tuple[int, Candidate, bool] | None) -> None:
    """Make ``state.kept`` the circuit after ``decision`` (its circuit in the batch, its candidate,
    whether it was kept), the walk's latest; nothing when the walk decided nothing."""
    if decision is None:
        return
    node, candidate, kept = decision
    state.kept = batch.circuits[node].clone()
    if kept:
        state.set(candidate, True)


def _learn_hints(
    hints: dict[int, bool], batch: _Batch, values: list[float], cur: float, taken: tuple[bool, ...], threshold: float,
    offset: int, visited: int,
) -> dict[int, bool]:
    """``hints`` for the candidates from visiting-order index ``visited`` on, updated from the
    batch's circuits off the path its walk took (decisions ``taken``; ``cur``: the metric before
    the batch): such a circuit decides its candidate as the sequential algorithm would had the
    guesses before it come true, so that decision is the candidate's hint (from the circuit whose
    guesses agree longest with ``taken``, the first such in the batch; it replaces an older hint)."""
    learned: dict[int, tuple[int, bool]] = {}  # visiting-order index -> (agreement, kept)
    for guesses, index in batch.nodes.items():
        n = len(guesses)
        if n < len(taken):  # its candidate was decided by this batch
            continue
        agree = next((j for j in range(min(n, len(taken))) if guesses[j] != taken[j]), n)
        context = cur  # the metric of the circuit its candidate is removed from: the last guessed removal's
        for j in range(n):
            if not guesses[j]:
                context = values[batch.nodes[guesses[:j]]]
        k = offset + batch.tested[n]
        if k not in learned or agree > learned[k][0]:
            learned[k] = (agree, values[index] - context >= threshold)
    updated = {k: kept for k, kept in hints.items() if k >= visited}
    updated.update({k: kept for k, (_, kept) in learned.items()})
    return updated


def _remove_rest(state: AcdcState, candidates: list[Candidate], start: int) -> None:
    """Remove candidates ``start``.. of the segment (all moot) from the current circuit, untested."""
    for candidate in candidates[start:]:
        state.set(candidate, False)


def _is_skipped(candidate: Candidate, skip: Tensor | None) -> bool:
    return skip is not None and candidate.edge is not None and bool(skip[candidate.edge])


def _set_mask(candidate: Candidate, kept: bool, mask: CircuitMask) -> None:
    """Set ``candidate``'s entry of ``mask`` (in place)."""
    _set_entry(candidate, kept, _writable(mask.edges), _writable(mask.head_inputs))


def _set_entry(candidate: Candidate, kept: bool, edges: Tensor | np.ndarray, head_inputs: Tensor | np.ndarray) -> None:
    """Set ``candidate``'s entry of a circuit's ``edges`` [S, R] or ``head_inputs`` [L, H, 3] (in place)."""
    if candidate.edge is not None:
        edges[candidate.edge] = kept
    else:
        head_inputs[candidate.head_input] = kept


def _readable(tensor: Tensor) -> np.ndarray:
    """``tensor``'s values as a numpy array (a CPU tensor's own memory, else a copy)."""
    if tensor.device.type != "cpu":
        return tensor.detach().cpu().numpy()
    return tensor.detach().numpy() if tensor.requires_grad else tensor.numpy()


def _writable(tensor: Tensor) -> Tensor | np.ndarray:
    """``tensor`` for writing single entries: a CPU tensor's numpy view (its memory, written
    without a torch call per entry), else the tensor itself."""
    return tensor.numpy() if tensor.device.type == "cpu" and not tensor.requires_grad else tensor


# ----- the method, for discover ---------------------------------------------------------------------


@dataclass
class AcdcParams:
    """Exact ACDC's parameters (``discover(method="acdc", ...)``).

    threshold: tau, in the metric's units: a removal stays when it raises the metric by less.
    batch_size: candidates per forward pass (speculatively; the circuit is the same for any size);
        None: a resumed run's, else chosen from free memory (at most 32).
    """

    threshold: float = 0.05
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        self.threshold = check_threshold(self.threshold)
        if self.batch_size is not None:
            check_batch_size(self.batch_size)


@dataclass
class AcdcConfig(AcdcParams):
    """``conf/method/acdc.yaml``."""

    name: str = "acdc"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


def batch_size_for(inputs: MethodInput, batch_size: int | None) -> int:
    """The batch size a run uses: the one given; else a resumed run keeps its checkpoint's (its
    file is then the uninterrupted run's); else one chosen from free memory."""
    if batch_size is not None:
        return batch_size
    return inputs.resume.batch_size if inputs.resume is not None else inputs.patcher.auto_batch_size()


def acdc_outcome(inputs: MethodInput, name: str, threshold: float, batch_size: int, skip: Tensor | None = None) -> MethodOutcome:
    """Run exact ACDC in ``inputs``' setting (resuming and checkpointing as it says) and describe it
    as method ``name``."""
    result = run_acdc(
        inputs.graph, inputs.evaluate, threshold, batch_size=batch_size, progress=inputs.progress, skip=skip,
        resume=inputs.resume, checkpointer=inputs.checkpointer, predict=inputs.predict,
    )
    return MethodOutcome(
        kept=result.kept,
        scores=result.scores,
        description={"name": name, "ablation": inputs.ablation, "order": "reference"},
        threshold=threshold,
        forward_passes=result.forward_passes,
        run_block={"candidates_tested": result.candidates_tested, "batch_size": batch_size},
    )


def _run(inputs: MethodInput, params: AcdcParams) -> MethodOutcome:
    return acdc_outcome(inputs, "acdc", params.threshold, batch_size_for(inputs, params.batch_size))


def threshold_selection(params: AcdcParams) -> str:
    return f"threshold {params.threshold}"


SPEC = MethodSpec(
    name="acdc", params=AcdcParams, config=AcdcConfig, run=_run, selection=threshold_selection,
    circuits=CircuitSelection.THRESHOLD, checkpoints=True
)
