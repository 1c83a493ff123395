"""The computational graph ACDC prunes: senders, receivers, edges, and dense masks over them.

Naming (``acdc_engine.core.nodes``; docs/design.md; the same as EAP-IG / MIB circuit files):
  senders   write to the residual stream: ``input`` (or ``tok_embed`` and ``pos_embed`` with
            ``split_input``), ``a{L}.h{H}`` (one head's result, z_h @ W_O[h]), ``m{L}`` (MLP output);
  receivers read from it: ``a{L}.h{H}<q>``, ``<k>``, ``<v>`` (one head's query/key/value input),
            ``m{L}`` (MLP input), ``logits`` (the final residual, before the final LayerNorm).
An edge ``u->v`` exists when u writes before v reads. Besides edges, each head receiver has a
*head input* (the reference ACDC's ``q_input -> q`` edge): removing it replaces that head's q (k, v)
activation by its ablated value. Head inputs are named like their receiver, e.g. ``a1.h2<k>``.

Masks are dense boolean tensors, ``True`` = in the circuit:
  edge mask        [n_senders, n_receivers]   (entries where no edge exists are ``False``)
  head input mask  [n_layers, n_heads, 3]     (last axis: q, k, v)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.shape import INPUT_WRITES, GraphShape, heads_write, mlp_writes
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.nodes import QKV, NodeKind, edge_name, head_name, head_receiver_name, mlp_name, parse_node, split_edge


@dataclass
class Graph:
    """Senders and receivers in forward order, and which sender -> receiver edges exist.

    ``sender_layer[s]`` / ``receiver_layer[r]`` place each node on one forward-order axis, in half
    layers (``INPUT_WRITES``, ``heads_write``, ``mlp_writes`` and ``GraphShape``'s ``*_reads``): the
    input writes at -1, layer L's heads write at 2L and their receivers read at 2L, layer L's MLP
    writes at 2L+1 and reads at 2L+1 (at 2L in a parallel block), logits read at 2 * n_layers.
    Edge u -> v exists iff u writes strictly before v reads (heads of one layer do not feed each
    other, nor, in a parallel block, the MLP beside them).
    """

    shape: GraphShape
    senders: list[str]
    receivers: list[str]
    sender_layer: list[int]
    receiver_layer: list[int]
    edge_exists: torch.Tensor  # bool [n_senders, n_receivers]
    sender_index: dict[str, int] = field(init=False)
    receiver_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.sender_index = {name: i for i, name in enumerate(self.senders)}
        self.receiver_index = {name: i for i, name in enumerate(self.receivers)}

    @property
    def n_edges(self) -> int:
        return int(self.edge_exists.sum())

    @property
    def input_senders(self) -> list[str]:
        return ["tok_embed", "pos_embed"] if self.shape.split_input else ["input"]

    def edges(self) -> list[tuple[str, str]]:
        """All edges as (sender, receiver), receivers in forward order, senders in forward order."""
        pairs = self.edge_exists.T.nonzero().tolist()
        return [(self.senders[s], self.receivers[r]) for r, s in pairs]

    def edge_names(self) -> list[str]:
        return [edge_name(s, r) for s, r in self.edges()]

    def head_input_names(self) -> list[str]:
        """Head inputs in mask order: layer, head, then q, k, v."""
        return [
            head_receiver_name(layer, head, qkv)
            for layer in range(self.shape.n_layers)
            for head in range(self.shape.n_heads)
            for qkv in QKV
        ]

    def parse_edge(self, name: str) -> tuple[int, int]:
        """``"a0.h1->a1.h2<k>"`` -> (sender index, receiver index); AcdcError if it is no edge."""
        sender, receiver = split_edge(name)
        if sender not in self.sender_index:
            raise AcdcError(f"unknown sender '{sender}' in edge '{name}'")
        if receiver not in self.receiver_index:
            raise AcdcError(f"unknown receiver '{receiver}' in edge '{name}'")
        s, r = self.sender_index[sender], self.receiver_index[receiver]
        if not self.edge_exists[s, r]:
            raise AcdcError(f"'{name}' is not an edge of this model: '{sender}' does not write before '{receiver}' reads")
        return s, r

    def parse_head_input(self, name: str) -> tuple[int, int, int]:
        """``"a1.h2<k>"`` -> (layer, head, qkv index); AcdcError if no such head receiver exists."""
        if name not in self.receiver_index or parse_node(name).kind is not NodeKind.HEAD_RECEIVER:
            raise AcdcError(f"unknown head input '{name}' (expected e.g. 'a0.h1<q>')")
        node = parse_node(name)
        return node.layer, node.head, node.qkv_index

    def full_edge_mask(self) -> torch.Tensor:
        return self.edge_exists.clone()

    def full_head_input_mask(self) -> torch.Tensor:
        return torch.ones(self.shape.n_layers, self.shape.n_heads, 3, dtype=torch.bool)

    def full_mask(self) -> CircuitMask:
        """Every edge and head input kept: the full model."""
        return CircuitMask(self.full_edge_mask(), self.full_head_input_mask())

    def empty_mask(self) -> CircuitMask:
        """Nothing kept: every edge and head input ablated."""
        return CircuitMask(torch.zeros_like(self.edge_exists), torch.zeros(self.shape.n_layers, self.shape.n_heads, 3, dtype=torch.bool))

    def to_networkx(self, mask: CircuitMask | None = None) -> nx.DiGraph:
        """A DiGraph over sender and receiver names with the edges and head inputs in ``mask``
        (default: all).

        Besides sender -> receiver edges it holds each node's internal link: receiver ``m{L}`` ->
        sender ``m{L}`` is the same name, so the MLP is one node; head receiver ``a{L}.h{H}<q>`` ->
        sender ``a{L}.h{H}`` when that head input is in the mask. ``logits`` is a node of its own.
        """
        mask = self.full_mask() if mask is None else mask
        edge_mask, head_input_mask = mask.edges, mask.head_inputs
        g = nx.DiGraph()
        g.add_nodes_from(self.senders)
        g.add_nodes_from(self.receivers)
        for s, r in (edge_mask & self.edge_exists).nonzero().tolist():
            g.add_edge(self.senders[s], self.receivers[r])
        for layer, head, qkv in head_input_mask.nonzero().tolist():
            g.add_edge(head_receiver_name(layer, head, QKV[qkv]), head_name(layer, head))
        return g


def build_graph(model_cfg: Any, split_input: bool = False) -> Graph:
    """The graph of a model config (``GraphShape.from_model_config``): attention-only or with MLPs,
    sequential or parallel blocks."""
    shape = GraphShape.from_model_config(model_cfg, split_input)
    senders: list[str] = []
    sender_layer: list[int] = []
    receivers: list[str] = []
    receiver_layer: list[int] = []
    for name in (["tok_embed", "pos_embed"] if split_input else ["input"]):
        senders.append(name)
        sender_layer.append(INPUT_WRITES)
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            senders.append(head_name(layer, head))
            sender_layer.append(heads_write(layer))
            for qkv in QKV:
                receivers.append(head_receiver_name(layer, head, qkv))
                receiver_layer.append(shape.attention_reads(layer))
        if shape.has_mlp:
            senders.append(mlp_name(layer))
            sender_layer.append(mlp_writes(layer))
            receivers.append(mlp_name(layer))
            receiver_layer.append(shape.mlp_reads(layer))
    receivers.append("logits")
    receiver_layer.append(shape.logits_read)
    writes = torch.tensor(sender_layer)
    reads = torch.tensor(receiver_layer)
    edge_exists = writes[:, None] < reads[None, :]
    return Graph(shape, senders, receivers, sender_layer, receiver_layer, edge_exists)
