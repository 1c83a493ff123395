"""``ModelSpec``: one architecture-neutral description of a decoder-only transformer.

Weights are held in TransformerLens layout, unprocessed (norms are applied as the model applies
them: no folding, no centring). The methods split the forward pass at the places the
edge-patching engine needs: embeddings, each receiver's q/k/v, the heads, each head's
contribution to the residual stream, the MLPs and the unembedding. ``forward`` composes them
into a plain pass with TransformerLens-style hook points.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from acdc_engine.architecture.attention import Attention
from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.embed import Embed, PosEmbed
from acdc_engine.architecture.mlp import MLP
from acdc_engine.architecture.norm import Norm
from acdc_engine.architecture.rotary import default_tables
from acdc_engine.architecture.unembed import Unembed
from acdc_engine.core.errors import AcdcError

MAX_ROTARY_POSITIONS = 8192


class Block(nn.Module):
    """Layer L's modules: norms (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``; None where the
    model has none), ``attn``, ``mlp`` (None for attention-only models) and hook points."""

    def __init__(self, cfg: ArchitectureConfig, layer: int) -> None:
        super().__init__()

        def norm() -> Norm | None:
            kind = cfg.normalization_type
            return None if kind is None else Norm(kind, cfg.d_model, cfg.norm_eps, cfg.norm_offset, cfg.upcast)

        has_mlp = not cfg.attn_only
        self.ln1 = norm() if cfg.pre_norms else None
        self.ln2 = norm() if cfg.pre_norms and has_mlp and not cfg.shared_pre_norm else None
        self.ln1_post = norm() if cfg.post_norms else None
        self.ln2_post = norm() if cfg.post_norms and has_mlp else None
        self.attn = Attention(cfg, layer)
        self.mlp = MLP(cfg) if has_mlp else None
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_q_input = HookPoint()  # [batch, pos, n_heads, d_model]: each head's own copy of its input
        self.hook_k_input = HookPoint()  # [batch, pos, n_heads, d_model]
        self.hook_v_input = HookPoint()  # [batch, pos, n_heads, d_model]
        self.hook_mlp_in = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    @property
    def mlp_norm(self) -> Norm | None:
        """The norm before the MLP: ln2, or ln1 where the block shares one norm."""
        return self.ln1 if self.ln2 is None else self.ln2


class ModelSpec(HookedRootModule):
    """A transformer as the edge-patching engine sees it.

    Attributes:
        cfg: the ``ArchitectureConfig`` (its ``dtype`` and ``device`` follow ``.to()``).
        tokenizer: the model's tokenizer, or None.
        source: the object it was built from (a TransformerBridge or a HookedTransformer), or None.
        reference_forward: tokens -> logits of the model inside a wrapping ``source`` by its own
            forward (``from_bridge`` sets it: the Hugging Face model's), or None.
        embedding, pos_embedding (None for rotary models), blocks, ln_final (None without a final
        norm), unembedding: the modules holding the weights.
        rotary_cos, rotary_sin: rotary models' distinct cos/sin tables [n_tables, positions,
        rotary_dim] (positions = min(n_ctx, MAX_ROTARY_POSITIONS)); layer L uses table
        ``rotary_table_of_layer[L]``. By default the original RoPE with base ``rotary_bases[L]``.

    Receivers of layer L's attention are numbered r in [0, 3 * n_heads): ``r // n_heads`` is
    0/1/2 for q/k/v, ``r % n_heads`` the query head (a k or v receiver of query head h reads
    key/value head ``h // n_groups``).
    """

    def __init__(
        self,
        cfg: ArchitectureConfig,
        tokenizer: Any = None,
        source: Any = None,
        rotary_bases: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.source = source
        self.reference_forward: Callable[[Tensor], Tensor] | None = None  # set by adapters of wrappers
        self.embedding = Embed(cfg.d_vocab, cfg.d_model, cfg.embedding_scale)
        self.pos_embedding = PosEmbed(cfg.n_ctx, cfg.d_model) if cfg.positional_embedding_type == "standard" else None
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layers))
        has_final = cfg.final_norm and cfg.normalization_type is not None
        self.ln_final = (
            Norm(cfg.normalization_type, cfg.d_model, cfg.norm_eps, cfg.norm_offset, cfg.upcast) if has_final else None
        )
        self.unembedding = Unembed(cfg.d_model, cfg.d_vocab_out, cfg.logit_softcap)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.rotary_table_of_layer: tuple[int, ...] = ()
        if cfg.positional_embedding_type == "rotary":
            positions = min(cfg.n_ctx, MAX_ROTARY_POSITIONS)
            bases = rotary_bases or [10000.0] * cfg.n_layers
            self.set_rotary_tables([default_tables(positions, cfg.rotary_dim, b, cfg.rotary_layout) for b in bases])
        self.setup()

    def set_rotary_tables(self, tables: list[tuple[Tensor, Tensor]]) -> None:
        """Use (cos, sin) ``tables[L]`` ([positions, rotary_dim] each) for layer L; equal tables are stored once."""
        distinct: list[tuple[Tensor, Tensor]] = []
        index = []
        for cos, sin in tables:
            found = next((i for i, (c, s) in enumerate(distinct) if torch.equal(c, cos) and torch.equal(s, sin)), None)
            if found is None:
                distinct.append((cos, sin))
                found = len(distinct) - 1
            index.append(found)
        self.register_buffer("rotary_cos", torch.stack([c for c, _ in distinct]))
        self.register_buffer("rotary_sin", torch.stack([s for _, s in distinct]))
        self.rotary_table_of_layer = tuple(index)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "source" and isinstance(value, nn.Module):
            # the source model is a reference, not a submodule: it must not join parameters(),
            # .to() or the hook dictionary
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    # ---- the pieces the patched pass composes ----

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens [n, pos] -> token embeddings [n, pos, d_model] (times embedding_scale)."""
        return self.embedding(tokens)

    def pos_embed(self, tokens: Tensor) -> Tensor | None:
        """tokens [n, pos] -> absolute position embeddings [n, pos, d_model]; None for rotary models."""
        return None if self.pos_embedding is None else self.pos_embedding(tokens)

    def qkv(self, layer: int, x: Tensor, receivers: Tensor) -> Tensor:
        """q/k/v of ``receivers`` [R] of ``layer`` from their own residual inputs x [..., R, d_model]
        -> [..., R, d_head]: pre-norm (unless the model has none), projection, bias, q/k norm (no rotary)."""
        block = self.blocks[layer]
        normed = x if block.ln1 is None else block.ln1(x)
        return block.attn.qkv(normed, receivers)

    def qkv_of_normed_rows(self, layer: int, normed: Tensor, receivers: Tensor) -> Tensor:
        """``qkv_rows`` from rows already through the layer's pre-norm (``blocks[layer].ln1``,
        where the model has one): normed [R, M, d_model] -> [R, M, d_head]."""
        return self.blocks[layer].attn.qkv_rows(normed, receivers)

    def qkv_rows(self, layer: int, x: Tensor, receivers: Tensor) -> Tensor:
        """``qkv`` on receiver-major rows: x [R, M, d_model] (receiver ``receivers[r]``'s input at M
        token positions) -> [R, M, d_head]."""
        block = self.blocks[layer]
        normed = x if block.ln1 is None else block.ln1(x)
        return block.attn.qkv_rows(normed, receivers)

    def qkv_pairs(
        self, layer: int, x: Tensor, receivers: list[int], input_of: list[int]
    ) -> tuple[Tensor, list[int]]:
        """``qkv_rows`` of receiver/input pairs: x [U, M, d_model] distinct inputs, pair p is
        receiver ``receivers[p]`` reading ``x[input_of[p]]``. Each input is normed once and each
        pair projected as one matrix of a batch (an input read by several receivers is broadcast
        to them, not copied). Returns (q/k/v [Q, M, d_head] in an order of its own, row of each pair).
        """
        block = self.blocks[layer]
        normed = x if block.ln1 is None else block.ln1(x)
        def index(values: list[int]) -> Tensor:  # copied to the device without waiting for its queue
            return torch.tensor(values).to(x.device, non_blocking=True)

        readers: dict[int, list[int]] = {}
        for pair, u in enumerate(input_of):
            readers.setdefault(u, []).append(pair)
        alone = [pairs[0] for pairs in readers.values() if len(pairs) == 1]
        order, parts = list(alone), []
        if alone:
            inputs = normed if len(alone) == len(normed) else normed.index_select(0, index([input_of[p] for p in alone]))
            parts.append(block.attn.qkv_rows(inputs, index([receivers[p] for p in alone])))
        for u, pairs in readers.items():
            if len(pairs) > 1:
                order += pairs
                parts.append(block.attn.qkv_rows(normed[u].expand(len(pairs), -1, -1), index([receivers[p] for p in pairs])))
        row = [0] * len(order)
        for position, pair in enumerate(order):
            row[pair] = position
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), row

    def heads(self, layer: int, q: Tensor, k: Tensor, v: Tensor, heads: Tensor) -> Tensor:
        """Per-head results r_h = z_h @ W_O[h] [batch, pos, H', d_model] of query heads ``heads``
        [H'] from q, k, v [batch, pos, H', d_head], before any post-attention norm."""
        return self.blocks[layer].attn.heads(q, k, v, heads, *self.rotary_tables(layer, q.shape[-3]))

    def head_results(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor, heads: Tensor, query_positions: Tensor | None = None
    ) -> Tensor:
        """``heads`` for head instances: q, k, v [I, b, pos, d_head] (instance i is query head
        ``heads[i]``) -> results [I, b, pos, d_model], before any post-attention norm. With
        ``query_positions`` [P], q [I, b, P, d_head] holds the queries at those positions only, and
        the results are theirs [I, b, P, d_model]."""
        cos, sin = self.rotary_tables(layer, k.shape[-2])
        return self.blocks[layer].attn.results(q, k, v, heads, cos, sin, query_positions=query_positions)

    def rotary_tables(self, layer: int, n_pos: int) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """(cos, sin) [positions, rotary_dim] of ``layer`` ((None, None) without rotary); AcdcError
        when ``n_pos`` exceeds the tables."""
        if not self.rotary_table_of_layer:
            return None, None
        table = self.rotary_table_of_layer[layer]
        if n_pos > self.rotary_cos.shape[1]:
            raise AcdcError(
                f"model {self.cfg.model_name}: prompts of {n_pos} positions are longer than its "
                f"{self.rotary_cos.shape[1]} rotary positions"
            )
        return self.rotary_cos[table], self.rotary_sin[table]

    def attention_out(self, layer: int, results: Tensor) -> Tensor:
        """Each head's contribution to the residual stream from all heads' results
        [..., n_heads, d_model] -> [..., n_heads, d_model]. Without a post-attention norm the
        results themselves; with one (RMSNorm, weight w_eff = offset + w) w_eff * r_h / rms(sum_j r_j),
        so the contributions sum to the normed attention output."""
        norm = self.blocks[layer].ln1_post
        if norm is None:
            return results
        inverse_rms = norm.inverse_rms(results.sum(-2))
        return norm.scaled(results, inverse_rms.unsqueeze(-2))

    def attention_sum(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Every head's contribution (``attention_out``) summed, [batch, pos, d_model], from q, k, v
        [batch, pos, n_heads, d_head], the heads' results summed by one product; equal to
        ``attention_out`` of ``heads`` summed over heads up to rounding."""
        block = self.blocks[layer]
        summed = block.attn.summed_results(q, k, v, *self.rotary_tables(layer, q.shape[-3]))
        norm = block.ln1_post
        return summed if norm is None else norm.scaled(summed, norm.inverse_rms(summed))

    def attention_bias(self, layer: int) -> Tensor:
        """b_O [d_model]: added to the residual stream by the layer's attention, owned by no head."""
        return self.blocks[layer].attn.b_O

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        """The MLP's output [..., d_model] from its residual input x [..., d_model]: pre-norm,
        MLP, post-MLP norm where the model has them."""
        block = self.blocks[layer]
        norm = block.mlp_norm
        out = block.mlp(x if norm is None else norm(x))
        return out if block.ln2_post is None else block.ln2_post(out)

    def unembed(self, x: Tensor) -> Tensor:
        """Final residual [..., d_model] -> logits [..., d_vocab_out]: final norm, W_U, b_U, soft-cap."""
        return self.unembedding(x if self.ln_final is None else self.ln_final(x))

    def unembed_each(self, x: Tensor) -> Tensor:
        """``unembed`` of each x[u] of x [U, ..., d_model] -> [U, ..., d_vocab_out], with products whose
        shapes do not depend on U (``Unembed.each``)."""
        normed = x if self.ln_final is None else self.ln_final(x)
        return self.unembedding.each(normed.reshape(len(x), -1, x.shape[-1])).view(*x.shape[:-1], -1)

    # ---- whole passes ----

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [n, pos] -> logits [n, pos, d_vocab], through every hook point."""
        cfg = self.cfg
        n_heads = cfg.n_heads
        resid = self.hook_embed(self.embed(tokens))
        positions = self.pos_embed(tokens)
        if positions is not None:
            resid = resid + self.hook_pos_embed(positions)
        all_heads = torch.arange(n_heads, device=resid.device)
        for layer, block in enumerate(self.blocks):
            resid = block.hook_resid_pre(resid)
            input_hooks = (block.hook_q_input, block.hook_k_input, block.hook_v_input)
            if any(hook._forward_hooks or hook._forward_pre_hooks for hook in input_hooks):
                per_head = resid.unsqueeze(-2).expand(*resid.shape[:-1], n_heads, cfg.d_model)
                q, k, v = (
                    self.qkv(layer, hook(per_head), all_heads + kind * n_heads) for kind, hook in enumerate(input_hooks)
                )
            else:  # the same values: each head's copy of the input is normed alike, so norm it once
                normed = resid if block.ln1 is None else block.ln1(resid)
                rows = normed.reshape(1, -1, cfg.d_model).expand(n_heads, -1, -1)
                q, k, v = (
                    block.attn.qkv_rows(rows, all_heads + kind * n_heads).view(n_heads, *resid.shape[:-1], -1).movedim(0, -2)
                    for kind in range(3)
                )
            q, k, v = block.attn.hook_q(q), block.attn.hook_k(k), block.attn.hook_v(v)
            results = self.heads(layer, q, k, v, all_heads)
            attn_out = block.attn.hook_result(self.attention_out(layer, results)).sum(-2) + self.attention_bias(layer)
            if block.mlp is None:
                resid = resid + attn_out
            elif cfg.parallel_attn_mlp:
                mlp_out = block.hook_mlp_out(self.mlp(layer, block.hook_mlp_in(resid)))
                resid = resid + attn_out + mlp_out
            else:
                resid = resid + attn_out
                resid = resid + block.hook_mlp_out(self.mlp(layer, block.hook_mlp_in(resid)))
            resid = block.hook_resid_post(resid)
        return self.unembed(resid)

    def source_logits(self, tokens: Tensor) -> Tensor:
        """The logits [n, pos, d_vocab] for tokens [n, pos] of the model the user gave, by that
        model's own forward: ``reference_forward`` where the adapter set one (a TransformerBridge:
        the Hugging Face model's own forward, ``from_bridge.hf_logits``, not the bridge's), else
        the source's forward (a HookedTransformer), else ``forward`` (native models)."""
        if self.reference_forward is not None:
            return self.reference_forward(tokens)
        if self.source is None:
            return self(tokens)
        device = next(self.source.parameters()).device
        return self.source(tokens.to(device))

    def wrapper_logits(self, tokens: Tensor) -> Tensor | None:
        """The logits of the wrapper the model came in (a TransformerBridge's own forward), which the
        self-check records beside ``source_logits`` but does not judge by; None when the model came
        in no wrapper (``source_logits`` is then the source's forward)."""
        if self.reference_forward is None or self.source is None:
            return None
        device = next(self.source.parameters()).device
        return self.source(tokens.to(device))

    # ---- torch module behaviour ----

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - torch's signature
        super()._apply(fn, *args, **kwargs)
        weight = self.embedding.W_E
        device = str(weight.device)
        if self.cfg.dtype != weight.dtype or self.cfg.device != device:
            object.__setattr__(self, "cfg", dataclasses.replace(self.cfg, dtype=weight.dtype, device=device))
        return self
