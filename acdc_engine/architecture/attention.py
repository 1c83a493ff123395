"""One layer's attention, split at its receivers: q/k/v per query head, then heads' results.

Weights in TransformerLens layout: ``W_Q`` [n_heads, d_model, d_head], ``W_K`` and ``W_V``
[n_key_value_heads, d_model, d_head], their biases [heads, d_head], ``W_O`` [n_heads, d_head,
d_model], ``b_O`` [d_model]. Query head h reads key/value head ``h // n_groups``.

The products are batched matrix products (``batch_matmul``) over contiguous operands whose
per-matrix shape never depends on how many receivers, heads or circuits are computed together: one
matrix per receiver (q/k/v: its input rows times its projection) and per head instance and prompt
(scores, pattern times values), one per head instance (times ``W_O``). BLAS computes each matrix of
a batch of two or more alike, so a value's float bits do not depend on its batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.norm import Norm, compute_dtype
from acdc_engine.architecture.rotary import apply_rotary


def batch_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm(a, b)``, a lone matrix computed beside a copy of itself: with more than one
    thread BLAS sums a batch of one matrix differently from the same matrix in a batch of two or
    more (measured on an AMD EPYC, small matrices, 2 threads), and every batch of two or more alike."""
    if a.shape[0] == 1:
        return torch.bmm(torch.cat([a, a]), b.expand(2, *b.shape[1:]))[:1]
    return torch.bmm(a, b)


SHORT_KEY_ROW = 16
"""float32 score rows shorter than this are softmaxed padded to this length on the CPU
(``key_softmax``): torch's CPU kernel takes a scalar path, about ten times slower, for float32 rows
shorter than its vector width (16 lanes under AVX-512)."""


def key_softmax(scores: Tensor, dtype: torch.dtype) -> Tensor:
    """Softmax of ``scores`` [..., keys] over the keys, computed in ``dtype``. On the CPU a float32
    row (of a float32 model) shorter than ``SHORT_KEY_ROW`` is computed padded to that length with
    the masked score (the dtype's lowest), whose exp is an exact zero: the same probabilities up to
    rounding (the padded kernel sums the row in another order), the same for a row whatever the
    batch. A float64 model's softmax, even one computed in float32, is left as the model has it."""
    n_keys = scores.shape[-1]
    if scores.dtype != torch.float32 or dtype != torch.float32 or n_keys >= SHORT_KEY_ROW or scores.device.type != "cpu":
        return torch.softmax(scores, dim=-1, dtype=dtype)
    padded = scores.new_full((*scores.shape[:-1], SHORT_KEY_ROW), torch.finfo(scores.dtype).min)
    padded[..., :n_keys] = scores
    return torch.softmax(padded, dim=-1, dtype=dtype)[..., :n_keys]


