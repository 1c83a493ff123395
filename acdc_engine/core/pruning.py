"""Pruning to the emitted circuit: the part of a method's raw decisions on input-to-logits paths.

A method decides which edges and head inputs stay (its ``kept`` masks). The circuit it emits
(``in_graph``) is what of that lies on some path from an input sender to ``logits``: a head
receiver ``a{L}.h{H}<q>`` reaches its head only through its head input; an MLP's receiver and
sender are one node (``Graph.to_networkx``).
"""

from __future__ import annotations

import networkx as nx
import torch
from torch import Tensor

from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.nodes import LOGITS, QKV, component_of, head_name, head_receiver_name


def on_input_to_logits_paths(graph: Graph, mask: CircuitMask) -> CircuitMask:
    """The part of ``mask`` (one circuit: edges [S, R], head inputs [L, H, 3]) on some path from an
    input sender to ``logits``, in the same shapes."""
    edge_mask, head_input_mask = mask.edges, mask.head_inputs
    g = graph.to_networkx(mask)
    from_input: set[str] = set()
    for source in graph.input_senders:
        from_input |= nx.descendants(g, source) | {source}
    to_logits = nx.ancestors(g, LOGITS) | {LOGITS}
    senders_ok = torch.tensor([name in from_input for name in graph.senders])
    receivers_ok = torch.tensor([name in to_logits for name in graph.receivers])
    edges = edge_mask & graph.edge_exists & senders_ok[:, None] & receivers_ok[None, :]
    heads = head_input_mask.clone()
    for layer, head, x in head_input_mask.nonzero().tolist():
        heads[layer, head, x] = head_receiver_name(layer, head, QKV[x]) in from_input and head_name(layer, head) in to_logits
    return CircuitMask(edges, heads)


def emitted_nodes(graph: Graph, edge_in_graph: Tensor) -> list[str]:
    """The components (input senders, heads, MLPs, logits) with an edge in ``edge_in_graph`` [S, R],
    in forward order."""
    used = set()
    for s, r in edge_in_graph.nonzero().tolist():
        used |= {graph.senders[s], component_of(graph.receivers[r])}
    return [name for name in graph.senders + [LOGITS] if name in used]
