"""The patched pass's precomputation: the clean and ablated runs, and every receiver's input with all
its edges removed.

``record_run`` is a plain (unpatched) forward pass over a ``ModelSpec`` that records what the patched
pass needs: every sender's output, each layer's q/k/v, and the residual stream at each read point
(``GraphShape.attention_reads`` / ``mlp_reads`` / ``logits_read``). ``Baseline`` holds the clean
run, the ablated run (what removed edges carry) and the all-removed inputs derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph, head_name, head_receiver_name, mlp_name, QKV
from acdc_engine.patching.qkv_gradients import FactoredGradients, Scratch, watched_qkv

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec

ABLATIONS = ("resample", "zero", "mean")
REFERENCE_POSITION_SEED = 49
"""The seed of the original ACDC's permutation of the corrupted run's positional embedding."""

GradientSink = Callable[[Tensor, FactoredGradients], None]
"""Called during a backward pass with (receiver indices [R], d metric / d those receivers' inputs, in
factors or ``FactoredGradients.of_dense``) as each receiver group's gradient is computed
(``record_run``'s ``watch``); they are valid during the call only (a sink that keeps them copies them)."""


@dataclass
class Activations:
    """An unpatched run's activations, for every prompt.

    sender_out: [n_prompts, pos, n_senders, d_model]   every sender's output (None: not kept)
    qkv: per layer, [n_prompts, pos, 3, n_heads, d_head]   q, k, v (``ModelSpec.qkv``), per query head
    resid: {read point: [n_prompts, pos, d_model]}, the residual stream where receivers read it
    anchor: for a run made for a backward pass (``record_run``'s ``watch``), the zero scalar the
        residual stream starts from, to take the gradient at; None otherwise
    """

    sender_out: Tensor | None
    qkv: list[Tensor]
    resid: dict[int, Tensor]
    anchor: Tensor | None = None


@dataclass(frozen=True)
class ReceiverGroups:
    """Receiver indices the pass computes together: each layer's 3 * n_heads q/k/v receivers (q block,
    then k, then v, heads in order, as ``ModelSpec.qkv`` numbers them), its MLP input, the logits."""

    qkv: list[Tensor]  # per layer, [3 * n_heads]
    mlp: list[Tensor | None]  # per layer, [1] (None without MLPs)
    logits: Tensor  # [1]
    # (tensors on a device, or numpy arrays: ``as_numpy``)

    @classmethod
    def of(cls, graph: Graph, device: torch.device) -> "ReceiverGroups":
        shape, index = graph.shape, graph.receiver_index
        qkv = [
            torch.tensor([index[head_receiver_name(layer, h, x)] for x in QKV for h in range(shape.n_heads)], device=device)
            for layer in range(shape.n_layers)
        ]
        mlp = [
            torch.tensor([index[mlp_name(layer)]], device=device) if shape.has_mlp else None
            for layer in range(shape.n_layers)
        ]
        return cls(qkv, mlp, torch.tensor([index["logits"]], device=device))

    def as_numpy(self) -> ReceiverGroups:
        """The same indices as numpy arrays (for the pass's analysis of masks on the CPU)."""
        return ReceiverGroups(
            [x.cpu().numpy() for x in self.qkv], [None if x is None else x.cpu().numpy() for x in self.mlp], self.logits.cpu().numpy()
        )


def first_head_sender(graph: Graph, layer: int) -> int:
    """The sender index of ``a{layer}.h0``; the layer's heads follow it in order."""
    return graph.sender_index[head_name(layer, 0)]


def input_sender_outputs(spec: ModelSpec, graph: Graph, tokens: Tensor) -> list[Tensor]:
    """The input senders' outputs [n_prompts, pos, d_model] each: ``input`` (token plus absolute
    positional embedding), or ``tok_embed`` and ``pos_embed`` with ``split_input``."""
    tok, pos = spec.embed(tokens), spec.pos_embed(tokens)
    if graph.shape.split_input:
        if pos is None:
            raise AcdcError(
                f"split_input needs absolute positional embeddings; model '{spec.cfg.model_name}' has "
                f"{spec.cfg.positional_embedding_type} positions (use split_input=false)"
            )
        return [tok, pos]
    return [tok if pos is None else tok + pos]


def permuted_position_inputs(spec: ModelSpec, graph: Graph, tokens: Tensor) -> Tensor:
    """The input senders' outputs [n_prompts, pos, 2, d_model] of ``tokens`` with the positional
    embedding's positions permuted by ``torch.randperm(pos)`` under seed 49 (the same permutation
    for every prompt), as the original ACDC builds its corrupted run under resample ablation with
    split embeddings."""
    tok, pos = input_sender_outputs(spec, graph, tokens)
    order = torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(REFERENCE_POSITION_SEED))
    return torch.stack([tok, pos[:, order.to(pos.device)]], dim=2)


