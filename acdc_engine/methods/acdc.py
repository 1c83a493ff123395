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

Evaluate = Callable[[Tensor, Tensor], Tensor]
"""(edge masks [C, S, R], head input masks [C, L, H, 3]) -> metric [C] (lower is better)."""


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


def visiting_order(graph: Graph) -> list[Candidate]:
    """Every candidate removal, in the order ACDC visits them (see the module docstring)."""
    order: list[Candidate] = []
    n_layers, n_heads = graph.shape.n_layers, graph.shape.n_heads

    def edges_into(receiver: str) -> None:
        r = graph.receiver_index[receiver]
        senders = graph.edge_exists[:, r].nonzero().flatten().tolist()
        for s in reversed(senders):
            order.append(Candidate(f"{graph.senders[s]}->{receiver}", edge=(s, r)))

    edges_into("logits")
    for layer in reversed(range(n_layers)):
        if graph.shape.has_mlp:
            edges_into(f"m{layer}")
        for x in reversed(range(3)):
            for head in reversed(range(n_heads)):
                order.append(Candidate(head_receiver_name(layer, head, QKV[x]), head_input=(layer, head, x)))
        for x in reversed(range(3)):
            for head in reversed(range(n_heads)):
                edges_into(head_receiver_name(layer, head, QKV[x]))
    return order


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


def run_acdc(graph: Graph, evaluate: Evaluate, threshold: float, progress: bool = True) -> AcdcResult:
    """Exact ACDC on ``graph``: ``evaluate`` scores circuits (lower is better), see ``Evaluate``."""
    threshold = check_threshold(threshold)
    circuit = _Circuit(graph)
    edge_scores = torch.full(graph.edge_exists.shape, math.nan, dtype=torch.float64)
    head_input_scores = torch.full(circuit.head_inputs.shape, math.nan, dtype=torch.float64)

    def metric_of(c: _Circuit) -> float:
        value = float(evaluate(c.edges[None], c.head_inputs[None])[0])
        if not math.isfinite(value):
            raise AcdcError(f"the metric is {value} (not finite) for the circuit being tested")
        return value

    cur = metric_full = metric_of(circuit)
    forward_passes, tested = 1, 0
    order = visiting_order(graph)
    for candidate in tqdm(order, desc="ACDC candidates", unit="cand", disable=not progress, leave=False):
        if circuit.is_moot(candidate):
            circuit.set(candidate, False)
            continue
        circuit.set(candidate, False)
        try:
            m = metric_of(circuit)
        except AcdcError as error:
            raise AcdcError(f"while testing '{candidate.name}': {error}") from None
        forward_passes += 1
        tested += 1
        score = m - cur
        if candidate.edge is not None:
            edge_scores[candidate.edge] = score
        else:
            head_input_scores[candidate.head_input] = score
        if score < threshold:
            cur = m
        else:
            circuit.set(candidate, True)
    return AcdcResult(
        edge_kept=circuit.edges,
        head_input_kept=circuit.head_inputs,
        edge_scores=edge_scores,
        head_input_scores=head_input_scores,
        metric_full=metric_full,
        metric_final=cur,
        forward_passes=forward_passes,
        candidates_tested=tested,
    )
