"""Node-level circuits: sets of whole nodes as edge circuits, and node scores in the engine's layouts.

A node is a sender of the graph (docs/design.md, "The graph"): the input sender (``input``, or
``tok_embed`` and ``pos_embed`` with ``split_input``), a head ``a{L}.h{H}``, an MLP ``m{L}``; the
same nodes EAP-IG's ``attribute_node`` scores (its ``nodes_scores`` has one entry per forward node).
Node scores are float64 [n_senders], in ``graph.senders`` order.

**Removing a node** removes every edge out of it: every receiver reads the node's ablated output
(``without_senders``). Edges into a removed node then no longer change any logit, so a set of kept
nodes K is the edge circuit of the edges between kept nodes (``node_circuit``):

    u -> v kept  iff  u in K and (v is ``logits`` or the node v belongs to is in K)

with every head input of a kept head kept (EAP-IG's ``apply_topn(level="node")``: a kept node's
outgoing edges into kept nodes; its ``prune()`` removes the rest, as ``discover`` prunes every
circuit to input-to-logits paths).

**Scores in the edge layout** (``node_edge_scores``): each node's score on every edge out of it
(NaN where no edge exists, head inputs NaN), so that code ranking edges by |score| (sweeps, MIB's
edge budgets) ranks the edges of better nodes first; the circuit file's method block keeps the
node scores themselves (``node_score_block``), and the EAP-IG / MIB export writes them as its
``nodes_scores``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.nodes import NodeKind, component_of, parse_node
from acdc_engine.methods.eap import check_selection


def receiver_owner(graph: Graph) -> Tensor:
    """The node each receiver belongs to: long [n_receivers], its sender index (a head receiver's
    head, an MLP's input its MLP), -1 for ``logits``, which belongs to no node."""
    return torch.tensor([graph.sender_index.get(component_of(name), -1) for name in graph.receivers], dtype=torch.long)


def without_senders(graph: Graph, kept: Tensor) -> CircuitMask:
    """The full model with every edge out of the nodes not in ``kept`` (bool [n_senders]) removed:
    what node-level ACDC and exact node scores evaluate. Edges into removed nodes stay (they change
    no logit), so every receiver before the earliest removed node's first reader is intact."""
    return CircuitMask(graph.edge_exists & kept[:, None], graph.full_head_input_mask())


def node_circuit(graph: Graph, kept: Tensor) -> CircuitMask:
    """The edges between the nodes in ``kept`` (bool [n_senders]; module docstring) and the head
    inputs of the kept heads: one circuit's ``CircuitMask``."""
    owner = receiver_owner(graph)
    receiver_kept = torch.where(owner >= 0, kept[owner.clamp(min=0)], torch.ones_like(owner, dtype=torch.bool))
    heads = torch.zeros(graph.shape.n_layers, graph.shape.n_heads, 3, dtype=torch.bool)
    for s, name in enumerate(graph.senders):
        node = parse_node(name)
        if node.kind is NodeKind.HEAD:
            heads[node.layer, node.head] = bool(kept[s])
    return CircuitMask(graph.edge_exists & kept[:, None] & receiver_kept[None, :], heads)


def node_edge_scores(graph: Graph, node_scores: Tensor) -> Scores:
    """Each node's score (float64 [n_senders]) on every edge out of it: ``Scores`` with edges
    [S, R] (NaN where no edge exists) and head inputs NaN (not scored)."""
    nan = torch.tensor(math.nan, dtype=torch.float64)
    edges = torch.where(graph.edge_exists, node_scores.double()[:, None], nan)
    return Scores(edges, torch.full((graph.shape.n_layers, graph.shape.n_heads, 3), math.nan, dtype=torch.float64))


def node_score_block(graph: Graph, node_scores: Tensor) -> dict[str, float]:
    """{node name: score} in forward order, for the circuit file's method block (finite scores:
    AcdcError naming the first node whose score is not)."""
    values = node_scores.double().tolist()
    for name, value in zip(graph.senders, values):
        if not math.isfinite(value):
            raise AcdcError(f"the score of node '{name}' is not finite ({value})")
    return dict(zip(graph.senders, values))


def check_node_selection(top_n: int | None, threshold: float | None) -> tuple[int | None, float | None]:
    """Validate (top_n, threshold) as ``eap.check_selection`` does, top_n a count of nodes >= 0."""
    top_n, threshold = check_selection(None, top_n, threshold)
    if top_n is not None and (isinstance(top_n, bool) or top_n < 0):
        raise AcdcError(f"top_n must be a number of nodes >= 0, got {top_n!r}")
    return top_n, threshold


def select_nodes(graph: Graph, node_scores: Tensor, top_n: int | None = None, threshold: float | None = None) -> Tensor:
    """The nodes with the top_n largest |score| (every node when top_n exceeds them), or with
    |score| >= threshold: bool [n_senders]. Ties go to the earlier node in forward order (EAP-IG's
    ``apply_topn`` leaves them to ``argsort``). AcdcError on a non-finite score."""
    top_n, threshold = check_node_selection(top_n, threshold)
    node_score_block(graph, node_scores)  # every score finite
    magnitude = node_scores.double().abs()
    kept = torch.zeros(len(graph.senders), dtype=torch.bool)
    if top_n is not None:
        kept[torch.sort(magnitude, descending=True, stable=True).indices[:top_n]] = True
    else:
        kept = magnitude >= threshold
    return kept


def start_layer(graph: Graph, sender: int) -> int:
    """The layer a patched pass may resume at when only the edges out of ``sender`` change: the
    layer of its earliest reader (a head's q/k/v input or an MLP's input in layer L: L; only
    ``logits``: n_layers), below which every receiver is intact."""
    layers = []
    for r in graph.edge_exists[sender].nonzero().flatten().tolist():
        node = parse_node(graph.receivers[r])
        layers.append(graph.shape.n_layers if node.kind is NodeKind.LOGITS else node.layer)
    return min(layers)