def attention_contributions(spec: ModelSpec, layer: int, qkv: Tensor, heads: Tensor) -> Tensor:
    """What heads ``heads`` of ``layer`` write to the residual stream, [batch, pos, H', d_model], from
    their q/k/v [batch, pos, 3, H', d_head]. With a post-attention norm every head of the layer is
    needed (the norm's scale comes from their sum)."""
    q, k, v = qkv.unbind(-3)
    results = spec.heads(layer, q, k, v, heads)
    return spec.attention_out(layer, results) if spec.cfg.post_norms else results


def watched_input(value: Tensor, receivers: Tensor, watch: GradientSink | None) -> Tensor:
    """``value`` [n_prompts, pos, d_model], the input of one receiver (``receivers`` [1]), as a view
    whose gradient goes to ``watch`` (unchanged without one)."""
    if watch is None:
        return value
    view = value.view_as(value)
    view.register_hook(lambda grad: watch(receivers, FactoredGradients.of_dense(grad[None])))
    return view


def layer_qkv(
    spec: ModelSpec, layer: int, resid: Tensor, receivers: Tensor, watch: GradientSink | None, scratch: Scratch | None = None
) -> Tensor:
    """Layer ``layer``'s q/k/v [n_prompts, pos, 3H, d_head] from resid [n_prompts, pos, d_model], each
    of ``receivers`` [3H] reading it. With ``watch`` (a pass for a backward pass) each receiver's
    gradient goes to ``watch``: every receiver reads the same residual stream, so the pre-norm and the
    projections run once for all (``watched_qkv``, writing in ``scratch``), and the gradients come in
    factors, valid during ``watch``'s call only. A model
    whose q/k norm spans all heads (``qk_norm="full"``) takes its receivers' rows through the
    projection one by one and their gradients back through the norm with ``Norm.input_gradients``."""
    n_prompts, n_pos = resid.shape[:2]
    every_qkv = torch.arange(len(receivers), device=resid.device)
    attn, norm = spec.blocks[layer].attn, spec.blocks[layer].ln1
    if watch is not None and attn.cfg.qk_norm != "full":
        projections = watched_qkv(attn, norm, resid, lambda factored: watch(receivers, factored), scratch or Scratch())
        return attn.qk_normed(projections, None, every_qkv).view(len(receivers), n_prompts, n_pos, -1).movedim(0, 2)
    rows = normed_rows(spec, layer, resid, len(receivers))
    if watch is not None:
        rows = rows.view_as(rows)

        def to_watch(grad: Tensor) -> None:
            grad = grad.reshape(len(receivers), n_prompts, n_pos, -1)
            watch(receivers, FactoredGradients.of_dense(grad if norm is None else norm.input_gradients(resid.detach(), grad)))

        rows.register_hook(to_watch)
    return spec.qkv_of_normed_rows(layer, rows, every_qkv).view(len(receivers), n_prompts, n_pos, -1).movedim(0, 2)


def normed_rows(spec: ModelSpec, layer: int, x: Tensor, n_receivers: int) -> Tensor:
    """x [..., d_model] through ``layer``'s pre-norm, as the receiver-major rows [n_receivers,
    tokens, d_model] that each of the layer's q/k/v receivers reads alike: normed once (a row is
    normed alike alone and among others), the receivers' rows a view of it."""
    norm = spec.blocks[layer].ln1
    normed = x if norm is None else norm(x)
    return normed.reshape(1, -1, normed.shape[-1]).expand(n_receivers, -1, -1)


