"""LayerNorm and RMSNorm over the last dimension, applied as Hugging Face applies them.

Both compute in at least float32 (``torch.promote_types(x.dtype, float32)``: bfloat16 and float16
inputs are upcast, float64 stays float64) and cast the result back to the input's dtype. RMSNorm's
scale is ``offset + w`` (``offset`` 1.0 for Gemma's norms, else 0.0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms and softmax compute in for inputs of ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32)


class Norm(nn.Module):
    """A LayerNorm ("LN": weight ``w`` and bias ``b``) or RMSNorm ("RMS": weight ``w``) over ``width``."""

    def __init__(self, kind: str, width: int, eps: float, offset: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        self.eps = eps
        self.offset = offset
        self.w = nn.Parameter(torch.ones(width) - offset, requires_grad=False)
        if kind == "LN":
            self.b = nn.Parameter(torch.zeros(width), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., width] -> [..., width], same dtype."""
        if self.kind == "LN":
            y = x.to(compute_dtype(x.dtype))
            return F.layer_norm(y, (y.shape[-1],), self.w.to(y.dtype), self.b.to(y.dtype), self.eps).to(x.dtype)
        return self.scaled(x, self.inverse_rms(x))

    def inverse_rms(self, x: Tensor) -> Tensor:
        """1 / sqrt(mean(x^2) + eps) over the last dimension, [..., 1], in the compute dtype."""
        y = x.to(compute_dtype(x.dtype))
        return torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)

    def scaled(self, x: Tensor, inverse_rms: Tensor) -> Tensor:
        """(offset + w) * x * inverse_rms, cast back to x's dtype: RMSNorm with a given scale."""
        y = x.to(inverse_rms.dtype) * inverse_rms
        return (y * (self.offset + self.w.to(y.dtype))).to(x.dtype)
