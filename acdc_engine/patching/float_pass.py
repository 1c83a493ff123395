"""The differentiable patched pass: circuits with masks in [0, 1].

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

**Memory.** Autograd keeps, for the backward pass, with C circuits, n prompts, T positions, L layers,
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
their input (docs/design.md gives a measured case).
So a float pass holds about S' + 3HL rows of n * T * d per circuit, where the
boolean pass, without autograd, holds S' + 3H at a time (and shares what circuits have in common).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import mlp_name
from acdc_engine.core.mask import CircuitMask
from acdc_engine.patching.baseline import first_head_sender
from acdc_engine.patching.positions import select_positions

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
        Memory: the module docstring.
    """
    _check_shapes(patcher, mask)
    squeeze = not mask.circuit_shape
    run = _FloatRun(patcher, mask.map(lambda t: t[None]) if squeeze else mask)
    for layer in range(patcher.graph.shape.n_layers):
        run.attention_layer(layer)
        if patcher.graph.shape.has_mlp:
            run.mlp_layer(layer)
    logits = run.logits()
    return logits[0] if squeeze else logits


def _check_shapes(patcher: EdgePatcher, mask: CircuitMask) -> None:
    """AcdcError unless ``mask`` fits the patcher's graph with at most one circuit axis."""
    graph, shape = patcher.graph, patcher.graph.shape
    if len(mask.circuit_shape) > 1:
        raise AcdcError(f"float_mask_logits takes at most one leading circuit axis, got masks {tuple(mask.edges.shape)}")
    expected = (tuple(graph.edge_exists.shape), (shape.n_layers, shape.n_heads, 3))
    if (tuple(mask.edges.shape[-2:]), tuple(mask.head_inputs.shape[-3:])) != expected:
        raise AcdcError(
            f"masks of shapes {tuple(mask.edges.shape)} and {tuple(mask.head_inputs.shape)} do not fit this graph "
            f"([*C, {expected[0][0]}, {expected[0][1]}] and [*C, {shape.n_layers}, {shape.n_heads}, 3])"
        )


class _FloatRun:
    """One float-masked pass over C circuits (masks [C, ...] in the model's dtype), layer by layer.

    ``groups`` holds the senders' differences out_u - out*_u computed so far, as groups of
    consecutive senders: (first sender, rows [k, n * T * d] alike in every circuit, or
    [C, k, n * T * d] per circuit)."""

    def __init__(self, patcher: EdgePatcher, mask: CircuitMask) -> None:
        self.patcher, self.spec, self.graph, self.baseline = patcher, patcher.spec, patcher.graph, patcher.baseline
        self.edges = mask.edges.to(device=patcher.device, dtype=patcher.dtype)
        self.head_inputs = mask.head_inputs.to(device=patcher.device, dtype=patcher.dtype)
        self.n_circuits = self.edges.shape[0]
        self.n_prompts, self.n_pos, self.d_model = self.baseline.sender_diff.shape[1:]
        n_input = len(self.graph.input_senders)
        self.groups: list[tuple[int, Tensor]] = [(0, self.baseline.sender_diff[:n_input].flatten(1))]

    def inputs(self, receivers: Tensor, read_at: int) -> Tensor:
        """in_v [C, R, n * T * d] of ``receivers`` [R] reading at ``read_at``."""
        n_before = self.baseline.senders_before[read_at]
        column = self.edges[:, :, receivers].transpose(1, 2)  # [C, R, n_senders]
        total = self.baseline.ablated_input[read_at].flatten()
        for first, rows in self.groups:
            if first >= n_before:
                break
            total = total + torch.matmul(column[:, :, first : first + rows.shape[-2]], rows)
        return total

    def attention_layer(self, layer: int) -> None:
        """Layer ``layer``'s heads: q/k/v from their receivers' inputs, mixed with the ablated ones
        by the head-input masks; their differences from the ablated outputs join ``groups``."""
        spec, baseline, C = self.spec, self.baseline, self.n_circuits
        n_heads, n, T, d = self.graph.shape.n_heads, self.n_prompts, self.n_pos, self.d_model
        x = self.inputs(self.patcher.groups.qkv[layer], self.graph.shape.attention_reads(layer))  # [C, 3H, n * T * d]
        every_qkv = torch.arange(3 * n_heads, device=x.device).repeat(C)
        computed = spec.qkv_rows(layer, x.view(C * 3 * n_heads, n * T, d), every_qkv).view(C, 3, n_heads, n, T, -1)
        ablated = baseline.ablated.qkv[layer].permute(2, 3, 0, 1, 4)  # [3, H, n, T, dh]
        keep = self.head_inputs[:, layer].transpose(1, 2)[..., None, None, None]  # [C, 3, H, 1, 1, 1]
        qkv = keep * computed + (1 - keep) * ablated
        q, k, v = (t.reshape(C * n_heads, n, T, -1) for t in qkv.unbind(1))
        results = spec.head_results(layer, q, k, v, torch.arange(n_heads, device=x.device).repeat(C))  # [C * H, n, T, d]
        if spec.cfg.post_norms:
            per_layer = results.view(C, n_heads, n, T, d)
            results = spec.attention_out(layer, per_layer.movedim(1, -2)).movedim(-2, 1)
        first = first_head_sender(self.graph, layer)
        diff = results.reshape(C, n_heads, n, T, d) - baseline.ablated_out[first : first + n_heads]
        self.groups.append((first, diff.flatten(2)))

    def mlp_layer(self, layer: int) -> None:
        """Layer ``layer``'s MLP on its receiver's input; its difference from the ablated output joins ``groups``."""
        x = self.inputs(self.patcher.groups.mlp[layer], self.graph.shape.mlp_reads(layer))  # [C, 1, n * T * d]
        out = self.spec.mlp(layer, x.view(self.n_circuits, self.n_prompts, self.n_pos, self.d_model))
        sender = self.graph.sender_index[mlp_name(layer)]
        self.groups.append((sender, (out - self.baseline.ablated_out[sender]).flatten(1)[:, None]))

    def logits(self) -> Tensor:
        """[C, n, P, d_vocab]: the final residual at the patcher's positions, unembedded."""
        final = self.inputs(self.patcher.groups.logits, self.graph.shape.logits_read)
        final = final.view(self.n_circuits, self.n_prompts, self.n_pos, self.d_model)
        return self.spec.unembed(select_positions(final, self.patcher.positions))
