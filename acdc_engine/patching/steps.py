"""The steps of a patched pass, one per kind of layer: attention, MLP, logits.

Each step reads its receivers' inputs from the ``PassState``, computes its senders' outputs with the
model's own components (``ModelSpec``) and records them. Work that is the same in every circuit of
the batch is done once; the rest per circuit, with the q/k/v and MLP products called once per circuit
(``each_circuit``) so that a circuit's values are the same float bits alone and in a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from acdc_engine.graph import Graph, mlp_name
from acdc_engine.patching.baseline import ReceiverGroups, attention_contributions, first_head_sender
from acdc_engine.patching.pass_state import PassState, each_circuit

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec


def attention_layer(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState, layer: int, head_input_mask: Tensor) -> None:
    """Layer ``layer``'s heads for every circuit; ``head_input_mask`` [C, n_layers, n_heads, 3]."""
    baseline = state.baseline
    n_heads = graph.shape.n_heads
    n_circuits = state.n_circuits
    inputs = state.inputs(groups.qkv[layer], graph.shape.attention_reads(layer))
    keep = head_input_mask[:, layer].permute(0, 2, 1)  # [C, 3, h]
    head_varies = (inputs.varies.view(3, n_heads) | (keep != keep[:1]).any(0)).any(0)  # [h]
    if spec.cfg.post_norms and head_varies.any():
        head_varies[:] = True  # the post-attention norm's scale couples the layer's heads
    # q/k/v from the receivers' inputs, before head inputs are cut: receivers with no kept edge have
    # the all-removed input's, those the same in every circuit are computed once
    qkv_from_inputs = baseline.ablated_input_qkv[layer].clone()
    if inputs.shared is not None:
        receivers = inputs.active.nonzero().flatten()
        qkv_from_inputs[:, :, receivers // n_heads, receivers % n_heads] = spec.qkv(layer, inputs.shared, receivers)
    first = first_head_sender(graph, layer)
    shared_heads = (~head_varies).nonzero().flatten()
    if len(shared_heads):
        qkv = torch.where(keep[0, None, None, :, :, None], qkv_from_inputs, baseline.ablated.qkv[layer])
        state.record(first + shared_heads, attention_contributions(spec, layer, qkv[:, :, :, shared_heads], shared_heads), False)
    varying_heads = head_varies.nonzero().flatten()
    if len(varying_heads):
        # q/k/v of the varying heads in every circuit: shared receivers broadcast, varying ones computed
        qkv = qkv_from_inputs[None].repeat(n_circuits, 1, 1, 1, 1, 1)
        if inputs.per_circuit is not None:
            receivers = inputs.varies.nonzero().flatten()
            computed = each_circuit(lambda x: spec.qkv(layer, x, receivers), inputs.per_circuit)  # [C, n, pos, Rv, d_head]
            qkv[:, :, :, receivers // n_heads, receivers % n_heads] = computed
        qkv = qkv[:, :, :, :, varying_heads]  # [C, n, pos, 3, hv, d_head]
        ablated = baseline.ablated.qkv[layer][None, :, :, :, varying_heads]
        qkv = torch.where(keep[:, None, None, :, varying_heads, None], qkv, ablated)
        out = attention_contributions(spec, layer, qkv.flatten(0, 1), varying_heads)
        state.record(first + varying_heads, out.unflatten(0, (n_circuits, -1)), True)


def mlp_layer(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState, layer: int) -> None:
    """Layer ``layer``'s MLP for every circuit."""
    inputs = state.inputs(groups.mlp[layer], graph.shape.mlp_reads(layer))
    sender = torch.tensor([graph.sender_index[mlp_name(layer)]], device=state.kept.device)
    if inputs.per_circuit is not None:
        state.record(sender, each_circuit(lambda x: spec.mlp(layer, x), inputs.per_circuit), True)
    elif inputs.shared is not None:
        state.record(sender, spec.mlp(layer, inputs.shared), False)
    else:
        state.record(sender, state.baseline.ablated_input_mlp_out[layer][:, :, None], False)


def logits_at(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState, positions: Tensor) -> Tensor:
    """Logits [C, n_prompts, P, d_vocab] at ``positions``."""
    read_at = graph.shape.logits_read
    inputs = state.inputs(groups.logits, read_at, positions)
    if inputs.per_circuit is not None:
        return spec.unembed(inputs.per_circuit[:, :, :, 0])  # batched: it reads W_U once
    if inputs.shared is None:
        final = state.baseline.ablated_input[read_at][None, :, positions]
    else:
        final = inputs.shared[None, :, :, 0]
    return spec.unembed(final).expand(state.n_circuits, -1, -1, -1)
