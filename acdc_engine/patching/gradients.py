"""Gradient passes of the full model: d metric / d in_v for every receiver v, a chunk of prompts at a time.

``gradient_pass`` runs the full model forward and backward on the clean prompts (``record_run``
with a ``watch``) and hands each receiver group's gradient to a ``GradientSink`` as the backward pass
computes it: ``EdgePatcher.receiver_gradients`` stores them, ``EdgePatcher.edge_scores`` contracts
them with the senders' out_u - out*_u at once (``sender_products``), so no tensor of every
receiver's gradient is held.

Prompts go through in chunks (``prompt_chunks``) so that one pass's autograd state fits in memory.
A chunk's gradient is exact when the metric is a mean of per-prompt terms (every built-in metric,
``acdc_engine.measure.metrics``): the metric is evaluated on the chunk's logits with the other
prompts' rows held at the clean model's, constants whose values do not reach the chunk's gradient.
With one chunk (the task fits) nothing is held constant, and any metric is exact.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import Tensor

from acdc_engine.patching.baseline import record_run
from acdc_engine.patching.memory import available_memory, gradient_pass_elements_per_token
from acdc_engine.patching.positions import add_at_positions, select_positions
from acdc_engine.patching.qkv_gradients import FactoredGradients

EdgePatcher = Any  # acdc_engine.patching.patcher.EdgePatcher (which imports this module)

ChunkSink = Callable[[Tensor, FactoredGradients, slice], None]
"""Called with (receiver indices [R'], d metric / d their inputs for the chunk's prompts
(``FactoredGradients``), the chunk's prompts) as the backward pass of a chunk computes each
receiver group's gradient."""

GRADIENT_MEMORY_FRACTION = 0.5  # of the memory available after the patcher's tables, for one pass
_PRODUCT_ELEMENTS = 2**26  # bound on the part of an operand converted to the score dtype at a time


def prompt_chunks(patcher: EdgePatcher) -> list[slice]:
    """Consecutive prompt ranges, each small enough that one gradient pass over it takes at most
    ``GRADIENT_MEMORY_FRACTION`` of the available memory (``gradient_pass_elements_per_token``);
    ``patcher.prompts_per_gradient_pass`` sets the size instead when not None. All prompts at once
    where the available memory cannot be read."""
    n_prompts, n_pos = patcher.clean.shape
    size = patcher.prompts_per_gradient_pass
    if size is None:
        free = available_memory(patcher.device)
        if free is None:
            return [slice(0, n_prompts)]
        n_positions = len(patcher.positions) if patcher.positions.dim() == 1 else patcher.positions.shape[1]
        per_token = gradient_pass_elements_per_token(patcher.spec.cfg, n_tokens=n_pos, n_positions=n_positions)
        per_prompt = per_token * n_pos * patcher.clean_sender_out.element_size()
        size = int(GRADIENT_MEMORY_FRACTION * free / per_prompt)
    size = max(1, min(n_prompts, size))
    return [slice(start, min(start + size, n_prompts)) for start in range(0, n_prompts, size)]


def gradient_pass(
    patcher: EdgePatcher,
    metric: Callable[[Tensor], Tensor],
    watch: ChunkSink,
    input_embeddings: Tensor | None = None,
    fixed: Mapping[int, Tensor] | None = None,
) -> float:
    """Forward and backward passes of the full model on the clean prompts, one per chunk
    (``prompt_chunks``), handing each receiver group's gradient to ``watch`` (the logits' last).
    ``input_embeddings`` [n_prompts, pos, n_input_senders, d_model] replace the input senders'
    outputs, ``fixed`` {sender: [n_prompts, pos, d_model]} replaces senders' outputs by constants
    (``record_run``). Returns the metric's value on every prompt's logits."""
    chunks = prompt_chunks(patcher)
    if len(chunks) == 1:  # every prompt in one pass: its metric is the value
        _, value = _chunk_pass(patcher, metric, watch, chunks[0], None, input_embeddings, fixed)
        return value
    reference = clean_logits(patcher)
    logits = [_chunk_pass(patcher, metric, watch, chunk, reference, input_embeddings, fixed)[0] for chunk in chunks]
    with torch.no_grad():
        return float(metric(torch.cat(logits)[None]).sum())


def _chunk_pass(
    patcher, metric, watch: ChunkSink, chunk: slice, reference: Tensor | None, input_embeddings, fixed
) -> tuple[Tensor, float]:
    """One chunk's forward and backward pass (``gradient_pass``); returns its logits, detached, and
    the metric's value on them beside ``reference``'s other rows."""
    g, spec = patcher.graph, patcher.spec
    positions = patcher.positions if patcher.positions.dim() == 1 else patcher.positions[chunk]
    chunk_fixed = None if fixed is None else {s: value[chunk] for s, value in fixed.items()}
    embeddings = None if input_embeddings is None else input_embeddings[chunk]

    def sink(receivers: Tensor, grad: Tensor) -> None:
        watch(receivers, grad, chunk)

    with torch.enable_grad():
        run = record_run(spec, g, patcher.groups, patcher.clean[chunk], embeddings, sink, chunk_fixed)
        final = select_positions(run.resid[g.shape.logits_read], positions)
        final_leaf = torch.zeros_like(final, requires_grad=True)
        logits = spec.unembed(final + final_leaf)
        every = logits if reference is None else torch.cat([reference[: chunk.start], logits, reference[chunk.stop :]])
        value = metric(every[None])
        _, final_grad = torch.autograd.grad(value.sum(), [run.anchor, final_leaf])
    n_chunk, n_pos = final.shape[0], patcher.clean.shape[1]
    logits_grad = torch.zeros(n_chunk, n_pos, spec.cfg.d_model, dtype=patcher.dtype, device=patcher.device)
    add_at_positions(logits_grad, positions, final_grad)
    watch(patcher.groups.logits, FactoredGradients.of_dense(logits_grad[None]), chunk)
    return logits.detach(), float(value.detach().sum())


def clean_logits(patcher: EdgePatcher) -> Tensor:
    """The full model's logits at the task's positions, [n_prompts, P, d_vocab], from the clean run."""
    with torch.no_grad():
        resid = patcher.clean_run.resid[patcher.graph.shape.logits_read]
        return patcher.spec.unembed(select_positions(resid, patcher.positions))


def sender_products(diff: Tensor, grads: Tensor, dtype: torch.dtype) -> Tensor:
    """diff [S, K] @ grads [R, K].T in ``dtype`` -> [S, R]; an operand in another dtype is
    converted a block of rows at a time (at most ``_PRODUCT_ELEMENTS`` elements each)."""
    if diff.dtype == dtype and grads.dtype == dtype:
        return diff @ grads.T
    grads = grads.to(dtype)
    rows = max(1, _PRODUCT_ELEMENTS // max(1, diff.shape[1]))
    return torch.cat([diff[i : i + rows].to(dtype) @ grads.T for i in range(0, len(diff), rows)])


def chunk_products(diff: Tensor, grads: Tensor, chunk: slice, dtype: torch.dtype) -> Tensor:
    """sum over the chunk's prompts, positions and d_model of diff [S, n_prompts, pos, d_model]
    (rows of the chunk's prompts) times grads [R, chunk, pos, d_model]: [S, R] in ``dtype``."""
    n_senders, n_receivers = diff.shape[0], grads.shape[0]
    if chunk.start == 0 and chunk.stop == diff.shape[1]:
        return sender_products(diff.reshape(n_senders, -1), grads.reshape(n_receivers, -1), dtype)
    return sum(
        sender_products(diff[:, prompt].reshape(n_senders, -1), grads[:, i].reshape(n_receivers, -1), dtype)
        for i, prompt in enumerate(range(chunk.start, chunk.stop))
    )


class _HeldTerms(NamedTuple):
    """A receiver group's rank-one terms (``FactoredGradients``) held for ``FactoredCorrections``."""

    receivers: Tensor  # [R']
    n_senders: int  # the senders before the group
    centre: Tensor | None  # [R', chunk, pos]
    along: Tensor  # [R', chunk, pos]
    standardized: Tensor  # [chunk, pos, d_model]


class FactoredCorrections:
    """The rank-one terms of factored gradients (``FactoredGradients``) that ``EdgePatcher.edge_scores``
    leaves out while the backward pass runs, added to the scores after it: for sender s and receiver
    r, -(diff_s . grad_r) gains sum over tokens t of centre_r[t] * sum_d diff_s[t] + along_r[t] *
    (diff_s[t] . standardized[t]). Every layer's dot products with the senders come from one batched
    product per chunk of prompts, which reads the senders' differences once."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, int], list[_HeldTerms]] = {}  # by chunk (start, stop)

    def hold(self, receivers: Tensor, n_senders: int, grad: FactoredGradients, chunk: slice) -> None:
        """Keep the rank-one terms of ``grad`` (receivers [R'], contracted with the first
        ``n_senders`` senders) for ``add_to``; gradients without them are not kept."""
        if grad.along is not None:
            terms = _HeldTerms(receivers, n_senders, grad.centre, grad.along, grad.standardized)
            self.held.setdefault((chunk.start, chunk.stop), []).append(terms)

    def add_to(self, scores: Tensor, diff: Tensor) -> None:
        """Add the held terms to scores [S, R] (in its dtype), with diff [S, n_prompts, pos, d_model]
        the senders' out_u - out*_u."""
        width, dtype = diff.shape[-1], scores.dtype
        for (start, stop), held in self.held.items():
            n_senders = max(terms.n_senders for terms in held)
            senders = diff[:n_senders, start:stop].reshape(n_senders, -1, width).transpose(0, 1)  # [T, S', d_model]
            standardized = [terms.standardized.reshape(-1, width) for terms in held]
            columns = torch.stack([*standardized, torch.ones_like(standardized[0])], dim=2)  # [T, d_model, Q + 1]
            dots = torch.bmm(senders, columns.to(diff.dtype)).to(dtype)  # [T, S', Q + 1]
            for q, (receivers, n, centre, along, _) in enumerate(held):  # _HeldTerms
                added = dots[:, :n, q].T @ along.reshape(len(receivers), -1).T.to(dtype)
                if centre is not None:
                    added += dots[:, :n, -1].T @ centre.reshape(len(receivers), -1).T.to(dtype)
                scores[:n, receivers] += added
        self.held.clear()
