"""The differentiable patched pass: circuits with masks in [0, 1] (issue 19).

The patching rule is the boolean pass's (docs/design.md, "Patching semantics") with float masks:

    in_v = A_v + sum_u m_uv (out_u - out*_u)

A_v is receiver v's input with every edge removed (``Baseline.ablated_input``), out_u sender u's
output in this pass, out*_u its ablated output (``Baseline.ablated_out``: the corrupted run, 0 or the
mean, as the baseline's ablation says). A head input h in [0, 1] mixes that head's q (k, v):

    q = h * qkv(in_v) + (1 - h) * q*

with q* the ablated q (``Baseline.ablated.qkv``). At masks in {0, 1} this is the boolean pass
(``EdgePatcher.logits``) up to float rounding: 1 * x + 0 * y = x and 0 * x + 1 * y = y exactly.

Every layer runs through the model's own components (``ModelSpec.qkv_rows``, ``head_results``,
``attention_out``, ``mlp``, ``unembed``), so every architecture the boolean pass supports is
supported here. Unlike the boolean pass nothing is shared between circuits or cached between
passes: every circuit's every receiver is computed, with autograd recording it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import mlp_name
from acdc_engine.core.mask import CircuitMask
from acdc_engine.patching.baseline import first_head_sender

if TYPE_CHECKING:
    from acdc_engine.patching.patcher import EdgePatcher


def float_mask_logits(patcher: EdgePatcher, mask: CircuitMask) -> Tensor:
    """Logits [*C, n_prompts, P, d_vocab] of the float-masked model at ``patcher.positions``.

    Args:
        patcher: its ``spec``, ``graph``, ``baseline`` and ``positions`` are read (nothing else;
            the patcher is not changed).
        mask: ``edges`` [*C, n_senders, n_receivers] and ``head_inputs`` [*C, n_layers, n_heads, 3]
            in [0, 1] (float of any dtype, may require grad; bool is taken as 0/1), with at most one
            leading circuit axis C. Entries where no edge exists are never read. The masks are cast
            to the model's dtype; gradients flow back to them in their own dtype.
    Returns:
        logits, differentiable with respect to both mask tensors; no C axis if the mask has none.

    Memory. Autograd keeps, for the backward pass, with C circuits, n prompts, T positions, L layers,
    H heads, d = d_model, dh = d_head, d_mlp (0 without MLPs), S' = L * (H + has_mlp) non-input
    senders, P logits' positions and b bytes per element of the model's dtype (the weights and the
    patcher's ``Baseline`` are read, never copied):

    - every non-input sender's difference out_u - out*_u, [C, S', n * T * d], held once (every later
      receiver's masked sum reads it by reference);
    - per layer: the q/k/v receivers' inputs [C, 3H, n * T, d] (the pre-norm keeps them); q/k/v before
      the head-input mix [C, 3, H, n, T, dh] (the mix keeps them, for the mask's gradient); q, k, v as
      the score and pattern products read them, 3 x [C * H * n, T, dh]; the attention pattern
      [C * H * n, T, T]; the per-circuit projection matrices [C * 3H, d, dh] and W_O [C * H, dh, d];
    - per MLP: its input [C, n, T, d] and hidden pre-activation [C, n, T, d_mlp];
    - the final residual at the logits' positions [C, n, P, d].

        bytes ~= b * C * (n * T * (S' * d + L * (3H * d + 6H * dh + H * T + has_mlp * (d + d_mlp)))
                          + L * 4H * d * dh + n * P * d)

    plus small terms (norm statistics, 2 * 3H * n * T per layer) and, where the model has them:
    post-attention norms + H * n * T * d per layer (the heads' results), gated MLPs + 2 * n * T *
    d_mlp per MLP, q/k norms + the q/k projections before the norm, norms that upcast + a copy of
    their input. Measured (float32, 4 layers x 8 heads, d 128, dh 16, d_mlp 512, n 8, T 32): the
    formula gives 24.0 MiB per circuit; autograd's saved tensors were 24.2 MiB (C=1), 96.9 MiB (C=4),
    387 MiB (C=16); all live tensors peaked at 39 / 128 / 495 MiB over forward and backward.
    So a float pass holds about S' + 3HL rows of n * T * d per circuit (here 36 + 96), where the
    boolean pass, without autograd, holds S' + 3H at a time (and shares what circuits have in common).
    """
    spec, graph, baseline = patcher.spec, patcher.graph, patcher.baseline
    shape = graph.shape
    edges, head_inputs = mask.edges, mask.head_inputs
    if len(mask.circuit_shape) > 1:
        raise AcdcError(f"float_mask_logits takes at most one leading circuit axis, got masks {tuple(edges.shape)}")
    expected = (tuple(graph.edge_exists.shape), (shape.n_layers, shape.n_heads, 3))
    if (tuple(edges.shape[-2:]), tuple(head_inputs.shape[-3:])) != expected:
        raise AcdcError(
            f"masks of shapes {tuple(edges.shape)} and {tuple(head_inputs.shape)} do not fit this graph "
            f"([*C, {expected[0][0]}, {expected[0][1]}] and [*C, {shape.n_layers}, {shape.n_heads}, 3])"
        )
    squeeze = not mask.circuit_shape
    dtype, device = patcher.dtype, patcher.device
    edges = (edges[None] if squeeze else edges).to(device=device, dtype=dtype)
    head_inputs = (head_inputs[None] if squeeze else head_inputs).to(device=device, dtype=dtype)
    n_circuits = edges.shape[0]
    n_heads = shape.n_heads
    n_prompts, n_pos, d_model = baseline.sender_diff.shape[1:]
    n_input = len(graph.input_senders)

    # the senders' differences out_u - out*_u so far, as groups of consecutive senders: (first
    # sender, rows [k, n * T * d] alike in every circuit or [C, k, n * T * d] per circuit)
    groups: list[tuple[int, Tensor]] = [(0, baseline.sender_diff[:n_input].flatten(1))]

    def inputs(receivers: Tensor, read_at: int) -> Tensor:
        """in_v [C, R, n * T * d] of ``receivers`` [R] reading at ``read_at``."""
        n_before = baseline.senders_before[read_at]
        column = edges[:, :, receivers].transpose(1, 2)  # [C, R, n_senders]
        total = baseline.ablated_input[read_at].flatten()
        for first, rows in groups:
            if first >= n_before:
                break
            total = total + torch.matmul(column[:, :, first : first + rows.shape[-2]], rows)
        return total

    every_head = torch.arange(n_heads, device=device)
    every_qkv = torch.arange(3 * n_heads, device=device).repeat(n_circuits)
    for layer in range(shape.n_layers):
        read_at = shape.attention_reads(layer)
        x = inputs(patcher.groups.qkv[layer], read_at)  # [C, 3H, n * T * d]
        computed = spec.qkv_rows(layer, x.view(n_circuits * 3 * n_heads, n_prompts * n_pos, d_model), every_qkv)
        computed = computed.view(n_circuits, 3, n_heads, n_prompts, n_pos, -1)
        ablated = baseline.ablated.qkv[layer].permute(2, 3, 0, 1, 4)  # [3, H, n, T, dh]
        keep = head_inputs[:, layer].transpose(1, 2)[..., None, None, None]  # [C, 3, H, 1, 1, 1]
        qkv = keep * computed + (1 - keep) * ablated
        q, k, v = (t.reshape(n_circuits * n_heads, n_prompts, n_pos, -1) for t in qkv.unbind(1))
        results = spec.head_results(layer, q, k, v, every_head.repeat(n_circuits))  # [C * H, n, T, d]
        if spec.cfg.post_norms:
            per_layer = results.view(n_circuits, n_heads, n_prompts, n_pos, d_model)
            results = spec.attention_out(layer, per_layer.movedim(1, -2)).movedim(-2, 1)
        first = first_head_sender(graph, layer)
        out_star = baseline.ablated_out[first : first + n_heads]  # [H, n, T, d]
        diff = results.reshape(n_circuits, n_heads, n_prompts, n_pos, d_model) - out_star
        groups.append((first, diff.flatten(2)))
        if shape.has_mlp:
            x = inputs(patcher.groups.mlp[layer], shape.mlp_reads(layer))  # [C, 1, n * T * d]
            out = spec.mlp(layer, x.view(n_circuits, n_prompts, n_pos, d_model))
            sender = graph.sender_index[mlp_name(layer)]
            diff = out - baseline.ablated_out[sender]
            groups.append((sender, diff.flatten(1)[:, None]))
    final = inputs(patcher.groups.logits, shape.logits_read).view(n_circuits, n_prompts, n_pos, d_model)
    logits = spec.unembed(final[:, :, patcher.positions])
    return logits[0] if squeeze else logits