def attention_output(
    spec: ModelSpec, graph: Graph, layer: int, qkv: Tensor, fixed: Mapping[int, Tensor], outs: list[Tensor] | None
) -> Tensor:
    """The sum of layer ``layer``'s head contributions [n_prompts, pos, d_model] (without b_O) from its
    qkv [n_prompts, pos, 3, n_heads, d_head], a ``fixed`` head's replaced by its constant; each
    head's contribution is appended to ``outs`` where given (a run that records its senders). A run
    that records none and fixes no head of the layer sums the heads by one product."""
    first, n_heads = first_head_sender(graph, layer), graph.shape.n_heads
    fixes_a_head = any(first + h in fixed for h in range(n_heads))
    if outs is None and not fixes_a_head:
        return spec.attention_sum(layer, *qkv.unbind(-3))
    head_out = attention_contributions(spec, layer, qkv, torch.arange(n_heads, device=qkv.device))
    if fixes_a_head:
        head_out = torch.stack(
            [fixed[first + h].detach() if first + h in fixed else head_out[:, :, h] for h in range(n_heads)], dim=2
        )
    if outs is not None:
        outs.extend(head_out.unbind(2))
    return head_out.sum(2)


def record_run(
    spec: ModelSpec,
    graph: Graph,
    groups: ReceiverGroups,
    tokens: Tensor,
    input_embeddings: Tensor | None = None,
    watch: GradientSink | None = None,
    fixed: Mapping[int, Tensor] | None = None,
) -> Activations:
    """A plain (unpatched) forward pass of ``tokens`` [n_prompts, pos] that records every sender's output.

    ``input_embeddings`` [n_prompts, pos, n_input_senders, d_model] replace the input senders'
    outputs. With ``watch`` the pass is for a backward pass: each receiver group's input is a view of
    its own whose gradient goes to ``watch`` when the backward pass computes it, the residual stream
    starts from a zero anchor that needs a gradient (``Activations.anchor``: take the gradient at
    it, and every receiver on a path to the metric gets one), and the senders' outputs are not kept.
    ``fixed`` {sender index: [n_prompts, pos, d_model]} replaces those senders' outputs by constants:
    later receivers read them, and no gradient flows through those senders (as a forward hook that
    overwrites a node's output does).
    """
    shape = graph.shape
    n_prompts, n_pos = tokens.shape
    fixed = fixed or {}
    outs = input_sender_outputs(spec, graph, tokens) if input_embeddings is None else list(input_embeddings.unbind(2))
    outs = [fixed[i].detach() if i in fixed else out for i, out in enumerate(outs)]
    resid = sum(outs[1:], outs[0])
    anchor = None
    if watch is not None:
        anchor = torch.zeros((), dtype=resid.dtype, device=resid.device, requires_grad=True)
        resid = resid + anchor

    residuals, all_qkv, scratch = {}, [], Scratch()
    for layer in range(shape.n_layers):
        residuals[shape.attention_reads(layer)] = resid
        qkv = layer_qkv(spec, layer, resid, groups.qkv[layer], watch, scratch).unflatten(2, (3, shape.n_heads))
        all_qkv.append(qkv)
        heads_out = attention_output(spec, graph, layer, qkv, fixed, outs if watch is None else None)
        after_attention = resid + heads_out + spec.attention_bias(layer)
        if shape.has_mlp:
            mlp_in = resid if shape.parallel_attn_mlp else after_attention
            residuals[shape.mlp_reads(layer)] = mlp_in
            mlp_out = spec.mlp(layer, watched_input(mlp_in, groups.mlp[layer], watch))
            mlp_index = graph.sender_index[mlp_name(layer)]
            if mlp_index in fixed:
                mlp_out = fixed[mlp_index].detach()
            outs.append(mlp_out)
            resid = after_attention + mlp_out
        else:
            resid = after_attention
    residuals[shape.logits_read] = resid
    return Activations(None if watch is not None else torch.stack(outs, dim=2), all_qkv, residuals, anchor)


