"""One layer's attention, split at its receivers: q/k/v per query head, then heads' results.

Weights in TransformerLens layout: ``W_Q`` [n_heads, d_model, d_head], ``W_K`` and ``W_V``
[n_key_value_heads, d_model, d_head], their biases [heads, d_head], ``W_O`` [n_heads, d_head,
d_model], ``b_O`` [d_model]. Query head h reads key/value head ``h // n_groups``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.norm import Norm, compute_dtype
from acdc_engine.architecture.rotary import apply_rotary


def _weight(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape), requires_grad=False)


def head_slice(x: Tensor, head: int) -> Tensor:
    """x[:, :, head] [b, pos, d] of x [b, pos, H, d], contiguous."""
    return x[:, :, head].contiguous()


def per_head(product: Callable[[int], Tensor], n_heads: int, dim: int) -> Tensor:
    """``product(i)`` for each head i, stacked on ``dim``: each head's products run alone, on
    contiguous slices, so a head's values do not depend on how many heads (or circuits) are
    computed beside it (one batched product over heads sums differently per head count on some CPUs)."""
    return torch.stack([product(i) for i in range(n_heads)], dim)


class Attention(nn.Module):
    """Layer ``layer``'s attention weights, q/k norms and hook points (the rotary tables are the
    ModelSpec's, shared between layers)."""

    def __init__(self, cfg: ArchitectureConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        h, kv, d, m = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model
        self.W_Q, self.b_Q = _weight(h, m, d), _weight(h, d)
        self.W_K, self.b_K = _weight(kv, m, d), _weight(kv, d)
        self.W_V, self.b_V = _weight(kv, m, d), _weight(kv, d)
        self.W_O, self.b_O = _weight(h, d, m), _weight(m)
        self.q_norm = self.k_norm = None
        if cfg.qk_norm is not None:
            full = cfg.qk_norm == "full"
            self.q_norm = Norm("RMS", h * d if full else d, cfg.norm_eps, cfg.norm_offset, cfg.upcast)
            self.k_norm = Norm("RMS", kv * d if full else d, cfg.norm_eps, cfg.norm_offset, cfg.upcast)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_result = HookPoint()
        self.hook_pattern = HookPoint()  # [batch, H', query pos, key pos], for the heads computed

    def receiver_weights(self, receivers: Tensor) -> tuple[Tensor, Tensor]:
        """(W [R, d_model, d_head], b [R, d_head]): the projections of ``receivers`` [R] (q rows
        read W_Q[h], k and v rows their key/value head's W_K / W_V)."""
        n_heads, n_kv = self.cfg.n_heads, self.cfg.n_key_value_heads
        kind, head = receivers // n_heads, receivers % n_heads
        row = torch.where(kind == 0, head, n_heads + (kind - 1) * n_kv + head // self.cfg.n_groups)
        weights = torch.cat([self.W_Q, self.W_K, self.W_V])[row]
        biases = torch.cat([self.b_Q, self.b_K, self.b_V])[row]
        return weights, biases

    def qkv(self, x: Tensor, receivers: Tensor) -> Tensor:
        """Receivers' q/k/v from their normed inputs x [..., R, d_model] -> [..., R, d_head].

        With ``qk_norm="head"`` q and k rows are RMS-normed over d_head. With ``qk_norm="full"``
        a q receiver's value is head h's slice of the norm of the full q projection (all query
        heads) of that receiver's own input; a k receiver's likewise over all key/value heads.
        """
        weights, biases = self.receiver_weights(receivers)
        out = torch.einsum("...rm,rmd->...rd", x, weights) + biases
        if self.cfg.qk_norm is None:
            return out
        kind = receivers // self.cfg.n_heads
        head = receivers % self.cfg.n_heads
        for which, norm, W, b, heads_of in (
            (0, self.q_norm, self.W_Q, self.b_Q, head),
            (1, self.k_norm, self.W_K, self.b_K, head // self.cfg.n_groups),
        ):
            rows = (kind == which).nonzero().flatten()
            if not len(rows):
                continue
            if self.cfg.qk_norm == "head":
                normed = norm(out.index_select(-2, rows))
            else:
                inputs = x.index_select(-2, rows)
                full = torch.einsum("...rm,hmd->...rhd", inputs, W) + b
                full = norm(full.flatten(-2)).unflatten(-1, (W.shape[0], W.shape[2]))
                normed = full[..., torch.arange(len(rows), device=rows.device), heads_of[rows], :]
            out = out.index_copy(-2, rows, normed)
        return out

    def heads(
        self, q: Tensor, k: Tensor, v: Tensor, heads: Tensor, cos: Tensor | None = None, sin: Tensor | None = None
    ) -> Tensor:
        """Per-head results z_h @ W_O[h], [..., pos, H', d_model], of the query heads ``heads``
        [H'] from their q, k, v [..., pos, H', d_head] (k and v given per query head).

        Rotary by the tables cos, sin [>= pos, rotary_dim] (positions 0..pos-1) on q and k, scores / attn_scale, soft-cap, causal mask with
        the layer's sliding window, softmax in the compute dtype (see ``ArchitectureConfig.upcast``)
        cast back to q's dtype.
        """
        cfg = self.cfg
        lead = q.shape[:-3]
        q, k, v = (t.reshape(-1, *t.shape[-3:]) for t in (q, k, v))
        if cos is not None:
            q = apply_rotary(q, cos, sin, cfg.rotary_layout)
            k = apply_rotary(k, cos, sin, cfg.rotary_layout)
        scores = per_head(lambda i: torch.bmm(head_slice(q, i), head_slice(k, i).transpose(1, 2)), q.shape[2], 1)
        scores = scores / cfg.attn_scale  # [b, H', q, k]
        if cfg.attn_softcap is not None:
            scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        scores = scores.masked_fill(~self.visible(q.shape[1], q.device), torch.finfo(scores.dtype).min)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1, dtype=compute_dtype(scores.dtype, cfg.upcast)).to(q.dtype))
        z = per_head(lambda i: torch.bmm(pattern[:, i].contiguous(), head_slice(v, i)), q.shape[2], 2)  # [b, q, H', d_head]
        w_o = self.W_O[heads]
        result = per_head(lambda i: torch.matmul(head_slice(z, i), w_o[i]), q.shape[2], 2)  # [b, q, H', d_model]
        return result.reshape(*lead, *result.shape[1:])

    def visible(self, n_pos: int, device: torch.device | str) -> Tensor:
        """[n_pos, n_pos] bool: key j is visible to query i iff j <= i (and i - window < j);
        every key is visible under bidirectional attention."""
        if self.cfg.attention_dir == "bidirectional":
            return torch.ones(n_pos, n_pos, dtype=torch.bool, device=device)
        i = torch.arange(n_pos, device=device)[:, None]
        j = torch.arange(n_pos, device=device)[None, :]
        window = self.cfg.sliding_window[self.layer]
        return (j <= i) if window is None else (j <= i) & (j > i - window)
