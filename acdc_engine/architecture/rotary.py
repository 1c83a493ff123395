"""Rotary position embeddings: cos/sin tables by position and their application to q and k.

A table is ``[n_ctx, rotary_dim]``, laid out like the dimensions it multiplies: for the "neox"
layout (rotate halves: dimension i pairs with i + rotary_dim/2) the per-frequency values are
repeated as two halves, for the "gptj" layout (rotate interleaved pairs: 2i pairs with 2i+1)
each value is repeated twice in place. Only each head's first ``rotary_dim`` dimensions rotate.
"""

from __future__ import annotations

import torch
from torch import Tensor


def default_tables(n_ctx: int, rotary_dim: int, base: float, layout: str) -> tuple[Tensor, Tensor]:
    """(cos, sin), each [n_ctx, rotary_dim] float32: the original RoPE with frequencies
    base^(-2i / rotary_dim), i = 0 .. rotary_dim/2 - 1."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    angles = torch.arange(n_ctx, dtype=torch.int64).float()[:, None] * inv_freq[None, :]
    return expand_half_table(angles.cos(), layout), expand_half_table(angles.sin(), layout)


def expand_half_table(half: Tensor, layout: str) -> Tensor:
    """A [n_ctx, rotary_dim/2] per-frequency table as the [n_ctx, rotary_dim] table for ``layout``."""
    if layout == "neox":
        return torch.cat([half, half], dim=-1)
    return torch.repeat_interleave(half, 2, dim=-1)


def rotate(x: Tensor, layout: str) -> Tensor:
    """The rotation's partner term: (-x2, x1) by halves (neox) or by interleaved pairs (gptj)."""
    if layout == "neox":
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, layout: str) -> Tensor:
    """x [batch, pos, heads, d_head] rotated by position 0..pos-1; cos, sin [>= pos, rotary_dim]."""
    n_pos, rotary_dim = x.shape[1], cos.shape[-1]
    cos = cos[:n_pos, None, :].to(x.dtype)
    sin = sin[:n_pos, None, :].to(x.dtype)
    turned, kept = x[..., :rotary_dim], x[..., rotary_dim:]
    turned = turned * cos + rotate(turned, layout) * sin
    return torch.cat([turned, kept], dim=-1) if kept.shape[-1] else turned
