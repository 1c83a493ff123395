"""Masked forward passes: run a model with any set of edges patched, many circuits at once.

For receiver v with edge mask m_uv (1 = in the circuit), DESIGN.md's patching rule is

    in_v = resid_v - sum_u (1 - m_uv) * (out_u - out_u*)

where out_u is sender u's output in this pass and out_u* its ablated output (the corrupted run's
under resample ablation, 0 under zero ablation, the per-position mean over the corrupted prompts
under mean ablation). A removed head input replaces that head's q (k, v) by its ablated value.

The forward pass is our own, written over the weights and the LayerNorm/MLP modules of a
TransformerLens ``HookedTransformer``: no hook per edge, one einsum per receiver group and layer.
Circuits are stacked on a leading axis C, so one call evaluates C circuits side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from acdc_engine.errors import AcdcError
from acdc_engine.graph import Graph

ABLATIONS = ("resample", "zero", "mean")


def check_model_supported(model: torch.nn.Module) -> None:
    """Raise AcdcError naming the first feature of ``model`` that the masked forward pass lacks."""
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer):
        raise AcdcError(f"expected a transformer_lens HookedTransformer, got {type(model).__name__}")
    cfg = model.cfg
    unsupported = {
        "positional_embedding_type": (cfg.positional_embedding_type != "standard", cfg.positional_embedding_type),
        "parallel_attn_mlp": (bool(cfg.parallel_attn_mlp), True),
        "n_key_value_heads (grouped-query attention)": (
            cfg.n_key_value_heads not in (None, cfg.n_heads),
            cfg.n_key_value_heads,
        ),
        "use_local_attn": (bool(cfg.use_local_attn), True),
        "attn_scores_soft_cap": (cfg.attn_scores_soft_cap > 0, cfg.attn_scores_soft_cap),
        "output_logits_soft_cap": (cfg.output_logits_soft_cap > 0, cfg.output_logits_soft_cap),
        "use_normalization_before_and_after": (bool(cfg.use_normalization_before_and_after), True),
        "use_attention_sinks": (bool(getattr(cfg, "use_attention_sinks", False)), True),
        "use_logn_attn": (bool(getattr(cfg, "use_logn_attn", False)), True),
        "clip_qkv": (getattr(cfg, "clip_qkv", None) is not None, getattr(cfg, "clip_qkv", None)),
        "load_in_4bit": (bool(cfg.load_in_4bit), True),
    }
    for feature, (bad, value) in unsupported.items():
        if bad:
            raise AcdcError(f"model feature not supported by the edge-patching forward pass: {feature}={value!r}")
    if cfg.attention_dir not in ("causal", "bidirectional"):
        raise AcdcError(f"unknown attention_dir {cfg.attention_dir!r}")


@dataclass
class Activations:
    """An unpatched run's activations, for every prompt.

    sender_out: [n_prompts, pos, n_senders, d_model]   every sender's output
    qkv: per layer, [n_prompts, pos, 3, n_heads, d_head]   q, k, v (after W_Q/W_K/W_V and biases)
    resid: per layer L (and L = n_layers for the final residual), [n_prompts, pos, d_model]: the
        residual stream before layer L.
    """

    sender_out: Tensor
    qkv: list[Tensor]
    resid: list[Tensor]


class EdgePatcher:
    """Runs ``model`` on fixed clean tokens with edges patched from fixed corrupted tokens.

    Args:
        model: a supported ``HookedTransformer`` (see ``check_model_supported``).
        graph: the model's graph (``build_graph(model.cfg)``).
        clean, corrupted: token ids [n_prompts, pos], same shape.
        positions: the positions whose logits are returned, [P] (default: all).
        ablation: "resample" (default), "zero" or "mean".
    """

    def __init__(
        self,
        model: torch.nn.Module,
        graph: Graph,
        clean: Tensor,
        corrupted: Tensor,
        positions: Tensor | None = None,
        ablation: str = "resample",
    ) -> None:
        check_model_supported(model)
        if ablation not in ABLATIONS:
            raise AcdcError(f"unknown ablation '{ablation}'; choose one of {', '.join(ABLATIONS)}")
        if clean.shape != corrupted.shape:
            raise AcdcError(
                f"clean and corrupted token batches differ in shape: {tuple(clean.shape)} vs {tuple(corrupted.shape)}"
            )
        model_shape = (model.cfg.n_layers, model.cfg.n_heads, not model.cfg.attn_only)
        if (graph.shape.n_layers, graph.shape.n_heads, graph.shape.has_mlp) != model_shape:
            raise AcdcError(
                f"graph (layers, heads, MLPs) = {(graph.shape.n_layers, graph.shape.n_heads, graph.shape.has_mlp)}"
                f" does not match the model's {model_shape}"
            )
        self.model = model
        self.graph = graph
        self.ablation = ablation
        self.device = torch.device(model.cfg.device if model.cfg.device is not None else "cpu")
        self.dtype = model.cfg.dtype
        self.clean = clean.to(self.device)
        self.corrupted = corrupted.to(self.device)
        n_pos = clean.shape[1]
        self.positions = (torch.arange(n_pos) if positions is None else positions).to(self.device)
        self._qkv_receivers, self._mlp_receivers = self._receiver_indices_by_layer()
        writes = torch.tensor(graph.sender_layer)
        # senders are numbered in forward order: those written before a read form a prefix
        self._senders_before = {read: int((writes < read).sum()) for read in set(graph.receiver_layer)}
        with torch.no_grad():
            self.clean_run = self._forward(self.clean)
            self.ablated = self._ablate(self._forward(self.corrupted))
            self._clean_minus_ablated = self.clean_run.sender_out - self.ablated.sender_out

    # ----- public -------------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, edge_mask: Tensor, head_input_mask: Tensor, start_layer: int = 0) -> Tensor:
        """Logits of C circuits at ``positions``.

        Args:
            edge_mask: bool [C, n_senders, n_receivers] (or without the C axis), True = in the circuit.
            head_input_mask: bool [C, n_layers, n_heads, 3] (or without the C axis).
            start_layer: resume the forward pass at this layer, taking everything before it from the
                clean run. Valid when every receiver below it is intact (all its edges and head
                inputs present), as during ACDC's visit of that layer: then nothing upstream changed.
        Returns:
            [C, n_prompts, P, d_vocab] (no C axis if the masks had none).
        """
        squeeze = edge_mask.dim() == 2
        if squeeze:
            edge_mask, head_input_mask = edge_mask[None], head_input_mask[None]
        edge_mask, head_input_mask = edge_mask.to(self.device), head_input_mask.to(self.device)
        if start_layer > 0:
            below = torch.tensor(self.graph.receiver_layer, device=self.device) < 2 * start_layer
            intact = edge_mask[:, :, below] | ~self.graph.edge_exists[:, below].to(self.device)
            if not (intact.all() and head_input_mask[:, :start_layer].all()):
                raise ValueError(f"cannot resume at layer {start_layer}: a receiver below it is patched")
        logits = self._patched_forward(edge_mask, head_input_mask, start_layer)
        return logits[0] if squeeze else logits

    def receiver_gradients(
        self, metric: Callable[[Tensor], Tensor], input_embeddings: Tensor | None = None
    ) -> tuple[Tensor, float]:
        """d metric / d in_v for every receiver v of the full model (for EAP and EAP-IG).

        Args:
            metric: circuit logits [1, n_prompts, P, d_vocab] -> [1].
            input_embeddings: [n_prompts, pos, n_input_senders, d_model] to use instead of the clean
                prompts' embedding outputs (EAP-IG interpolates them); default: the clean ones.
        Returns:
            (gradients [n_prompts, pos, n_receivers, d_model], the metric's value). Each gradient is
            the total derivative: it includes the paths through every later receiver.
        """
        g = self.graph
        captured: list[tuple[Tensor, Tensor, Tensor | None]] = []
        with torch.enable_grad():
            logits = self._patched_forward(
                g.edge_exists[None].to(self.device),
                g.full_head_input_mask()[None].to(self.device),
                0,
                input_embeddings,
                captured,
            )
            value = metric(logits)
            grads = torch.autograd.grad(value.sum(), [leaf for _, leaf, _ in captured])
        n_prompts, n_pos = self.clean.shape
        out = torch.zeros(n_prompts, n_pos, len(g.receivers), self.model.cfg.d_model, dtype=self.dtype, device=self.device)
        for (receivers, _, positions), grad in zip(captured, grads):
            if positions is None:
                out[:, :, receivers] = grad
            else:
                out[:, positions[:, None], receivers[None, :]] = grad
        return out, float(value.detach().sum())

    # ----- the forward pass --------------------------------------------------------------------

    def _receiver_indices_by_layer(self) -> tuple[list[Tensor], list[Tensor | None]]:
        g = self.graph
        qkv, mlp = [], []
        for layer in range(g.shape.n_layers):
            heads = [g.receiver_index[f"a{layer}.h{h}<{x}>"] for x in "qkv" for h in range(g.shape.n_heads)]
            qkv.append(torch.tensor(heads, device=self.device))
            mlp.append(torch.tensor([g.receiver_index[f"m{layer}"]], device=self.device) if g.shape.has_mlp else None)
        return qkv, mlp

    def _ablate(self, corrupted_run: Activations) -> Activations:
        """What removed edges and head inputs carry, from the corrupted run."""
        if self.ablation == "resample":
            return corrupted_run
        if self.ablation == "zero":
            transform = torch.zeros_like
        else:  # mean over the corrupted prompts, per position
            def transform(x: Tensor) -> Tensor:
                return x.mean(0, keepdim=True).expand_as(x).contiguous()
        return Activations(
            transform(corrupted_run.sender_out), [transform(x) for x in corrupted_run.qkv], corrupted_run.resid
        )

    def _attention(self, layer: int, qkv_in: Tensor, head_keep: Tensor | None, n_circuits: int) -> tuple[Tensor, Tensor]:
        """One attention layer from per-head q/k/v inputs [batch, pos, 3, h, d_model].

        Returns (q/k/v [batch, pos, 3, h, d_head], per-head results [batch, pos, h, d_model]).
        ``head_keep`` [C, 3, h]: False replaces that q/k/v by its ablated value.
        """
        model = self.model
        attn = model.blocks[layer].attn
        batch, n_pos, _, n_heads, _ = qkv_in.shape
        weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V])  # [3, h, d_model, d_head]
        biases = torch.stack([attn.b_Q, attn.b_K, attn.b_V])  # [3, h, d_head]
        qkv = torch.einsum("bpxhd,xhde->bpxhe", model.blocks[layer].ln1(qkv_in), weights) + biases
        if head_keep is not None:
            keep = head_keep[:, None, None, :, :, None]  # [C, 1, 1, 3, h, 1]
            qkv = qkv.reshape(n_circuits, batch // n_circuits, n_pos, 3, n_heads, -1)
            qkv = torch.where(keep, qkv, self.ablated.qkv[layer][None]).reshape(batch, n_pos, 3, n_heads, -1)
        q, k, v = qkv.unbind(2)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / attn.attn_scale
        if model.cfg.attention_dir == "causal":
            causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        pattern = torch.softmax(scores, dim=-1).to(qkv.dtype)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        return qkv, torch.einsum("bqhe,hed->bqhd", z, attn.W_O)

    def _forward(self, tokens: Tensor) -> Activations:
        """A plain (unpatched) forward pass that records every sender's output."""
        model, g = self.model, self.graph
        n_prompts, n_pos = tokens.shape
        tok, pos = model.embed(tokens), model.pos_embed(tokens)
        outs = [tok, pos] if g.shape.split_input else [tok + pos]
        resid = tok + pos
        residuals, all_qkv = [], []
        for layer, block in enumerate(model.blocks):
            residuals.append(resid)
            qkv_in = resid[:, :, None, None, :].expand(n_prompts, n_pos, 3, g.shape.n_heads, -1)
            qkv, head_out = self._attention(layer, qkv_in, None, 1)
            all_qkv.append(qkv)
            outs.extend(head_out.unbind(2))
            resid = resid + head_out.sum(2) + block.attn.b_O
            if g.shape.has_mlp:
                mlp_out = block.mlp(block.ln2(resid))
                outs.append(mlp_out)
                resid = resid + mlp_out
        residuals.append(resid)
        return Activations(torch.stack(outs, dim=2), all_qkv, residuals)

    def _patched_forward(
        self,
        edge_mask: Tensor,
        head_input_mask: Tensor,
        start_layer: int,
        input_embeddings: Tensor | None = None,
        capture: list[tuple[Tensor, Tensor, Tensor | None]] | None = None,
    ) -> Tensor:
        """Logits [C, n_prompts, P, d_vocab] of C circuits, resuming at ``start_layer``.

        Senders written before ``start_layer`` take their clean outputs (shared by all circuits);
        the senders from ``start_layer`` on are computed per circuit. ``input_embeddings`` (with
        start_layer 0) replace the clean embedding outputs. With ``capture``, each receiver input
        gets a zero leaf added, appended as (receivers, leaf, positions), to take gradients at.
        """
        model, g = self.model, self.graph
        n_circuits = edge_mask.shape[0]
        n_prompts, n_pos = self.clean.shape
        d_model, n_heads = model.cfg.d_model, model.cfg.n_heads
        batch = n_circuits * n_prompts
        removed = (~edge_mask).to(self.dtype)  # [C, S, R]
        n_shared = self._senders_before[2 * start_layer]
        shared_diff = self._clean_minus_ablated[:, :, :n_shared]  # [n, pos, n_shared, d]
        resid = self.clean_run.resid[start_layer].repeat(n_circuits, 1, 1)  # [batch, pos, d]
        if input_embeddings is not None:
            assert start_layer == 0, "input embeddings can only replace the clean ones at layer 0"
            shared_diff = input_embeddings - self.ablated.sender_out[:, :, :n_shared]
            resid = input_embeddings.sum(2).repeat(n_circuits, 1, 1)
        new_ablated = self.ablated.sender_out[:, :, n_shared:]
        new_outs = torch.empty(batch, n_pos, len(g.senders) - n_shared, d_model, dtype=self.dtype, device=self.device)

        def receiver_input(receivers: Tensor, read_at: int, positions: Tensor | None = None) -> Tensor:
            """in_v for the given receivers: [batch, pos (or P), len(receivers), d_model]."""
            n_before = self._senders_before[read_at]
            at = slice(None) if positions is None else positions
            r = removed[:, :, receivers]  # [C, S, R]
            correction = torch.einsum("npsd,csr->cnprd", shared_diff[:, at], r[:, :n_shared])
            if n_before > n_shared:
                k = n_before - n_shared
                this_pass = new_outs[:, at, :k].reshape(n_circuits, n_prompts, -1, k, d_model)
                diff = this_pass - new_ablated[None, :, at, :k]
                correction = correction + torch.einsum("cnpsd,csr->cnprd", diff, r[:, n_shared:n_before])
            correction = correction.reshape(batch, correction.shape[2], len(receivers), d_model)
            value = resid[:, at, None, :] - correction
            if capture is not None:
                leaf = torch.zeros_like(value, requires_grad=True)
                capture.append((receivers, leaf, positions))
                value = value + leaf
            return value

        n_written = 0
        for layer in range(start_layer, g.shape.n_layers):
            block = model.blocks[layer]
            qkv_in = receiver_input(self._qkv_receivers[layer], 2 * layer).view(batch, n_pos, 3, n_heads, d_model)
            head_keep = head_input_mask[:, layer].permute(0, 2, 1)  # [C, 3, h]
            _, head_out = self._attention(layer, qkv_in, head_keep, n_circuits)
            new_outs[:, :, n_written : n_written + n_heads] = head_out
            n_written += n_heads
            resid = resid + head_out.sum(2) + block.attn.b_O
            if g.shape.has_mlp:
                mlp_in = receiver_input(self._mlp_receivers[layer], 2 * layer + 1)[:, :, 0]
                mlp_out = block.mlp(block.ln2(mlp_in))
                new_outs[:, :, n_written] = mlp_out
                n_written += 1
                resid = resid + mlp_out

        logits_receiver = torch.tensor([g.receiver_index["logits"]], device=self.device)
        final = receiver_input(logits_receiver, 2 * g.shape.n_layers, self.positions)[:, :, 0]
        if model.cfg.normalization_type is not None:
            final = model.ln_final(final)
        return model.unembed(final).view(n_circuits, n_prompts, len(self.positions), -1)