def record_runs(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, *token_sets: Tensor) -> list[Activations]:
    """``record_run`` of each of ``token_sets`` (each [n_i, pos]), computed as one run over all
    their prompts (one call per step instead of one per set; every step is computed per prompt, so
    a prompt's values are those of its own set's run, up to how the BLAS kernel for the larger row
    count rounds)."""
    run = record_run(spec, graph, groups, torch.cat(token_sets))
    runs, start = [], 0
    for tokens in token_sets:
        part = slice(start, start + len(tokens))
        runs.append(Activations(run.sender_out[part], [qkv[part] for qkv in run.qkv], {read: x[part] for read, x in run.resid.items()}))
        start = part.stop
    return runs


def check_mean_covers(lengths: Tensor, corrupted_lengths: Tensor) -> None:
    """AcdcError when mean ablation has no real corrupted token to average at a position that a
    clean prompt has (``lengths``, ``corrupted_lengths``: [n_prompts] real tokens)."""
    longest, covered = int(lengths.max()), int(corrupted_lengths.max())
    if covered < longest:
        raise AcdcError(
            f"mean ablation averages the corrupted prompts' real tokens at each position, and positions {covered} .. "
            f"{longest - 1} of the longest clean prompts have none (the longest corrupted prompt has {covered} tokens); "
            "give corrupted prompts as long as the longest clean one, or use resample ablation"
        )


def ablate(corrupted_run: Activations, ablation: str, corrupted_lengths: Tensor | None = None) -> Activations:
    """What removed edges and head inputs carry: the corrupted run (resample), zeros, or its mean
    per position over the corrupted prompts that have a real token there (mean; ``corrupted_lengths``
    [n_prompts], default: every position is real; 0 where no prompt has one)."""
    if ablation == "resample":
        return corrupted_run
    if ablation == "zero":
        transform = torch.zeros_like
    elif ablation == "mean":
        n_prompts, n_pos = corrupted_run.sender_out.shape[:2]
        device = corrupted_run.sender_out.device
        lengths = torch.full((n_prompts,), n_pos, device=device) if corrupted_lengths is None else corrupted_lengths
        real = torch.arange(n_pos, device=device)[None] < lengths[:, None]  # [n_prompts, pos]
        count = real.sum(0).clamp(min=1)

        def transform(x: Tensor) -> Tensor:
            if real.all():
                return x.mean(0, keepdim=True).expand_as(x).contiguous()
            keep = real.view(n_prompts, n_pos, *[1] * (x.dim() - 2))
            total = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(0, keepdim=True)
            return (total / count.view(1, n_pos, *[1] * (x.dim() - 2)).to(x.dtype)).expand_as(x).contiguous()
    else:
        raise AcdcError(f"unknown ablation '{ablation}'; choose one of {', '.join(ABLATIONS)}")
    return Activations(transform(corrupted_run.sender_out), [transform(x) for x in corrupted_run.qkv], corrupted_run.resid)


