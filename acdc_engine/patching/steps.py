"""The steps of a patched pass, one per kind of layer: attention, MLP, logits.

Each step reads its receivers' inputs from the ``PassState``, computes its senders' outputs with the
model's own components (``ModelSpec``) and records them. Work that is the same in every circuit of
the batch is done once; the rest per circuit. A layer's heads run as one batch of *head instances*
(each shared head once, each varying head once per circuit), their q/k/v gathered by one index
from a table of rows (ablated, all-removed input's, computed); the products inside are batched
over matrices whose shapes do not depend on the batch (``acdc_engine.architecture.attention``), and
the MLP and unembedding products run once per distinct input (``each_circuit``), so a circuit's
values are the same float bits alone and in a batch (the unembedding likewise, ``ModelSpec.unembed_each``).

Only the logits read the top layer's outputs, so with logits at some positions only, the top
layer's queries, MLP and outputs are computed at those positions (``PassState.positions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from acdc_engine.core.graph import Graph, mlp_name
from acdc_engine.patching.baseline import ReceiverGroups, first_head_sender
from acdc_engine.patching.pass_state import PassState, ReceiverInputs, distinct, each_circuit, on_device, row_keys

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec


def attention_layer(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState, layer: int, keep: np.ndarray) -> None:
    """Layer ``layer``'s heads for every circuit; ``keep`` [C, 3, n_heads] (bool): the head inputs
    kept (q, k, v)."""
    n_heads = graph.shape.n_heads
    n_circuits = state.n_circuits
    read_at = graph.shape.attention_reads(layer)
    receivers = groups.qkv[layer]
    head_varies = (state.receiver_varies(receivers, read_at).reshape(3, n_heads) | (keep != keep[0]).any(0)).any(0)  # [H]
    if spec.cfg.post_norms and head_varies.any():
        head_varies[:] = True  # the post-attention norm's scale couples the layer's heads
    first = first_head_sender(graph, layer)
    at_positions = is_top_at_positions(graph, state, layer)
    # a head computed alike in every circuit is taken from the patcher's cache when everything it
    # reads is as it was (``PassState.sender_key``)
    cached, keys = {}, {}
    if not spec.cfg.post_norms:
        for head in (~head_varies).nonzero()[0].tolist():
            key = state.sender_key(receivers[head::n_heads], read_at, keep[0, :, head])
            hit = None if key is None else state.cache.lookup((layer, first + head), key)
            if hit is not None:
                cached[head] = hit
            elif key is not None:
                keys[head] = key
    if cached:
        diffs = torch.stack([diff for _, diff in cached.values()])
        state.record_shared(first + np.array(list(cached)), diffs, as_diff=True, at_positions=at_positions)
        state.sender_ids.update({first + head: sender_id for head, (sender_id, _) in cached.items()})
    computed_heads = np.array([h for h in range(n_heads) if h not in cached], dtype=np.int64)
    if not len(computed_heads):
        return
    shared_heads = computed_heads[~head_varies[computed_heads]]
    varying_heads = head_varies.nonzero()[0]
    results, instance_version = head_instances(spec, state, layer, read_at, receivers, keep, shared_heads, varying_heads, at_positions)
    n_shared, n_varying = len(shared_heads), len(varying_heads)
    if n_shared:
        diffs = state.record_shared(first + shared_heads, results[:n_shared], at_positions=at_positions)
        for i, head in enumerate(shared_heads.tolist()):
            if head in keys:
                state.sender_ids[first + head] = state.cache.store((layer, first + head), keys[head], diffs[i])
    if n_varying:
        merged = instance_version is not None
        rows = (np.array(instance_version) if merged else np.arange(n_circuits * n_varying)).reshape(n_circuits, n_varying)
        state.record_circuits(first + varying_heads, results[n_shared:], rows, rows + 1 if merged else None, at_positions=at_positions)


def head_instances(
    spec: ModelSpec,
    state: PassState,
    layer: int,
    read_at: int,
    receivers: np.ndarray,
    keep: np.ndarray,
    shared_heads: np.ndarray,
    varying_heads: np.ndarray,
    at_positions: bool,
) -> tuple[Tensor, list[int] | None]:
    """The results of ``layer``'s head instances: each shared head once, then each varying head
    once per circuit (circuit-major), those with the same head and the same q/k/v rows computed
    once (not with a post-attention norm, which couples a circuit's heads).

    Returns (results [n_shared + V, n_prompts, pos, d_model] (pos: P with ``at_positions``) of
    the shared heads then the V distinct varying instances, and for each varying instance the
    index of its distinct one among the V; None when they were not merged (then V = C * n_varying)).
    """
    n_shared, n_circuits = len(shared_heads), state.n_circuits
    computed_heads = np.sort(np.concatenate([shared_heads, varying_heads]))
    # q, k, v of every head instance (with queries at the logits' positions, the q rows are
    # computed there only where that saves enough, ``PassState.split_queries``; else at every
    # position and then taken there)
    split = at_positions and state.split_queries
    sources = [(kinds, qkv_sources(spec, state, layer, read_at, receivers, kinds, computed_heads, keep, split))
               for kinds in (((0,), (1, 2)) if split else ((0, 1, 2),))]
    rows = np.concatenate([
        np.concatenate([source.rows[:, 0][:, shared_heads], source.rows[:, :, varying_heads].reshape(len(kinds), -1)], axis=1)
        for kinds, source in sources
    ])  # [3, I]: each instance's table rows, q/k/v
    instance_heads = np.concatenate([shared_heads, *[varying_heads] * n_circuits])
    firsts, instance_version = list(range(len(instance_heads))), None
    if len(varying_heads) and not spec.cfg.post_norms:
        keys = list(zip(instance_heads[n_shared:].tolist(), row_keys(rows[:, n_shared:].T)))  # (head, its q/k/v rows)
        varying_firsts, instance_version = distinct(keys)
        firsts = list(range(n_shared)) + [n_shared + i for i in varying_firsts]
    qkv: list[Tensor] = []
    for (kinds, source), kind_rows in zip(sources, np.split(rows[:, firsts], [1] if split else [])):
        gathered = source.table.index_select(0, on_device(kind_rows.ravel(), state.device))  # [kinds * I', ...]
        qkv += gathered.view(len(kinds), -1, *source.value_shape).unbind(0)
    if at_positions and not split:
        qkv[0] = qkv[0].index_select(2, state.positions)
    query_positions = state.positions if at_positions else None
    heads = on_device(instance_heads[firsts], state.device)
    results = spec.head_results(layer, qkv[0], qkv[1], qkv[2], heads, query_positions)  # [I', n, pos, d_model]
    if spec.cfg.post_norms:  # every head shared, or every head varying
        per_layer = results.view(-1, spec.cfg.n_heads, *results.shape[1:])
        results = spec.attention_out(layer, per_layer.movedim(1, -2)).movedim(-2, 1).reshape(results.shape)
    return results, instance_version
def is_top_at_positions(graph: Graph, state: PassState, layer: int) -> bool:
    """Whether ``layer`` is computed at the logits' positions only."""
    return state.positions is not None and layer == graph.shape.n_layers - 1


@dataclass
class QkvSources:
    """Where a group of q/k/v kinds of a layer's heads is read from: ``table`` [rows, n_prompts *
    pos * d_head] (the ablated values, the all-removed input's, then those computed in this
    pass), ``rows`` [kinds, C, n_heads] (numpy) the table row of each kind, circuit and head,
    and ``value_shape`` (n_prompts, pos, d_head) of a row."""

    table: Tensor
    rows: np.ndarray
    value_shape: tuple[int, int, int]


def qkv_sources(
    spec: ModelSpec,
    state: PassState,
    layer: int,
    read_at: int,
    receivers: np.ndarray,
    kinds: tuple[int, ...],
    heads: np.ndarray,
    keep: np.ndarray,
    top_at_positions: bool,
) -> QkvSources:
    """The q/k/v ``kinds`` (0, 1, 2 = q, k, v) of ``heads`` of ``layer`` (``receivers``: the
    layer's receiver indices, reading at ``read_at``); with ``top_at_positions`` the q rows are
    at the logits' positions, the k and v rows at every position."""
    n_heads = keep.shape[2]
    n_kinds = len(kinds)
    n_group = n_kinds * n_heads  # the group's receivers, kind-major, as its table numbers them
    n_prompts, n_pos = state.row_shape[:2]
    at_positions = top_at_positions and kinds == (0,)
    if top_at_positions:
        rows_at = state.at_positions.rows
        base_table = rows_at.q_table[layer] if at_positions else rows_at.kv_table[layer]
        n_pos = len(state.positions) if at_positions else n_pos
    else:
        base_table = state.baseline.qkv_table[layer]
    table = base_table
    in_group = np.concatenate([heads + j * n_heads for j in range(n_kinds)])
    in_layer = np.concatenate([heads + kind * n_heads for kind in kinds])  # as ``ModelSpec.qkv`` numbers them
    inputs = state.inputs(receivers[in_layer], read_at, at_positions)
    n_circuits = state.n_circuits
    every = np.arange(n_group)
    from_input = np.repeat((n_group + every)[None], n_circuits, axis=0)  # [C, group]: the all-removed input's rows
    if inputs.pair_value is not None:  # some receiver keeps an edge
        computed, pair_row = qkv_pairs_kept(spec, state, layer, inputs, in_layer[inputs.pair_receiver].tolist(), at_positions)
        table = state.scratch_table((layer, kinds), base_table, computed)  # computed: pairs of [n_prompts * pos, d_head]
        # slots (``ReceiverInputs``): the active receivers, then the varying ones circuit by circuit
        slot_row = 2 * n_group + np.array(pair_row)[inputs.slot_pair]
        n_active, n_varies = inputs.n_active, inputs.n_varies
        from_input[:, in_group[inputs.active]] = slot_row[:n_active]
        from_input[:, in_group[inputs.varies]] = slot_row[n_active:].reshape(n_circuits, n_varies)
    kept = keep[:, list(kinds)].reshape(n_circuits, n_group)
    rows = np.where(kept, from_input, every).reshape(n_circuits, n_kinds, n_heads).transpose(1, 0, 2)
    return QkvSources(table, rows, (n_prompts, n_pos, table.shape[1] // (n_prompts * n_pos)))


def qkv_pairs_kept(
    spec: ModelSpec, state: PassState, layer: int, inputs: ReceiverInputs, receivers: list[int], at_positions: bool
) -> tuple[Tensor | list[Tensor], list[int]]:
    """``ModelSpec.qkv_pairs`` of ``inputs``' pairs (``receivers``: each pair's receiver as the
    layer numbers them): (q/k/v [Q, n_prompts * pos, d_head], or Q rows [n_prompts * pos, d_head]
    in pair order, the row of each pair). Where the
    values read fixed senders only (``ReceiverInputs.value_rows``), a pair's rows are determined
    by its layer, receiver, positions and mask row: they are kept between passes
    (``PassCache.rows``) and only the pairs not kept are computed, the same float bits (each input
    is normed alone, each pair projected as one matrix of a batch)."""
    if inputs.value_rows is None:
        return spec.qkv_pairs(layer, inputs.values.flatten(1, 2), receivers, inputs.pair_value)
    kept = state.cache.rows
    keys = [("qkv", layer, at_positions, r, inputs.value_rows[u].tobytes()) for r, u in zip(receivers, inputs.pair_value)]
    pairs = [kept.get(key) for key in keys]
    missing = [p for p, row in enumerate(pairs) if row is None]
    if missing:
        used = list(dict.fromkeys(inputs.pair_value[p] for p in missing))  # numbered as first read, as qkv_pairs expects
        where = {u: i for i, u in enumerate(used)}
        values = inputs.values_of(np.array(used)).flatten(1, 2)
        computed, row = spec.qkv_pairs(layer, values, [receivers[p] for p in missing], [where[inputs.pair_value[p]] for p in missing])
        for i, p in enumerate(missing):
            pairs[p] = computed[row[i]]
            state.cache.keep_row(keys[p], pairs[p])
        if len(missing) == len(pairs):
            return computed, row
    return pairs, list(range(len(pairs)))


def mlp_layer(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState, layer: int) -> None:
    """Layer ``layer``'s MLP for every circuit."""
    at_positions = is_top_at_positions(graph, state, layer)
    inputs = state.inputs(groups.mlp[layer], graph.shape.mlp_reads(layer), at_positions)
    sender = np.array([graph.sender_index[mlp_name(layer)]])
    if inputs.n_varies:
        outputs = each_circuit(lambda x: spec.mlp(layer, x), inputs.values)  # [U, ...]: one per value
        # the group's one receiver varies: one slot per circuit, whose pair is its value
        slot_value = inputs.slot_pair[:, None]
        state.record_circuits(sender, outputs, slot_value, slot_value + 1, at_positions=at_positions)
        return
    key = state.sender_key(groups.mlp[layer], graph.shape.mlp_reads(layer), np.zeros(0, dtype=bool))
    hit = None if key is None else state.cache.lookup((layer, int(sender[0])), key)
    if hit is not None:
        state.record_shared(sender, hit[1][None], as_diff=True, at_positions=at_positions)
        state.sender_ids[int(sender[0])] = hit[0]
        return
    if inputs.n_active:
        outputs = spec.mlp(layer, inputs.values[0])
    else:
        outputs = (state.at_positions.rows if at_positions else state.baseline).ablated_input_mlp_out[layer]
    diff = state.record_shared(sender, outputs[None], at_positions=at_positions)
    if key is not None:
        state.sender_ids[int(sender[0])] = state.cache.store((layer, int(sender[0])), key, diff[0])


def logits_at(spec: ModelSpec, graph: Graph, groups: ReceiverGroups, state: PassState) -> Tensor:
    """Logits [C, n_prompts, P, d_vocab] at the logits' positions."""
    read_at = graph.shape.logits_read
    inputs = state.inputs(groups.logits, read_at, at_positions=True)
    if inputs.n_varies:
        return inputs.per_slot(spec.unembed_each(inputs.values))
    final = inputs.values if inputs.n_active else state.at_positions.rows.ablated_input[read_at][None]
    return spec.unembed_each(final).expand(state.n_circuits, -1, -1, -1)
