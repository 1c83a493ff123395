"""The structural ground truth of a tracr-compiled model, derived from its weights.

tracr gives every residual dimension one meaning (``tokens:x``, ``indices:2``, ``one``, a value of
an intermediate SOp) and builds each block to read and write only the dimensions of its feature
spaces; all other rows and columns of its weights are exactly zero. So which edges of the
computational graph can carry anything is a property of the weights alone:

  sender u writes dimension d when column d of its output map is nonzero:
      ``tok_embed`` W_E[:, d];  ``pos_embed`` W_pos[:, d];  ``input`` either;
      head ``a{L}.h{H}`` (W_V W_O)[:, d] or (b_V W_O)[d];  MLP ``m{L}`` W_out[:, d] or b_out[d];
  receiver v reads dimension d when row d of its input map is nonzero:
      ``<q>`` (W_Q W_K^T)[d, :] or (W_Q b_K)[d];  ``<k>`` (W_K W_Q^T)[d, :] or (W_K b_Q)[d];
      ``<v>`` (W_V W_O)[d, :];  MLP ``m{L}`` W_in[d, :];  ``logits`` W_U[d, :].

Edge u -> v is in the ground truth when u writes a dimension that v reads; a head input (the head's
q, k or v as a whole) when its receiver reads some dimension or has a nonzero bias. The result is
restricted to input-to-logits paths, as every emitted circuit is. An edge left out carries a vector
that its receiver's weights annihilate, so the ground truth computes exactly the full model's
outputs under any ablation; conversely an edge in it can carry information, though on a given
dataset it may carry none (tracr's always-attend-to-BOS terms, for instance).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.circuit import Circuit, on_input_to_logits_paths
from acdc_engine.core.graph import QKV, Graph, build_graph, head_receiver_name, mlp_name

RULE = (
    "edge u->v iff u writes a residual dimension that v reads (nonzero weights); "
    "head input iff its receiver reads one or has a bias"
)


def residual_reads_and_writes(model: Any, graph: Graph) -> tuple[Tensor, Tensor]:
    """(writes bool [n_senders, d_model], reads bool [n_receivers, d_model]) of ``model``'s weights."""
    cfg = model.cfg
    writes = torch.zeros(len(graph.senders), cfg.d_model, dtype=torch.bool)
    reads = torch.zeros(len(graph.receivers), cfg.d_model, dtype=torch.bool)

    def nonzero_columns(matrix: Tensor) -> Tensor:
        return (matrix.double() != 0).any(0)

    def nonzero_rows(matrix: Tensor) -> Tensor:
        return (matrix.double() != 0).any(-1)

    token, position = nonzero_columns(model.embedding.W_E.detach()), nonzero_columns(model.pos_embedding.W_pos.detach())
    if graph.shape.split_input:
        writes[graph.sender_index["tok_embed"]] = token
        writes[graph.sender_index["pos_embed"]] = position
    else:
        writes[graph.sender_index["input"]] = token | position
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        w_q, w_k, w_v, w_o = (w.detach().double() for w in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O))
        b_q, b_k, b_v = (b.detach().double() for b in (attn.b_Q, attn.b_K, attn.b_V))
        for head in range(cfg.n_heads):
            qk = w_q[head] @ w_k[head].T  # [d_model (query side), d_model (key side)]
            ov = w_v[head] @ w_o[head]  # [d_model (read), d_model (written)]
            writes[graph.sender_index[f"a{layer}.h{head}"]] = nonzero_columns(ov) | (b_v[head] @ w_o[head] != 0)
            head_reads = {
                "q": nonzero_rows(qk) | (w_q[head] @ b_k[head] != 0),
                "k": nonzero_columns(qk) | (w_k[head] @ b_q[head] != 0),
                "v": nonzero_rows(ov),
            }
            for qkv, dims in head_reads.items():
                reads[graph.receiver_index[head_receiver_name(layer, head, qkv)]] = dims
        if graph.shape.has_mlp:
            mlp = block.mlp
            writes[graph.sender_index[mlp_name(layer)]] = nonzero_columns(mlp.W_out.detach()) | (mlp.b_out.detach() != 0)
            reads[graph.receiver_index[mlp_name(layer)]] = nonzero_rows(mlp.W_in.detach())
    reads[graph.receiver_index["logits"]] = nonzero_rows(model.unembedding.W_U.detach())
    return writes, reads


def structural_circuit(model: Any, residual_labels: list[str] | None = None, split_input: bool = True) -> Circuit:
    """The structural ground truth of ``model`` (a tracr-compiled ``ModelSpec``) as a Circuit.

    ``residual_labels`` (tracr's name of each residual dimension) are used to record, for every
    edge and head input of the circuit, the dimensions it carries (file field ``subspaces``).
    """
    cfg = model.cfg
    graph = build_graph(cfg, split_input=split_input)
    writes, reads = residual_reads_and_writes(model, graph)
    edges = graph.edge_exists & (writes.double() @ reads.double().T > 0)
    head_inputs = torch.zeros(cfg.n_layers, cfg.n_heads, 3, dtype=torch.bool)
    for layer, block in enumerate(model.blocks):
        biases = torch.stack([block.attn.b_Q, block.attn.b_K, block.attn.b_V]).detach()  # [3, h, d_head]
        for head in range(cfg.n_heads):
            for x, qkv in enumerate(QKV):
                receiver = graph.receiver_index[head_receiver_name(layer, head, qkv)]
                head_inputs[layer, head, x] = bool(reads[receiver].any() or (biases[x, head] != 0).any())
    emitted = on_input_to_logits_paths(graph, CircuitMask(edges, head_inputs))
    labels = readable_labels(residual_labels) if residual_labels is not None else [str(d) for d in range(cfg.d_model)]
    subspaces = {}
    for s, r in emitted.edges.nonzero().tolist():
        shared = (writes[s] & reads[r]).nonzero().flatten().tolist()
        subspaces[f"{graph.senders[s]}->{graph.receivers[r]}"] = [labels[d] for d in shared]
    for layer, head, x in emitted.head_inputs.nonzero().tolist():
        receiver = head_receiver_name(layer, head, QKV[x])
        subspaces[receiver] = [labels[d] for d in reads[graph.receiver_index[receiver]].nonzero().flatten().tolist()]
    return Circuit.unscored(
        graph, emitted,
        model=describe_model(model, split_input),
        task={"name": cfg.model_name},
        method={"name": "tracr-structure", "rule": RULE},
        extra={"subspaces": subspaces},
    )


def describe_model(model: Any, split_input: bool) -> dict[str, Any]:
    """The circuit file's ``model`` block for a tracr-compiled model."""
    cfg = model.cfg
    return {
        "name": cfg.model_name,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "attn_only": bool(cfg.attn_only),
        "split_input": split_input,
    }


def readable_labels(labels: list[str]) -> list[str]:
    """tracr's residual labels without the process-dependent ids it appends to SOp names
    (``opp_idx_4:-3`` -> ``opp_idx:-3``), unless that would make two labels equal."""
    stripped = [re.sub(r"_\d+(?=:|$|_selector_width_attn_output$)", "", label) for label in labels]
    return stripped if len(set(stripped)) == len(labels) else list(labels)
