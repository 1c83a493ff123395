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

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
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
    resid: {read point: [n_prompts, pos, d_model]}, the residual stream where receivers read it:
        read point 2L before layer L's heads, 2L+1 before its MLP, 2 * n_layers for the logits.
    """

    sender_out: Tensor
    qkv: list[Tensor]
    resid: dict[int, Tensor]


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
            # A_t: what a receiver reading at t gets with every incoming edge removed, and what a
            # layer computes from it
            self._ablated_input = {
                read: resid - self._clean_minus_ablated[:, :, : self._senders_before[read]].sum(2)
                for read, resid in self.clean_run.resid.items()
            }
            n_heads = model.cfg.n_heads
            every_receiver = torch.arange(3 * n_heads, device=self.device)
            self._ablated_input_qkv = [  # by _qkv_at, as a patched pass computes a receiver's q/k/v
                self._qkv_at(layer, self._ablated_input[2 * layer][:, :, None, :].expand(-1, -1, 3 * n_heads, -1), every_receiver)
                .unflatten(2, (3, n_heads))
                for layer in range(graph.shape.n_layers)
            ]
            self._ablated_input_mlp_out = (
                [self._mlp(layer, self._ablated_input[2 * layer + 1]) for layer in range(graph.shape.n_layers)]
                if graph.shape.has_mlp
                else []
            )

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

    def bytes_per_circuit(self) -> int:
        """A generous estimate of the memory one more circuit in a batch takes, in bytes."""
        cfg = self.model.cfg
        n_prompts, n_pos = self.clean.shape
        per_token = (
            len(self.graph.senders) * cfg.d_model  # sender outputs of this pass
            + 4 * 3 * cfg.n_heads * cfg.d_model  # q/k/v receiver inputs, corrections, LayerNorm
            + 4 * 3 * cfg.n_heads * cfg.d_head
            + 2 * cfg.n_heads * n_pos  # scores, pattern
            + (3 * (cfg.d_mlp or 0) if self.graph.shape.has_mlp else 0)
            + len(self.positions) * cfg.d_vocab / n_pos  # logits
        )
        return int(per_token * n_prompts * n_pos * self.clean_run.sender_out.element_size())

    def auto_batch_size(self, limit: int = 32, memory_fraction: float = 0.25) -> int:
        """How many circuits to evaluate per pass: at most ``limit``, and within a fraction of the
        device's free memory."""
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return max(1, min(limit, int(memory_fraction * free / self.bytes_per_circuit())))

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
        leaves: list[tuple[Tensor, Tensor]] = []
        with torch.enable_grad():
            final = self._forward(self.clean, input_embeddings, leaves).resid[2 * g.shape.n_layers][:, self.positions]
            final_leaf = torch.zeros_like(final, requires_grad=True)
            value = metric(self._unembed((final + final_leaf)[None]))
            grads = torch.autograd.grad(value.sum(), [leaf for _, leaf in leaves] + [final_leaf])
        n_prompts, n_pos = self.clean.shape
        out = torch.zeros(n_prompts, n_pos, len(g.receivers), self.model.cfg.d_model, dtype=self.dtype, device=self.device)
        for (receivers, _), grad in zip(leaves, grads):
            out[:, :, receivers] = grad.reshape(n_prompts, n_pos, len(receivers), -1)
        out[:, self.positions, g.receiver_index["logits"]] = grads[-1]
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

    def _forward(
        self, tokens: Tensor, input_embeddings: Tensor | None = None, leaves: list[tuple[Tensor, Tensor]] | None = None
    ) -> Activations:
        """A plain (unpatched) forward pass that records every sender's output.

        ``input_embeddings`` [n_prompts, pos, n_input_senders, d_model] replace the embedding
        outputs. With ``leaves``, each receiver's input gets a zero leaf added (to take gradients
        at), appended as (receiver indices, leaf [n_prompts, pos, R, d_model]).
        """
        model, g = self.model, self.graph
        n_prompts, n_pos = tokens.shape
        if input_embeddings is None:
            tok, pos = model.embed(tokens), model.pos_embed(tokens)
            outs = [tok, pos] if g.shape.split_input else [tok + pos]
        else:
            outs = list(input_embeddings.unbind(2))
        resid = sum(outs[1:], outs[0])

        def with_leaf(value: Tensor, receivers: Tensor) -> Tensor:
            if leaves is None:
                return value
            leaf = torch.zeros(n_prompts, n_pos, len(receivers), value.shape[-1], dtype=value.dtype, device=value.device, requires_grad=True)
            leaves.append((receivers, leaf))
            return value + leaf.view(value.shape)

        residuals, all_qkv = {}, []
        for layer, block in enumerate(model.blocks):
            residuals[2 * layer] = resid
            qkv_in = resid[:, :, None, None, :].expand(n_prompts, n_pos, 3, g.shape.n_heads, -1)
            qkv = self._qkv(layer, with_leaf(qkv_in, self._qkv_receivers[layer]))
            head_out = self._heads(layer, qkv)
            all_qkv.append(qkv)
            outs.extend(head_out.unbind(2))
            resid = resid + head_out.sum(2) + block.attn.b_O
            if g.shape.has_mlp:
                residuals[2 * layer + 1] = resid
                mlp_out = self._mlp(layer, with_leaf(resid, self._mlp_receivers[layer]))
                outs.append(mlp_out)
                resid = resid + mlp_out
        residuals[2 * g.shape.n_layers] = resid
        return Activations(torch.stack(outs, dim=2), all_qkv, residuals)

    def _patched_forward(
        self,
        edge_mask: Tensor,
        head_input_mask: Tensor,
        start_layer: int,
    ) -> Tensor:
        """Logits [C, n_prompts, P, d_vocab] of C circuits, resuming at ``start_layer``.

        Each receiver's input is computed as in_v = A_v + sum_u m_uv (out_u - out_u*), where A_v is
        its input with every edge removed (precomputed). Senders written before ``start_layer``
        take their clean outputs. A receiver whose mask column is the same in every circuit and
        that keeps no edge from a sender that differs between circuits gets the same input in every
        circuit: it, and a head or MLP all of whose receivers are like it, is computed once for the
        batch; the rest per circuit. Either way a circuit's values are the same float bits as when
        it is evaluated alone: sums run in one order on every path, and the q/k/v and MLP products are
        called once per circuit (``_each_circuit``). The unembedding stays batched (one read of
        W_U); its rows come out the same in any batch (tests check all of this bit for bit).
        """
        model, g = self.model, self.graph
        n_circuits = edge_mask.shape[0]
        n_prompts, n_pos = self.clean.shape
        d_model, n_heads = model.cfg.d_model, model.cfg.n_heads
        kept = edge_mask.to(self.dtype)  # [C, S, R]
        n_fixed = self._senders_before[2 * start_layer]
        fixed_diff = self._clean_minus_ablated[:, :, :n_fixed]
        n_new = len(g.senders) - n_fixed
        # out_u - out_u* of the senders computed in this pass, by sender: ``shared_diff`` holds the
        # senders equal in every circuit (zero where one varies); ``circuit_diff`` (made at the first
        # varying sender) holds every sender per circuit
        shared_diff = torch.zeros(n_prompts, n_pos, n_new, d_model, dtype=self.dtype, device=self.device)
        circuit_diff: Tensor | None = None
        varying = torch.zeros(len(g.senders), dtype=torch.bool, device=self.device)

        def receiver_inputs(receivers: Tensor, read_at: int, positions: Tensor | None = None) -> ReceiverInputs:
            # Every receiver's input is summed as (fixed senders' rows + A_v) + this pass's senders'
            # rows, whichever path computes it: a circuit's input does not depend on its batch.
            n_before = self._senders_before[read_at]
            at = slice(None) if positions is None else positions
            column = kept[:, :n_before, receivers]  # [C, s, R]
            varies = (column != column[:1]).any(0).any(0) | column[:, varying[:n_before]].any(0).any(0)
            active = column[0].any(0) & ~varies
            base = self._ablated_input[read_at][:, at, None, :]
            fixed, new = slice(0, n_fixed), slice(n_fixed, n_before)
            shared = None
            if active.any():
                mask = column[0][:, active].T  # [Ra, s]
                shared = _masked_sum(mask[:, fixed], fixed_diff[:, at])
                shared += base
                if n_before > n_fixed:
                    shared += _masked_sum(mask[:, new], shared_diff[:, at, : n_before - n_fixed])
            per_circuit = None
            if varies.any():
                mask = column[:, :, varies].transpose(1, 2)  # [C, Rv, s]
                n_varies = mask.shape[1]
                rows = _masked_sum(mask[:, :, fixed].reshape(n_circuits * n_varies, -1), fixed_diff[:, at])
                per_circuit = rows.unflatten(2, (n_circuits, n_varies)).permute(2, 0, 1, 3, 4) + base
                if n_before > n_fixed:
                    if circuit_diff is None:
                        diffs = shared_diff[None, :, at, : n_before - n_fixed].expand(n_circuits, -1, -1, -1, -1)
                    else:
                        diffs = circuit_diff[:, :, at, : n_before - n_fixed]
                    per_circuit += torch.stack(
                        [_masked_sum(mask[c, :, new], diffs[c]) for c in range(n_circuits)]
                    )
            return ReceiverInputs(varies, active, shared, per_circuit)

        def store(senders: Tensor, outputs: Tensor, is_varying: bool) -> None:
            """Record senders' outputs: [n, pos, s, d] (the same in every circuit) or [C, n, pos, s, d]."""
            nonlocal circuit_diff
            diff = outputs - self.ablated.sender_out[:, :, senders]
            slots = senders - n_fixed
            if is_varying:
                varying[senders] = True
                if circuit_diff is None:
                    circuit_diff = shared_diff[None].repeat(n_circuits, 1, 1, 1, 1)
                circuit_diff[:, :, :, slots] = diff
            else:
                shared_diff[:, :, slots] = diff
                if circuit_diff is not None:
                    circuit_diff[:, :, :, slots] = diff[None]

        n_written = n_fixed
        for layer in range(start_layer, g.shape.n_layers):
            inputs = receiver_inputs(self._qkv_receivers[layer], 2 * layer)
            keep = head_input_mask[:, layer].permute(0, 2, 1)  # [C, 3, h]
            head_varies = (inputs.varies.view(3, n_heads) | (keep != keep[:1]).any(0)).any(0)  # [h]
            # q/k/v from the receivers' inputs, before head inputs are cut: receivers with no kept
            # edge have the all-ablated input's, those the same in every circuit are computed once
            qkv_from_inputs = self._ablated_input_qkv[layer].clone()
            if inputs.shared is not None:
                receivers = inputs.active.nonzero().flatten()
                qkv_from_inputs[:, :, receivers // n_heads, receivers % n_heads] = self._qkv_at(layer, inputs.shared, receivers)
            shared_heads = (~head_varies).nonzero().flatten()
            if len(shared_heads):
                qkv = torch.where(keep[0, None, None, :, :, None], qkv_from_inputs, self.ablated.qkv[layer])
                store(n_written + shared_heads, self._heads(layer, qkv[:, :, :, shared_heads], shared_heads), False)
            varying_heads = head_varies.nonzero().flatten()
            if len(varying_heads):
                # q/k/v of the varying heads in every circuit: shared receivers broadcast, varying ones computed
                qkv = qkv_from_inputs[None].repeat(n_circuits, 1, 1, 1, 1, 1)
                if inputs.per_circuit is not None:
                    receivers = inputs.varies.nonzero().flatten()
                    computed = _each_circuit(lambda x: self._qkv_at(layer, x, receivers), inputs.per_circuit)  # [C, n, pos, Rv, d_head]
                    qkv[:, :, :, receivers // n_heads, receivers % n_heads] = computed
                qkv = qkv[:, :, :, :, varying_heads]  # [C, n, pos, 3, hv, d_head]
                ablated = self.ablated.qkv[layer][None, :, :, :, varying_heads]
                qkv = torch.where(keep[:, None, None, :, varying_heads, None], qkv, ablated)
                out = self._heads(layer, qkv.flatten(0, 1), varying_heads).view(n_circuits, n_prompts, n_pos, -1, d_model)
                store(n_written + varying_heads, out, True)
            n_written += n_heads
            if g.shape.has_mlp:
                inputs = receiver_inputs(self._mlp_receivers[layer], 2 * layer + 1)
                mlp = torch.tensor([n_written], device=self.device)
                if inputs.per_circuit is not None:
                    store(mlp, _each_circuit(lambda x: self._mlp(layer, x), inputs.per_circuit), True)
                elif inputs.shared is not None:
                    store(mlp, self._mlp(layer, inputs.shared), False)
                else:
                    store(mlp, self._ablated_input_mlp_out[layer][:, :, None], False)
                n_written += 1

        logits_receiver = torch.tensor([g.receiver_index["logits"]], device=self.device)
        inputs = receiver_inputs(logits_receiver, 2 * g.shape.n_layers, self.positions)
        if inputs.per_circuit is not None:
            return self._unembed(inputs.per_circuit[:, :, :, 0])  # batched: it reads W_U once
        final = self._ablated_input[2 * g.shape.n_layers][None, :, self.positions] if inputs.shared is None else inputs.shared[None, :, :, 0]
        return self._unembed(final).expand(n_circuits, -1, -1, -1)

    def _unembed(self, final: Tensor) -> Tensor:
        """Logits [..., d_vocab] from final residuals [..., d_model]."""
        if self.model.cfg.normalization_type is not None:
            final = _normalize(self.model.ln_final, final)
        unembed = self.model.unembed
        return torch.matmul(final, unembed.W_U) + unembed.b_U

    def _mlp(self, layer: int, mlp_in: Tensor) -> Tensor:
        """MLP output from its input, [..., d_model]."""
        block = self.model.blocks[layer]
        flat = _normalize(block.ln2, mlp_in).reshape(-1, 1, mlp_in.shape[-1])
        return block.mlp(flat).view(mlp_in.shape)

    def _qkv(self, layer: int, qkv_in: Tensor) -> Tensor:
        """q, k, v [..., pos, 3, h, d_head] from per-head inputs [..., pos, 3, h, d_model]."""
        attn = self.model.blocks[layer].attn
        weights = torch.stack([attn.W_Q, attn.W_K, attn.W_V])  # [3, h, d_model, d_head]
        biases = torch.stack([attn.b_Q, attn.b_K, attn.b_V])  # [3, h, d_head]
        return torch.einsum("...xhd,xhde->...xhe", _normalize(self.model.blocks[layer].ln1, qkv_in), weights) + biases

    def _qkv_at(self, layer: int, inputs: Tensor, receivers: Tensor) -> Tensor:
        """q/k/v of some receivers of ``layer`` (indices into its 3h receivers, q block first):
        inputs [..., R, d_model] -> [..., R, d_head]."""
        attn = self.model.blocks[layer].attn
        weights = torch.cat([attn.W_Q, attn.W_K, attn.W_V])[receivers]  # [R, d_model, d_head]
        biases = torch.cat([attn.b_Q, attn.b_K, attn.b_V])[receivers]  # [R, d_head]
        return torch.einsum("...rd,rde->...re", _normalize(self.model.blocks[layer].ln1, inputs), weights) + biases

    def _heads(self, layer: int, qkv: Tensor, heads: Tensor | None = None) -> Tensor:
        """Per-head results [batch, pos, h, d_model] from q/k/v [batch, pos, 3, h, d_head]."""
        model = self.model
        attn = model.blocks[layer].attn
        n_pos = qkv.shape[-4]
        q, k, v = qkv.unbind(-3)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / attn.attn_scale
        if model.cfg.attention_dir == "causal":
            causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        pattern = torch.softmax(scores, dim=-1).to(qkv.dtype)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        w_o = attn.W_O if heads is None else attn.W_O[heads]
        return torch.einsum("bqhe,hed->bqhd", z, w_o)


@dataclass
class ReceiverInputs:
    """The inputs of a group of R receivers for a batch of C circuits.

    varies [R]: the receiver's input differs between circuits; its inputs are ``per_circuit``
        [C, n_prompts, pos, R_varies, d_model].
    active [R]: the same in every circuit and not the all-ablated input; computed once in
        ``shared`` [n_prompts, pos, R_active, d_model]. The remaining receivers keep no edge: their
        input is the all-ablated input, whose downstream values are precomputed.
    """

    varies: Tensor
    active: Tensor
    shared: Tensor | None
    per_circuit: Tensor | None


def _each_circuit(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """fn applied to each circuit's slice x[c], stacked: the matrix products inside see the shapes
    a lone circuit gives them (BLAS may sum a row differently when it has more rows to share out
    between threads), so a circuit's values do not depend on its batch."""
    return torch.stack([fn(x_c) for x_c in x.unbind(0)])


def _masked_sum(mask: Tensor, diff: Tensor) -> Tensor:
    """sum_s mask[r, s] * diff[..., s, :] -> [..., R, d], by one kind of BLAS call whatever R is.

    mask [R, s], diff [..., s, d]. BLAS sums a row the same way for any number of rows but one (a
    single row takes a matrix-vector kernel), so a lone row is computed beside a zero row.
    """
    if mask.shape[0] == 1:
        return torch.matmul(torch.cat([mask, torch.zeros_like(mask)]), diff)[..., :1, :]
    return torch.matmul(mask, diff)


def _normalize(norm: torch.nn.Module, x: Tensor) -> Tensor:
    """A TransformerLens normalization module applied to x, fused where torch has the kernel."""
    from transformer_lens.components import LayerNorm, LayerNormPre

    if isinstance(norm, LayerNorm):
        return F.layer_norm(x, x.shape[-1:], norm.w, norm.b, norm.eps)
    if isinstance(norm, LayerNormPre):
        return F.layer_norm(x, x.shape[-1:], None, None, norm.eps)
    return norm(x)