def _weight(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape), requires_grad=False)


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
        self.hook_q = HookPoint()  # [batch, pos, n_heads, d_head]: per query head (a k or v of a GQA head's group repeats it)
        self.hook_k = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_v = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_result = HookPoint()  # [batch, pos, n_heads, d_model]: each head's z_h @ W_O[h]
        self.hook_pattern = HookPoint()  # [batch, H', query pos, key pos], for the heads computed
        self._hidden: dict[tuple[int, str], Tensor] = {}
        self._stacked: tuple | None = None  # ``stacked_weights``' cache

    def receiver_weights(self, receivers: Tensor) -> tuple[Tensor, Tensor]:
        """(W [R, d_model, d_head], b [R, d_head]): the projections of ``receivers`` [R] (q rows
        read W_Q[h], k and v rows their key/value head's W_K / W_V)."""
        weights, biases, row_of = self.stacked_weights()
        row = row_of.index_select(0, receivers)
        return weights.index_select(0, row), biases.index_select(0, row)

    def every_receiver_weights(self) -> tuple[Tensor, Tensor]:
        """``receiver_weights`` of every q/k/v receiver of the layer in order ([3 n_heads, d_model,
        d_head], [3 n_heads, d_head]): the stacked weights themselves where no head shares its
        key/value head."""
        weights, biases, row_of = self.stacked_weights()
        if len(weights) == len(row_of):
            return weights, biases
        return weights.index_select(0, row_of), biases.index_select(0, row_of)

    def stacked_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W_Q, W_K, W_V stacked [n_heads + 2 n_kv, d_model, d_head], their biases, the row of each
        receiver [3 n_heads]), made again only when a weight has changed (moved or written)."""
        params = (self.W_Q, self.W_K, self.W_V, self.b_Q, self.b_K, self.b_V)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._stacked is None or self._stacked[0] != key:
            n_heads, n_kv = self.cfg.n_heads, self.cfg.n_key_value_heads
            receivers = torch.arange(3 * n_heads, device=self.W_Q.device)
            kind, head = receivers // n_heads, receivers % n_heads
            row_of = torch.where(kind == 0, head, n_heads + (kind - 1) * n_kv + head // self.cfg.n_groups)
            stacked = (torch.cat([self.W_Q, self.W_K, self.W_V]), torch.cat([self.b_Q, self.b_K, self.b_V]), row_of)
            self._stacked = (key, stacked)
        return self._stacked[1]

    def qkv(self, x: Tensor, receivers: Tensor) -> Tensor:
        """Receivers' q/k/v from their normed inputs x [..., R, d_model] -> [..., R, d_head]
        (``qkv_rows`` on receiver-major rows)."""
        rows = x.movedim(-2, 0)
        out = self.qkv_rows(rows.reshape(rows.shape[0], -1, rows.shape[-1]), receivers)
        return out.view(*rows.shape[:-1], -1).movedim(0, -2)

    def qkv_rows(self, x: Tensor, receivers: Tensor) -> Tensor:
        """Receivers' q/k/v from their normed inputs, receiver-major: x [R, M, d_model] (row block r
        is receiver ``receivers[r]``'s input at M token positions) -> [R, M, d_head].

        With ``qk_norm="head"`` q and k rows are RMS-normed over d_head. With ``qk_norm="full"``
        a q receiver's value is head h's slice of the norm of the full q projection (all query
        heads) of that receiver's own input; a k receiver's likewise over all key/value heads.
        """
        weights, biases = self.receiver_weights(receivers)
        return self.qk_normed(batch_matmul(x, weights).add_(biases[:, None, :]), x, receivers)

    def shared_products(self, x: Tensor) -> Tensor:
        """x @ W_r for every q/k/v receiver of the layer (``every_receiver_weights``' order) reading
        one normed input x [M, d_model]: [3 n_heads, M, d_head], before bias and q/k norm; one
        product of x with every stacked projection (a key/value head's computed once for its
        group). Equal to ``qkv_rows``' products up to rounding."""
        weights, _, row_of = self.stacked_weights()
        n_rows, d_model, d_head = weights.shape
        every = (x @ weights.permute(1, 0, 2).reshape(d_model, n_rows * d_head)).view(-1, n_rows, d_head)
        return (every if n_rows == len(row_of) else every.index_select(1, row_of)).transpose(0, 1)

    def qk_normed(self, out: Tensor, x: Tensor | None, receivers: Tensor) -> Tensor:
        """Receivers' projections out [R, M, d_head] (bias added) through the q/k norms the model
        has (``qkv_rows``); x [R, M, d_model], their normed inputs, is read with ``qk_norm="full"`` only."""
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
                normed = norm(out.index_select(0, rows))
            else:
                inputs = x.index_select(0, rows)  # [R', M, d_model]
                n_out, d_head = W.shape[0], W.shape[2]
                full_w = W.permute(1, 0, 2).reshape(W.shape[1], n_out * d_head)
                full = batch_matmul(inputs, full_w.expand(len(rows), -1, -1)) + b.flatten()
                full = norm(full).unflatten(-1, (n_out, d_head))
                normed = full[torch.arange(len(rows), device=rows.device), :, heads_of[rows], :]
            out = out.index_copy(0, rows, normed)
        return out

    def heads(
        self, q: Tensor, k: Tensor, v: Tensor, heads: Tensor, cos: Tensor | None = None, sin: Tensor | None = None
    ) -> Tensor:
        """Per-head results z_h @ W_O[h], [..., pos, H', d_model], of the query heads ``heads``
        [H'] from their q, k, v [..., pos, H', d_head] (k and v given per query head); ``results``
        on head-major copies, with ``hook_pattern`` [batch, H', query pos, key pos]."""
        lead, n_pos = q.shape[:-3], q.shape[-3]

        def head_major(t: Tensor) -> Tensor:  # [..., pos, H', d] -> [H', batch, pos, d]
            return t.reshape(-1, n_pos, *t.shape[-2:]).permute(2, 0, 1, 3).contiguous()

        result = self.results(head_major(q), head_major(k), head_major(v), heads, cos, sin, self._pattern_hook)
        return result.permute(1, 2, 0, 3).reshape(*lead, n_pos, len(heads), -1)

    def results(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        heads: Tensor,
        cos: Tensor | None = None,
        sin: Tensor | None = None,
        pattern_hook: Callable[[Tensor], Tensor] | None = None,
        query_positions: Tensor | None = None,
    ) -> Tensor:
        """Results z_i @ W_O[heads[i]] [I, b, q, d_model] of I head instances from their q [I, b,
        q, d_head], k, v [I, b, pos, d_head] (instance i is query head ``heads[i]`` over b prompts;
        k and v given per instance); ``mixed_values`` gives z."""
        z = self.mixed_values(q, k, v, cos, sin, pattern_hook, query_positions)
        n_instances, n_prompts, n_queries = z.shape[:3]
        result = batch_matmul(z.view(n_instances, n_prompts * n_queries, -1), self.W_O.index_select(0, heads))
        return result.view(n_instances, n_prompts, n_queries, -1)

    def summed_results(
        self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor | None = None, sin: Tensor | None = None
    ) -> Tensor:
        """The sum over every query head of its result z_h @ W_O[h], [batch, pos, d_model], from
        q, k, v [batch, pos, n_heads, d_head] (k and v given per query head), as one product of all
        heads' z with W_O; equal to ``heads`` summed up to rounding."""
        n_prompts, n_pos, n_heads, d_head = q.shape

        def head_major(t: Tensor) -> Tensor:  # [batch, pos, H, d] -> [H, batch, pos, d]
            return t.permute(2, 0, 1, 3).contiguous()

        z = self.mixed_values(head_major(q), head_major(k), head_major(v), cos, sin, self._pattern_hook)
        every_z = z.permute(1, 2, 0, 3).reshape(n_prompts, n_pos, n_heads * d_head)
        return every_z @ self.W_O.reshape(n_heads * d_head, -1)

    def _pattern_hook(self, pattern: Tensor) -> Tensor:
        """``hook_pattern`` on a head-major pattern [H', b, q, k] (the hook sees [b, H', q, k])."""
        return self.hook_pattern(pattern.transpose(0, 1)).transpose(0, 1)

    def mixed_values(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cos: Tensor | None = None,
        sin: Tensor | None = None,
        pattern_hook: Callable[[Tensor], Tensor] | None = None,
        query_positions: Tensor | None = None,
    ) -> Tensor:
        """The heads' mixed values z [I, b, q, d_head] (pattern times values) of I head instances
        from their q [I, b, q, d_head], k, v [I, b, pos, d_head] (over b prompts; k and v given
        per instance). The queries are at positions 0..pos-1 (q = pos), or at ``query_positions`` [q].

        Rotary by the tables cos, sin [>= pos, rotary_dim] on q and k, scores / attn_scale,
        soft-cap, causal mask with the layer's sliding window, softmax in the compute dtype (see
        ``ArchitectureConfig.upcast``) cast back to q's dtype, ``pattern_hook`` on the pattern
        [I, b, q, pos].
        """
        cfg = self.cfg
        n_instances, n_prompts, n_pos = k.shape[:3]
        n_queries = q.shape[2]
        q, k, v = (t.reshape(n_instances * n_prompts, t.shape[2], -1) for t in (q, k, v))
        if cos is not None:
            q_cos, q_sin = (cos, sin) if query_positions is None else (cos[query_positions], sin[query_positions])
            q = apply_rotary(q[:, :, None], q_cos, q_sin, cfg.rotary_layout)[:, :, 0]
            k = apply_rotary(k[:, :, None], cos, sin, cfg.rotary_layout)[:, :, 0]
        scores = batch_matmul(q.contiguous(), k.contiguous().transpose(1, 2))
        scores = scores.div_(cfg.attn_scale)  # [I * b, q, pos]
        if cfg.attn_softcap is not None:
            scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        hidden = self.hidden(n_pos, q.device)
        scores = scores.masked_fill_(hidden if query_positions is None else hidden[query_positions], torch.finfo(scores.dtype).min)
        pattern = key_softmax(scores, compute_dtype(scores.dtype, cfg.upcast)).to(q.dtype)
        if pattern_hook is not None:
            pattern = pattern_hook(pattern.view(n_instances, n_prompts, n_queries, n_pos)).reshape(-1, n_queries, n_pos)
        z = batch_matmul(pattern.contiguous(), v.contiguous())  # [I * b, q, d_head]
        return z.view(n_instances, n_prompts, n_queries, -1)

    def hidden(self, n_pos: int, device: torch.device | str) -> Tensor:
        """``~visible``, kept per (n_pos, device): the masked-out score positions."""
        key = (n_pos, str(device))
        if key not in self._hidden:
            self._hidden[key] = ~self.visible(n_pos, device)
        return self._hidden[key]

    def visible(self, n_pos: int, device: torch.device | str) -> Tensor:
        """[n_pos, n_pos] bool: key j is visible to query i iff j <= i (and i - window < j);
        every key is visible under bidirectional attention."""
        if self.cfg.attention_dir == "bidirectional":
            return torch.ones(n_pos, n_pos, dtype=torch.bool, device=device)
        i = torch.arange(n_pos, device=device)[:, None]
        j = torch.arange(n_pos, device=device)[None, :]
        window = self.cfg.sliding_window[self.layer]
        return (j <= i) if window is None else (j <= i) & (j > i - window)
