"""The q/k/v step of a gradient pass, and the receivers' gradients it hands over in factors.

In a plain forward pass every q/k/v receiver of a layer reads the same residual stream x through the
same pre-norm, so ``watched_qkv`` computes the layer's projections as one product. Its backward pass
gets g_r = d metric / d (receiver r's projection), [tokens, d_head] per receiver, and takes each back
to the receiver's input: in_r's gradient is the norm's vector-Jacobian product at x (``NormBackward``)
of g_r @ W_r^T. Forming that densely costs several passes over [R, tokens, d_model]; in factors it is

    grad_r = scaled_r - centre_r * 1 - along_r * standardized,

where only ``scaled_r = rstd * weight * (g_r @ W_r^T)`` is [tokens, d_model] (one product, the
norm's scale folded into the weights) and centre_r, along_r [tokens] come from head-space products.
``EdgePatcher.edge_scores`` contracts ``scaled`` with the senders at once and the two rank-one terms
after the pass (``FactoredCorrections``); the node and neuron methods take ``dense``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from acdc_engine.architecture.attention import Attention
from acdc_engine.architecture.norm import Norm


@dataclass
class FactoredGradients:
    """d metric / d in_r for R receivers that read one residual stream [n_prompts, pos, d_model]
    through one norm: ``scaled - centre[..., None] - along[..., None] * standardized``.

    scaled: [R, n_prompts, pos, d_model] in the model's dtype.
    centre: [R, n_prompts, pos] in the norm's compute dtype; None where the norm does not centre.
    along: [R, n_prompts, pos], compute dtype; None (and no ``standardized``) without a norm.
    standardized: [n_prompts, pos, d_model], the norm's standardized input (``NormBackward``).
    """

    scaled: Tensor
    centre: Tensor | None
    along: Tensor | None
    standardized: Tensor | None

    @classmethod
    def of_dense(cls, gradients: Tensor) -> FactoredGradients:
        """Gradients given as they are, [R, n_prompts, pos, d_model]."""
        return cls(gradients, None, None, None)

    def dense(self) -> Tensor:
        """The gradients themselves, [n_prompts, pos, R, d_model] in the model's dtype."""
        if self.along is None:
            return self.scaled.movedim(0, 2)
        dense = self.scaled.to(self.along.dtype) - self.along[..., None] * self.standardized
        if self.centre is not None:
            dense = dense - self.centre[..., None]
        return dense.to(self.scaled.dtype).movedim(0, 2)

    def total(self) -> Tensor:
        """The sum over the receivers, [n_prompts, pos, d_model] in the model's dtype: the gradient
        the residual stream gets through the layer's q/k/v."""
        if self.along is None:
            return self.scaled.sum(0)
        total = self.scaled.sum(0, dtype=self.along.dtype) - self.along.sum(0)[..., None] * self.standardized
        if self.centre is not None:
            total = total - self.centre.sum(0)[..., None]
        return total.to(self.scaled.dtype)


Handover = Callable[[FactoredGradients], None]
"""Called in the backward pass with the input gradients of a layer's q/k/v receivers, in factors."""


class Scratch:
    """One tensor written again by every layer's backward step of a pass (the ``scaled`` factor), so
    that its memory is allocated once per pass, not once per layer: the gradients a ``Handover``
    gets are valid during the call only."""

    def __init__(self) -> None:
        self.tensor: Tensor | None = None

    def get(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialized tensor of ``shape`` with ``like``'s dtype and device."""
        t = self.tensor
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            self.tensor = t = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


def watched_qkv(attn: Attention, norm: Norm | None, resid: Tensor, watch: Handover, scratch: Scratch) -> Tensor:
    """The projections of every q/k/v receiver of ``attn``'s layer (3 n_heads, q block, k block, v
    block) reading resid [n_prompts, pos, d_model] through ``norm``, [3H, n_prompts * pos, d_head]
    (bias added, before q/k norms), as one product; in the backward pass their input gradients go
    to ``watch`` in factors (``scaled`` in ``scratch``)."""
    return _WatchedProjections.apply(resid, attn, norm, watch, scratch)


class _WatchedProjections(torch.autograd.Function):
    """``watched_qkv``: forward as one product; backward hands the factored gradients to ``watch``
    and gives the residual stream their sum."""

    @staticmethod
    def forward(
        ctx, resid: Tensor, attn: Attention, norm: Norm | None, watch: Handover, scratch: Scratch
    ) -> Tensor:
        normed = resid if norm is None else norm(resid)
        products = attn.shared_products(normed.reshape(-1, normed.shape[-1]))
        ctx.save_for_backward(resid, products)
        ctx.attn, ctx.norm, ctx.watch, ctx.scratch = attn, norm, watch, scratch
        return products + attn.every_receiver_weights()[1][:, None, :]

    @staticmethod
    def backward(ctx, grad: Tensor):
        resid, products = ctx.saved_tensors
        factored = factored_gradients(ctx.attn, ctx.norm, resid, products, grad, ctx.scratch)
        ctx.watch(factored)
        return factored.total(), None, None, None, None


def factored_gradients(
    attn: Attention, norm: Norm | None, x: Tensor, products: Tensor, grad: Tensor, scratch: Scratch
) -> FactoredGradients:
    """The input gradients of every q/k/v receiver of ``attn``'s layer (R = 3 n_heads) reading x
    [n_prompts, pos, d_model] through ``norm``, in factors, from grad [R, M, d_head] at their
    projections (M = n_prompts * pos) and their ``products`` [R, M, d_head] (normed x @ W_r, before
    bias); ``scaled`` is written in ``scratch``."""
    weights = attn.every_receiver_weights()[0]  # [R, d_model, d_head]
    lead, (n_receivers, width) = x.shape[:-1], (len(weights), x.shape[-1])
    out = scratch.get((n_receivers, grad.shape[1], width), x)
    if norm is None:
        scaled = torch.bmm(grad, weights.transpose(1, 2), out=out)
        return FactoredGradients(scaled.view(n_receivers, *lead, width), None, None, None)
    back = norm.backward_factors(x)
    dtype = torch.promote_types(x.dtype, back.rstd.dtype)  # float64 models keep float64 products
    grad = grad.to(dtype) * back.rstd.reshape(1, -1, 1)  # rstd folded in: [R, M, d_head]
    weighted = weights.to(grad.dtype) * back.weight[:, None]  # the norm's scale folded in
    scaled = torch.bmm(grad.to(x.dtype), weighted.to(x.dtype).transpose(1, 2), out=out)
    # standardized @ (weight * W_r) = (normed x - shift) @ W_r
    shifted = products.to(grad.dtype)
    if back.shift is not None:
        shifted = shifted - (back.shift @ weights.to(grad.dtype))[:, None, :]
    along = (grad * shifted).sum(-1) / width
    centre = None
    if back.centred:
        centre = torch.bmm(grad, weighted.sum(1)[:, :, None])[..., 0] / width
    view = (n_receivers, *lead)
    return FactoredGradients(
        scaled.view(*view, width), None if centre is None else centre.view(view), along.view(view), back.standardized
    )
