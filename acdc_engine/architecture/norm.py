"""LayerNorm and RMSNorm over the last dimension, applied as Hugging Face applies them.

Both compute their statistics in ``compute_dtype``: with ``upcast="promote"`` at least float32
(bfloat16 and float16 inputs are upcast, float64 stays float64), with ``upcast="float32"`` always
float32 (Hugging Face's RMSNorms, which cast float64 inputs down too), and return the input's dtype.
RMSNorm's scale is ``offset + w``: Gemma's (offset 1.0) multiplies in the compute dtype, the others
(offset 0.0) multiply the normalised input, cast back, by ``w``, as Hugging Face's Llama-style norms do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def compute_dtype(dtype: torch.dtype, upcast: str = "promote") -> torch.dtype:
    """The dtype norms and softmax compute in for inputs of ``dtype``: at least float32
    (``upcast="promote"``) or exactly float32 (``upcast="float32"``)."""
    return torch.float32 if upcast == "float32" else torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class NormBackward:
    """A norm's vector-Jacobian product at one input x [..., width]: an output gradient u [..., width]
    goes back to ``rstd * (weight * u - mean(weight * u) - standardized * mean(weight * u * standardized))``,
    the middle term only where the norm centres (LayerNorm; RMSNorm does not). Means are over width.
    The norm's output is ``weight * standardized + shift``.

    rstd: [..., 1], 1 / sqrt(var + eps) (LayerNorm) or 1 / sqrt(mean(x^2) + eps) (RMSNorm).
    standardized: [..., width], (x - mean) * rstd or x * rstd.
    weight: [width], the scale the norm applies (RMSNorm's offset included).
    shift: [width], LayerNorm's bias; None for RMSNorm.
    """

    rstd: Tensor
    standardized: Tensor
    weight: Tensor
    shift: Tensor | None

    @property
    def centred(self) -> bool:
        return self.shift is not None

    def vjp(self, u: Tensor) -> Tensor:
        """u [K, ..., width] (K output gradients) -> [K, ..., width] at the input, in the factors' dtype."""
        scaled = u.to(self.rstd.dtype) * self.weight
        along = (scaled * self.standardized).mean(-1, keepdim=True)
        centred = scaled - scaled.mean(-1, keepdim=True) if self.centred else scaled
        return self.rstd * (centred - self.standardized * along)


class Norm(nn.Module):
    """A LayerNorm ("LN": weight ``w`` and bias ``b``) or RMSNorm ("RMS": weight ``w``) over ``width``."""

    def __init__(self, kind: str, width: int, eps: float, offset: float = 0.0, upcast: str = "promote") -> None:
        super().__init__()
        self.kind = kind
        self.upcast = upcast
        self.eps = eps
        self.offset = offset
        self.w = nn.Parameter(torch.ones(width) - offset, requires_grad=False)
        if kind == "LN":
            self.b = nn.Parameter(torch.zeros(width), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., width] -> [..., width], same dtype."""
        if self.kind == "LN":
            if x.dtype == self.w.dtype and x.dtype in (torch.float32, torch.float64):  # computed in x's dtype as it is
                return torch.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
            y = x.to(compute_dtype(x.dtype))  # nn.LayerNorm's own rule, whatever ``upcast`` says
            return F.layer_norm(y, (y.shape[-1],), self.w.to(y.dtype), self.b.to(y.dtype), self.eps).to(x.dtype)
        return self.scaled(x, self.inverse_rms(x))

    def input_gradients(self, x: Tensor, grads: Tensor) -> Tensor:
        """Gradients at the output of this norm applied to x [..., width], K of them (grads
        [K, ..., width]), taken back to its input: the K vector-Jacobian products at x, [K, ...,
        width] in x's dtype, computed in the norm's compute dtype. The statistics of x are computed
        once for all K (the gradient pass gives every receiver of a layer its own gradient this way)."""
        if self.kind == "LN":
            y = x.to(compute_dtype(x.dtype))
            if grads.dtype == y.dtype:  # torch's fused backward, given the statistics of x once
                width, weight, bias = (y.shape[-1],), self.w.to(y.dtype), self.b.to(y.dtype)
                _, mean, rstd = torch.ops.aten.native_layer_norm(y, width, weight, bias, self.eps)
                stats = (len(grads), *y.shape[:-1], 1)  # the kernel reads them as contiguous
                mean, rstd = mean.expand(stats).contiguous(), rstd.expand(stats).contiguous()
                at_input, _, _ = torch.ops.aten.native_layer_norm_backward(
                    grads, y.expand(len(grads), *y.shape), width, mean, rstd, weight, bias, [True, False, False]
                )
                return at_input.to(x.dtype)
        return self.backward_factors(x).vjp(grads).to(x.dtype)

    def backward_factors(self, x: Tensor) -> NormBackward:
        """This norm's vector-Jacobian product at x [..., width], in factors (``NormBackward``), in
        the norm's compute dtype: the statistics of x once for any number of output gradients."""
        if self.kind == "LN":
            y = x.to(compute_dtype(x.dtype))
            _, mean, rstd = torch.ops.aten.native_layer_norm(y, (y.shape[-1],), self.w.to(y.dtype), self.b.to(y.dtype), self.eps)
            return NormBackward(rstd, (y - mean) * rstd, self.w.to(y.dtype), self.b.to(y.dtype))
        inverse_rms = self.inverse_rms(x)
        weight = self.offset + self.w.to(inverse_rms.dtype)
        return NormBackward(inverse_rms, x.to(inverse_rms.dtype) * inverse_rms, weight, None)

    def inverse_rms(self, x: Tensor) -> Tensor:
        """1 / sqrt(mean(x^2) + eps) over the last dimension, [..., 1], in the compute dtype."""
        y = x.to(compute_dtype(x.dtype, self.upcast))
        return torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)

    def scaled(self, x: Tensor, inverse_rms: Tensor) -> Tensor:
        """(offset + w) * x * inverse_rms, cast back to x's dtype: RMSNorm with a given scale."""
        y = x.to(inverse_rms.dtype) * inverse_rms
        if self.offset == 0.0:
            return y.to(x.dtype) * self.w
        return (y * (self.offset + self.w.to(y.dtype))).to(x.dtype)
