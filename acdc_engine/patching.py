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
class AblatedActivations:
    """What a removed edge or head input is replaced with, for every prompt.

    sender_out: [n_prompts, pos, n_senders, d_model]   out_u* for every sender
    qkv: per layer, [n_prompts, pos, 3, n_heads, d_head]   ablated q, k, v
    """

    sender_out: Tensor
    qkv: list[Tensor]


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
        self.device = model.cfg.device if model.cfg.device is not None else "cpu"
        self.dtype = model.cfg.dtype
        self.clean = clean.to(self.device)
        self.corrupted = corrupted.to(self.device)
        n_pos = clean.shape[1]
        self.positions = (torch.arange(n_pos) if positions is None else positions).to(self.device)
        self._layer_receivers = self._receiver_indices_by_layer()
        self._senders_before = self._sender_counts_before_each_receiver_layer()
        with torch.no_grad():
            self.ablated = self._ablated_activations()

    # ----- public -------------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, edge_mask: Tensor, head_input_mask: Tensor) -> Tensor:
        """Logits of C circuits at ``positions``.

        Args:
            edge_mask: bool [C, n_senders, n_receivers] (or without the C axis), True = in the circuit.
            head_input_mask: bool [C, n_layers, n_heads, 3] (or without the C axis).
        Returns:
            [C, n_prompts, P, d_vocab] (no C axis if the masks had none).
        """
        squeeze = edge_mask.dim() == 2
        if squeeze:
            edge_mask, head_input_mask = edge_mask[None], head_input_mask[None]
        logits, _ = self._forward(self.clean, edge_mask.to(self.device), head_input_mask.to(self.device))
        return logits[0] if squeeze else logits

    # ----- the forward pass --------------------------------------------------------------------

    def _receiver_indices_by_layer(self) -> list[dict[str, Tensor]]:
        g = self.graph
        out = []
        for layer in range(g.shape.n_layers):
            heads = [g.receiver_index[f"a{layer}.h{h}<{x}>"] for x in "qkv" for h in range(g.shape.n_heads)]
            entry = {"qkv": torch.tensor(heads, device=self.device)}
            if g.shape.has_mlp:
                entry["mlp"] = torch.tensor(g.receiver_index[f"m{layer}"], device=self.device)
            out.append(entry)
        return out

    def _sender_counts_before_each_receiver_layer(self) -> dict[int, int]:
        """For each receiver half-layer: how many senders (a prefix in forward order) write before it."""
        writes = torch.tensor(self.graph.sender_layer)
        return {read: int((writes < read).sum()) for read in set(self.graph.receiver_layer)}

    def _ablated_activations(self) -> AblatedActivations:
        n_senders = len(self.graph.senders)
        _, record = self._forward(self.corrupted, None, None)
        sender_out, qkv = record.sender_out, record.qkv
        if self.ablation == "zero":
            sender_out = torch.zeros_like(sender_out)
            qkv = [torch.zeros_like(x) for x in qkv]
        elif self.ablation == "mean":
            sender_out = sender_out.mean(0, keepdim=True).expand_as(sender_out).contiguous()
            qkv = [x.mean(0, keepdim=True).expand_as(x).contiguous() for x in qkv]
        assert sender_out.shape[2] == n_senders
        return AblatedActivations(sender_out, qkv)

    def _forward(
        self, tokens: Tensor, edge_mask: Tensor | None, head_input_mask: Tensor | None
    ) -> tuple[Tensor, AblatedActivations]:
        """The masked forward pass; with no masks, a plain pass that records every sender's output."""
        model, g = self.model, self.graph
        patching = edge_mask is not None
        n_circuits = edge_mask.shape[0] if patching else 1
        n_prompts, n_pos = tokens.shape
        d_model, n_heads = model.cfg.d_model, model.cfg.n_heads
        batch = n_circuits * n_prompts

        tok = model.embed(tokens)
        pos = model.pos_embed(tokens)
        embeds = [tok, pos] if g.shape.split_input else [tok + pos]
        resid = (tok + pos).expand(n_circuits, n_prompts, n_pos, d_model).reshape(batch, n_pos, d_model)

        # out_u for every sender, this pass: [C * n_prompts, pos, n_senders, d_model]
        outs = torch.empty(batch, n_pos, len(g.senders), d_model, dtype=resid.dtype, device=resid.device)
        for i, e in enumerate(embeds):
            outs[:, :, i] = e.expand(n_circuits, n_prompts, n_pos, d_model).reshape(batch, n_pos, d_model)
        n_written = len(embeds)
        recorded_qkv = []
        if patching:
            removed = (~edge_mask).to(resid.dtype)  # [C, S, R]

        def receiver_input(receivers: Tensor, read_at: int) -> Tensor:
            """in_v for the given receivers: [batch, pos, len(receivers), d_model]."""
            n = self._senders_before[read_at]
            base = resid[:, :, None, :].expand(batch, n_pos, receivers.numel(), d_model)
            if not patching:
                return base
            this_pass = outs[:, :, :n].view(n_circuits, n_prompts, n_pos, n, d_model)
            diff = this_pass - self.ablated.sender_out[None, :, :, :n]
            correction = torch.einsum("cnpsd,csr->cnprd", diff, removed[:, :n, receivers])
            return base - correction.reshape(batch, n_pos, receivers.numel(), d_model)

        for layer, block in enumerate(model.blocks):
            attn = block.attn
            qkv_in = receiver_input(self._layer_receivers[layer]["qkv"], 2 * layer)
            qkv_in = block.ln1(qkv_in).view(batch, n_pos, 3, n_heads, d_model)
            weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V])  # [3, h, d_model, d_head]
            biases = torch.stack([attn.b_Q, attn.b_K, attn.b_V])  # [3, h, d_head]
            qkv = torch.einsum("bpxhd,xhde->bpxhe", qkv_in, weights) + biases
            if patching:
                keep = head_input_mask[:, layer].permute(0, 2, 1)[:, None, None, :, :, None]  # [C,1,1,3,h,1]
                qkv = qkv.reshape(n_circuits, n_prompts, n_pos, 3, n_heads, -1)
                qkv = torch.where(keep, qkv, self.ablated.qkv[layer][None]).reshape(batch, n_pos, 3, n_heads, -1)
            else:
                recorded_qkv.append(qkv)
            q, k, v = qkv.unbind(2)
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / attn.attn_scale
            if model.cfg.attention_dir == "causal":
                causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device).tril()
                scores = scores.masked_fill(~causal, float("-inf"))
            pattern = torch.softmax(scores, dim=-1).to(qkv.dtype)
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
            head_out = torch.einsum("bqhe,hed->bqhd", z, attn.W_O)  # [batch, pos, h, d_model]
            outs[:, :, n_written : n_written + n_heads] = head_out
            n_written += n_heads
            resid = resid + head_out.sum(2) + attn.b_O

            if g.shape.has_mlp:
                mlp_in = receiver_input(self._layer_receivers[layer]["mlp"].reshape(1), 2 * layer + 1)[:, :, 0]
                mlp_out = block.mlp(block.ln2(mlp_in))
                outs[:, :, n_written] = mlp_out
                n_written += 1
                resid = resid + mlp_out

        logits_index = torch.tensor([g.receiver_index["logits"]], device=resid.device)
        final = receiver_input(logits_index, 2 * g.shape.n_layers)[:, :, 0]
        final = final[:, self.positions]
        if model.cfg.normalization_type is not None:
            final = model.ln_final(final)
        logits = model.unembed(final)
        logits = logits.view(n_circuits, n_prompts, len(self.positions), -1)
        return logits, AblatedActivations(outs, recorded_qkv)