class Baseline:
    """Everything a patched pass reads besides the masks, computed once per patcher.

    clean_run, ablated: ``Activations`` of the clean prompts and of what removed edges carry
        (``corrupted_run``: the corrupted prompts' run it is made from; with
        ``permute_corrupted_positions``, run with the positions of its positional embedding
        permuted, ``permuted_position_inputs``).
    sender_diff: out_u - out_u* for every sender, sender-major [n_senders, n_prompts, pos, d_model].
    ablated_out: out_u*, sender-major [n_senders, n_prompts, pos, d_model].
    senders_before[t]: how many senders write before read point t (senders are numbered in forward
        order, so they form a prefix).
    ablated_input[t]: A_t [n_prompts, pos, d_model], the input of a receiver reading at t with every
        incoming edge removed.
    qkv_table[layer]: [6 * n_heads, n_prompts * pos * d_head], receiver-major (row r is receiver r of
        ``ModelSpec.qkv``'s numbering): rows 0 .. 3H-1 the ablated q/k/v (what a removed head input
        carries), rows 3H .. 6H-1 the q/k/v of A_t, computed by ``ModelSpec.qkv_rows`` as a patched
        pass computes a receiver's q/k/v.
    ablated_input_mlp_out[layer]: the MLP's output on A_t (empty list without MLPs).
    ``at_positions`` gives the rows a pass reads at the logits' positions only.
    """

    def __init__(
        self,
        spec: ModelSpec,
        graph: Graph,
        groups: ReceiverGroups,
        clean: Tensor,
        corrupted: Tensor,
        ablation: str,
        permute_corrupted_positions: bool = False,
        corrupted_lengths: Tensor | None = None,
    ) -> None:
        shape = graph.shape
        writes = torch.tensor(graph.sender_layer)
        self.senders_before = {read: int((writes < read).sum()) for read in set(graph.receiver_layer)}
        if permute_corrupted_positions:
            if ablation != "resample" or not shape.split_input:
                raise AcdcError(
                    "permute_corrupted_positions is for resample ablation with split_input (the original "
                    f"ACDC's tracr setting); this run has ablation={ablation}, split_input={shape.split_input}"
                )
            self.clean_run = record_run(spec, graph, groups, clean)
            self.corrupted_run = record_run(spec, graph, groups, corrupted, permuted_position_inputs(spec, graph, corrupted))
        else:
            self.clean_run, self.corrupted_run = record_runs(spec, graph, groups, clean, corrupted)
        self.ablated = ablate(self.corrupted_run, ablation, corrupted_lengths)
        self.ablated_out = self.ablated.sender_out.permute(2, 0, 1, 3).contiguous()
        self.sender_diff = (self.clean_run.sender_out.permute(2, 0, 1, 3) - self.ablated_out).contiguous()
        self.ablated_input = {
            read: resid - self.sender_diff[: self.senders_before[read]].sum(0)
            for read, resid in self.clean_run.resid.items()
        }
        n_qkv = 3 * shape.n_heads
        every_qkv = torch.arange(n_qkv, device=clean.device)
        self.qkv_table = []
        for layer in range(shape.n_layers):
            rows = normed_rows(spec, layer, self.ablated_input[shape.attention_reads(layer)], n_qkv)
            from_input = spec.qkv_of_normed_rows(layer, rows, every_qkv)
            ablated_qkv = self.ablated.qkv[layer].permute(2, 3, 0, 1, 4).reshape(n_qkv, -1)
            self.qkv_table.append(torch.cat([ablated_qkv, from_input.flatten(1)]))
        self.ablated_input_mlp_out = (
            [spec.mlp(layer, self.ablated_input[shape.mlp_reads(layer)]) for layer in range(shape.n_layers)]
            if shape.has_mlp
            else []
        )
        self.n_heads = shape.n_heads
        self._at_positions: PositionRows | None = None

    def at_positions(self, positions: Tensor) -> PositionRows:
        """The baseline's rows at ``positions`` [P] (made once; a patcher has one set of positions)."""
        kept = self._at_positions
        if kept is None or (kept.positions is not positions and not torch.equal(kept.positions, positions)):
            self._at_positions = PositionRows(self, positions)
        return self._at_positions


class PositionRows:
    """A ``Baseline``'s rows at positions [P] only (the logits' positions): ``sender_diff``,
    ``ablated_out`` [n_senders, n_prompts, P, d_model], ``ablated_input`` {read point: [n_prompts,
    P, d_model]}, ``ablated_input_mlp_out`` (per layer), and ``qkv_table`` per layer split into its
    q rows at P (``q_table`` [2 * n_heads, n_prompts * P * d_head]: ablated, then all-removed input)
    and its k and v rows at every position (``kv_table`` [4 * n_heads, n_prompts * pos * d_head]).
    """

    def __init__(self, baseline: Baseline, positions: Tensor) -> None:
        self.positions = positions
        self.sender_diff = baseline.sender_diff.index_select(2, positions)
        self.ablated_out = baseline.ablated_out.index_select(2, positions)
        self.ablated_input = {read: x.index_select(1, positions) for read, x in baseline.ablated_input.items()}
        self.ablated_input_mlp_out = [x.index_select(1, positions) for x in baseline.ablated_input_mlp_out]
        n_heads = baseline.n_heads
        n_prompts, n_pos = baseline.sender_diff.shape[1:3]
        self.q_table, self.kv_table = [], []
        for table in baseline.qkv_table:
            rows = table.view(2, 3, n_heads, n_prompts, n_pos, -1)  # (ablated, all-removed), kind, head
            self.q_table.append(rows[:, 0].index_select(3, positions).reshape(2 * n_heads, -1))
            self.kv_table.append(rows[:, 1:].reshape(4 * n_heads, -1))
