"""The state of one patched pass over C circuits: the senders' outputs so far, and receivers' inputs.

For receiver v with edge mask m_uv (1 = in the circuit) the patching rule (docs/design.md) is

    in_v = A_v + sum_u m_uv * (out_u - out_u*)

where A_v is v's input with every incoming edge removed (``Baseline.ablated_input``), out_u is sender
u's output in this pass and out_u* what a removed edge carries. Senders written before the pass's
start layer take their clean outputs (the *fixed* senders); the others are recorded as the pass
computes them, once for the batch when they are the same in every circuit, else per circuit.

Sender differences are held sender-major (one row of n_prompts * pos * d_model values per sender),
so the masked sums of a group of receivers are one matrix product: mask rows [R, senders] times
sender rows. Every receiver's input is summed in one order, (fixed senders' product + A_v) + this
pass's senders' product, with the same product shapes (one row per input, all the fixed senders,
then all this pass's senders before the read point) whichever path computes it, so a circuit's
input does not depend on the batch it is in. Receivers with the same mask row over the same sender
rows have the same input: it is computed once. Each sender's row has a *version* per circuit (equal
versions: the same float bits), so varying receivers of different circuits that keep the same
senders at the same versions share their input too.

The masks are analysed on the CPU as numpy arrays (they are small, and branching on them needs
their values); only the mask rows a product needs go to the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from acdc_engine.architecture.attention import batch_matmul
from acdc_engine.patching.baseline import Baseline

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
"""The numpy dtype of the float dtypes whose masks are made on the CPU by numpy (``PassState.device_mask``)."""

SPLIT_QUERIES_FROM = 2**17
"""Values (n_prompts x positions not read x d_model) from which the top layer's q receivers are
worth computing at the logits' positions only, in products of their own (below, the extra
products cost more than the rows they save)."""


@dataclass
class ReceiverInputs:
    """The inputs of a group of R receivers for a batch of C circuits (index arrays are numpy).

    varies [R] bool: the receiver's input differs between circuits.
    active [R] bool: the same in every circuit and not the all-removed input. The remaining
        receivers keep no edge: their input is the all-removed input, whose downstream values are
        precomputed (``Baseline``).
    The *slots* are the active receivers (in receiver order), then each circuit's varying receivers
    (circuit-major): Ra + C * Rv of them. Slots with the same mask row over the same sender rows
    (for varying receivers: the same versions of the senders they keep, ``PassState.versions``)
    have the same input, computed once as one *value*; slots of the same receiver and value are
    one *pair* (their q/k/v are the same).
    values [U, n_prompts, P, d_model] or None: the distinct inputs (None when no receiver keeps
        an edge). Where every sender they read is fixed they are computed when first read, or only
        some of them (``values_of``).
    pair_receiver, pair_value [Q]: each pair's receiver (its position in the group) and value.
    slot_pair [Ra + C * Rv]: the pair of each slot.
    value_rows [U, senders] bool or None: each value's mask row, when every sender the values
        read is fixed (then a value is determined by its row and read point alone); else None.
    """

    varies: np.ndarray
    active: np.ndarray
    computed: Tensor | None = None
    pair_receiver: np.ndarray | None = None
    pair_value: list[int] | None = None
    slot_pair: np.ndarray | None = None
    value_rows: np.ndarray | None = None
    compute: Callable[[np.ndarray], Tensor] | None = None  # value indices [k] -> those values, when not computed

    @cached_property
    def n_active(self) -> int:
        return int(self.active.sum())

    @cached_property
    def n_varies(self) -> int:
        return int(self.varies.sum())

    @property
    def values(self) -> Tensor | None:
        if self.computed is None and self.compute is not None:
            self.computed = self.compute(np.arange(len(self.value_rows)))
        return self.computed

    def values_of(self, which: np.ndarray) -> Tensor:
        """Values ``which`` [k] (indices), [k, n_prompts, P, d_model]: the same float bits as in
        ``values``, computed alone when ``values`` has not been."""
        if self.computed is None and self.compute is not None and len(which) < len(self.value_rows):
            return self.compute(which)
        values = self.values
        return rows_of(values, which)

    def per_slot(self, per_value: Tensor) -> Tensor:
        """Rows [U, ...], one per value, as rows [slots, ...] (for groups of one receiver, whose
        pairs are its values)."""
        if len(self.slot_pair) == len(per_value):  # every slot has its own value
            return per_value
        return per_value.index_select(0, on_device(self.slot_pair, per_value.device))


def row_keys(array: np.ndarray) -> list[bytes]:
    """Each row of a 2-d array [n, m] as bytes (equal rows: equal bytes)."""
    data, width = np.ascontiguousarray(array).tobytes(), array.shape[1] * array.itemsize
    if not width:
        return [b""] * len(array)
    return [data[start : start + width] for start in range(0, len(data), width)]


def distinct(keys: list) -> tuple[list[int], list[int]]:
    """(first, inverse): the index of each distinct key's first occurrence, in order, and for
    every key the position of its key in ``first``."""
    first: list[int] = []
    seen: dict = {}
    inverse = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        inverse.append(seen[key])
    return first, inverse


class SenderRows:
    """One pass's sender rows (out_u - out_u*) at one set of positions: the fixed senders' (the
    baseline's) and this pass's, recorded as they are computed. ``shared`` [S_new, n_prompts, P,
    d_model] holds those equal in every circuit (zero where one varies); ``circuit`` [S_new, C,
    n_prompts, P, d_model], made at the first varying sender, holds every sender per circuit
    (sender-major: a sender's rows of every circuit are one block, so circuit c's rows are the
    strided slice ``circuit[:, c]``).

    ``rows`` is a ``Baseline`` or its ``PositionRows``: its ``sender_diff``, ``ablated_out`` and
    ``ablated_input`` are read.
    """

    def __init__(self, rows: Any, n_fixed: int, n_circuits: int, buffer: Tensor, scratch: dict, circuit_key: str) -> None:
        self.rows = rows
        self.n_circuits = n_circuits
        self.fixed = rows.sender_diff[:n_fixed]
        # ``buffer`` is kept between passes: every slot a pass reads it writes first (a varying
        # sender's shared row as zeros), so stale rows are never read; likewise ``circuit``
        # (``grown_buffer`` under ``circuit_key`` in ``scratch``)
        self.shared = buffer[: rows.sender_diff.shape[0] - n_fixed]
        self.scratch, self.circuit_key = scratch, circuit_key
        self.circuit: Tensor | None = None
        self.n_written = 0  # slots [0, n_written) of ``shared`` may hold recorded senders

    def record_shared(self, slots: np.ndarray, diff: Tensor) -> None:
        """Senders at ``slots`` [k] (ascending) with ``diff`` [k, ...], the same in every circuit."""
        write_rows(self.shared, slots, diff)
        if self.circuit is not None:
            write_rows(self.circuit, slots, diff[:, None].expand(-1, self.n_circuits, *diff.shape[1:]))
        self.n_written = max(self.n_written, int(slots[-1]) + 1)

    def record_circuits(self, slots: np.ndarray, distinct_diff: Tensor, rows: np.ndarray) -> None:
        """Senders at ``slots`` [k] (ascending) varying between circuits: circuit c's diff of
        sender j is ``distinct_diff[rows[c, j]]``."""
        if self.circuit is None:
            shape = (self.shared.shape[0], self.n_circuits, *self.shared.shape[1:])
            self.circuit = grown_buffer(self.scratch, self.circuit_key, shape, self.shared.dtype, self.shared.device)
            self.circuit[: self.n_written] = self.shared[: self.n_written, None]
        device = distinct_diff.device
        run = as_slice(slots)
        if run is not None:  # one block [k, C, ...], sender-major
            block = self.circuit[run].view(-1, *distinct_diff.shape[1:])
            torch.index_select(distinct_diff, 0, on_device(rows.T.ravel(), device), out=block)
        else:
            for j, slot in enumerate(slots.tolist()):
                torch.index_select(distinct_diff, 0, on_device(rows[:, j], device), out=self.circuit[slot])
        write_rows(self.shared, slots, None)
        self.n_written = max(self.n_written, int(slots[-1]) + 1)


ROWS_KEPT_ELEMENTS = 2**23
"""The most elements ``PassCache.rows`` keeps (32 MiB in float32)."""

BUFFER_KEPT_ELEMENTS = 2**23
"""The most elements a buffer of per-circuit sender rows may hold to be kept between passes
(``grown_buffer``; larger ones are made anew for each pass)."""


class PassCache:
    """What a patcher keeps between passes.

    outputs: {(layer, sender): (key, id, out - out*)}: the last output of each sender computed
        alike in every circuit of a pass, under the key of everything it was computed from
        (``PassState.sender_key``); ``id`` names that output in the keys of the senders that read it.
    scratch: buffers reused between passes (``PassState.buffer``, ``PassState.scratch_table``).
    rows: {key: tensor}: values computed from fixed senders only, under a key of everything they
        are computed from (``steps.qkv_pairs_kept`` keeps q/k/v rows there); at most
        ``ROWS_KEPT_ELEMENTS`` elements, emptied when full.
    """

    def __init__(self) -> None:
        self.outputs: dict[tuple[int, int], tuple[tuple, int, Tensor]] = {}
        self.scratch: dict = {}
        self.next_id = 0
        self.rows: dict[tuple, Tensor] = {}
        self.rows_elements = 0

    def keep_row(self, key: tuple, row: Tensor) -> None:
        """Keep ``row`` under ``key`` in ``rows`` (emptying ``rows`` first when it would exceed
        ``ROWS_KEPT_ELEMENTS``)."""
        if self.rows_elements + row.numel() > ROWS_KEPT_ELEMENTS:
            self.rows.clear()
            self.rows_elements = 0
        self.rows[key] = row
        self.rows_elements += row.numel()

    def lookup(self, place: tuple[int, int], key: tuple) -> tuple[int, Tensor] | None:
        """(id, out - out*) of the output at ``place`` computed from ``key``, if it is the one kept."""
        kept = self.outputs.get(place)
        return (kept[1], kept[2]) if kept is not None and kept[0] == key else None

    def store(self, place: tuple[int, int], key: tuple, diff: Tensor) -> int:
        """Keep ``diff``, computed from ``key``, for ``place``; returns its new id."""
        self.next_id += 1
        self.outputs[place] = (key, self.next_id, diff)
        return self.next_id


class PassState:
    """Senders' outputs of one patched pass (as out_u - out_u*), and receivers' inputs from them.

    Args:
        baseline: the patcher's precomputed runs.
        kept: edge masks [C, n_senders, n_receivers], a numpy bool array (True = in the circuit).
        start_layer: the layer the pass starts at; the senders written before it (a prefix,
            ``n_fixed`` of them) take their clean outputs.
        dtype: the pass's float dtype (the masks' in the products).
        cache: the patcher's ``PassCache``: outputs of senders computed alike in every circuit are
            taken from it when everything they are computed from is as it was (``sender_key``).
        positions: the logits' positions [P] on the device, or None when they are every position.
            Then the top layer is computed at them only (its queries, MLP and outputs: only the
            logits read them), and every sender's row is also kept at them (``at_positions``);
            ``split_queries``: its q receivers' inputs too.
    """

    def __init__(
        self,
        baseline: Baseline,
        kept: np.ndarray,
        start_layer: int,
        n_fixed: int,
        dtype: torch.dtype,
        cache: PassCache,
        positions: Tensor | None,
    ) -> None:
        self.baseline = baseline
        self.start_layer = start_layer
        self.cache = cache
        self.scratch = cache.scratch
        self.sender_ids: dict[int, int] = {}  # this pass's shared senders: the id of their output
        self.kept = kept
        self.n_circuits = kept.shape[0]
        self.n_fixed = n_fixed
        self.dtype = dtype
        self.numpy_dtype = NUMPY_DTYPES.get(dtype)
        self.device = baseline.sender_diff.device
        self.positions = positions
        self.full = SenderRows(baseline, n_fixed, self.n_circuits, self.buffer("shared", baseline.sender_diff), self.scratch, "circuit")
        if positions is None:
            self.at_positions = self.full
        else:
            rows = baseline.at_positions(positions)
            shared = self.buffer("shared at positions", rows.sender_diff)
            self.at_positions = SenderRows(rows, n_fixed, self.n_circuits, shared, self.scratch, "circuit at positions")
        n_prompts, n_pos, d_model = self.row_shape
        self.split_queries = positions is not None and n_prompts * (n_pos - len(positions)) * d_model >= SPLIT_QUERIES_FROM
        self.varying = np.zeros(baseline.sender_diff.shape[0], dtype=bool)
        self.any_varying = False
        # [C, n_senders]: the version of each sender's row in each circuit (0: the row every
        # circuit shares, or a fixed sender's); equal versions are the same float bits
        self.versions = np.zeros((self.n_circuits, baseline.sender_diff.shape[0]), dtype=np.int64)

    @property
    def row_shape(self) -> torch.Size:
        """[n_prompts, pos, d_model] of a full row."""
        return self.baseline.sender_diff.shape[1:]

    def receiver_varies(self, receivers: np.ndarray, read_at: int) -> np.ndarray:
        """[R] bool: whether each of ``receivers`` gets a different input in some circuit (its
        mask column differs between circuits, or it keeps an edge from a sender that does)."""
        column = self.kept[:, : self.baseline.senders_before[read_at], receivers]  # [C, s, R]
        varies = (column != column[0]).any((0, 1))
        if self.any_varying:
            varies |= column[:, self.varying[: column.shape[1]]].any((0, 1))
        return varies

    def sender_key(self, receivers: np.ndarray, read_at: int, kept_inputs: np.ndarray) -> tuple | None:
        """What the output of a sender computed alike in every circuit depends on: the start layer
        (which senders are clean), its receivers' (indices) mask columns, the ids of this pass's
        senders they keep (``sender_ids``), and its kept head inputs; None if one of those senders
        has no id (it was not computed alike in every circuit)."""
        column = self.kept[0][: self.baseline.senders_before[read_at], receivers]  # [s, R]
        read = column[self.n_fixed :].any(1).nonzero()[0] + self.n_fixed
        ids = []
        for sender in read.tolist():
            if sender not in self.sender_ids:
                return None
            ids.append(self.sender_ids[sender])
        return (self.start_layer, column.tobytes(), kept_inputs.tobytes(), tuple(ids))

    def buffer(self, key: str, like: Tensor) -> Tensor:
        """An uninitialised tensor shaped like ``like``, kept between passes under ``key``."""
        buffer = self.scratch.get(key)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self.scratch[key] = torch.empty_like(like)
        return buffer

    def scratch_table(self, key: tuple, base: Tensor, extra: Tensor | list[Tensor]) -> Tensor:
        """``torch.cat([base, extra])`` for k extra rows of N elements (``extra`` [k, ...] or a list of k),
        built in a buffer kept between passes (under ``key`` in ``scratch``) that holds ``base``
        already: only ``extra`` is copied."""
        buffer = self.scratch.get(key)
        n_base, n_rows = len(base), len(base) + len(extra)
        if buffer is None or len(buffer) < n_rows or buffer.dtype != base.dtype or buffer.device != base.device:
            buffer = base.new_empty((max(n_rows, 2 * n_base), base.shape[1]))
            buffer[:n_base] = base
            self.scratch[key] = buffer
        if isinstance(extra, list):
            torch.stack([row.reshape(-1) for row in extra], out=buffer[n_base:n_rows])
        else:
            buffer[n_base:n_rows] = extra.reshape(len(extra), -1)
        return buffer[:n_rows]

    def device_mask(self, mask: np.ndarray) -> Tensor:
        """A bool mask as the pass's float dtype on its device."""
        if self.numpy_dtype is None:
            return on_device(mask, self.device).to(self.dtype)
        return on_device(mask.astype(self.numpy_dtype), self.device)

    def inputs(self, receivers: np.ndarray, read_at: int, at_positions: bool = False) -> ReceiverInputs:
        """The inputs of ``receivers`` (indices [R]) reading at ``read_at``, at every position or
        (``at_positions``) at the logits' positions."""
        n_before = self.baseline.senders_before[read_at]
        n_fixed, n_circuits = self.n_fixed, self.n_circuits
        n_new = n_before - n_fixed
        column = self.kept[:, :n_before, receivers]  # [C, s, R]
        first = column[0]
        varies = self.receiver_varies(receivers, read_at)
        active = first.any(0) & ~varies
        n_active, n_varies = int(active.sum()), int(varies.sum())
        if not n_active + n_varies:
            return ReceiverInputs(varies, active)
        mask = np.concatenate([first[:, active].T, column[:, :, varies].transpose(0, 2, 1).reshape(n_circuits * n_varies, n_before)])
        varying = varies.nonzero()[0]
        slot_receiver = np.concatenate([active.nonzero()[0], *[varying] * n_circuits])
        # slots whose rows read only shared sender rows: one value per distinct mask row (the
        # others read their circuit's sender rows: a value each)
        sender_rows = self.at_positions if at_positions else self.full
        per_circuit = sender_rows.circuit is not None and n_varies > 0 and n_new > 0
        n_shared_slots = n_active if per_circuit else len(mask)
        firsts, slot_value = distinct(row_keys(mask[:n_shared_slots]))
        n_distinct = len(firsts)
        circuit_firsts: list[int] = []
        if per_circuit:  # one value per distinct (mask row, versions of the senders it keeps)
            circuit_mask = mask[n_shared_slots:]
            kept_versions = self.versions[:, n_fixed:n_before].repeat(n_varies, axis=0) * circuit_mask[:, n_fixed:]
            circuit_firsts, circuit_value = distinct([row + v for row, v in zip(row_keys(circuit_mask), row_keys(kept_versions))])
            slot_value += [n_distinct + value for value in circuit_value]
            mask = np.concatenate([mask[firsts], circuit_mask[circuit_firsts]])
        elif n_distinct < n_shared_slots:
            mask = mask[firsts]
        pair_slots, slot_pair = distinct(list(zip(slot_receiver.tolist(), slot_value)))
        pairs = (slot_receiver[pair_slots], [slot_value[i] for i in pair_slots], np.array(slot_pair))
        base = sender_rows.rows.ablated_input[read_at]
        if not n_new:  # fixed senders only: the values are computed when read, only those read
            return ReceiverInputs(varies, active, None, *pairs, mask, lambda which: self.fixed_values(mask[which], base, sender_rows))
        rows = self.fixed_values(mask, base, sender_rows).flatten(1)
        new_mask = self.device_mask(mask[:, n_fixed:])
        shared = sender_rows.shared[:n_new].reshape(n_new, -1)
        if not per_circuit:
            rows += mask_rows(new_mask, shared)
        else:
            if n_distinct:
                rows[:n_distinct] += mask_rows(new_mask[:n_distinct], shared)
            self.circuit_values(new_mask[n_distinct:], np.array(circuit_firsts) // n_varies, sender_rows, rows[n_distinct:])
        return ReceiverInputs(varies, active, rows.view(-1, *base.shape), *pairs)

    def circuit_values(self, mask: Tensor, value_circuit: np.ndarray, sender_rows: SenderRows, out: Tensor) -> None:
        """Add to ``out`` [V, N] this pass's senders' rows weighted by ``mask`` [V, n_new] (device),
        value v read in its circuit ``value_circuit[v]`` (ascending): one batch of products
        (``mask_rows``), circuit c's values (padded with zero rows to the most any circuit has)
        times its own sender rows, so a value's float bits do not depend on the other circuits."""
        n_circuits, n_new = self.n_circuits, mask.shape[1]
        counts = np.bincount(value_circuit, minlength=n_circuits)
        width = int(counts.max())
        circuit_rows = sender_rows.circuit[:n_new].transpose(0, 1).reshape(n_circuits, n_new, -1)  # [C, n_new, N], strided
        if (counts == width).all():  # as many values in every circuit: no padding
            out.view(n_circuits, width, -1).add_(mask_rows(mask.view(n_circuits, width, n_new), circuit_rows))
            return
        place = on_device(value_circuit * width + np.arange(len(value_circuit)) - np.repeat(np.cumsum(counts) - counts, counts), self.device)
        padded = mask.new_zeros((n_circuits * width, n_new))
        padded[place] = mask
        products = mask_rows(padded.view(n_circuits, width, n_new), circuit_rows)
        out.add_(products.reshape(n_circuits * width, -1).index_select(0, place))

    def fixed_values(self, mask: np.ndarray, base: Tensor, sender_rows: SenderRows) -> Tensor:
        """base + the fixed senders' rows weighted by ``mask`` [U, >= n_fixed] (its first
        n_fixed columns), [U, *base.shape]: one product, the same float bits for a row whatever
        the other rows (``mask_rows``)."""
        n_fixed = self.n_fixed
        rows = mask_rows(self.device_mask(mask[:, :n_fixed]), sender_rows.fixed.reshape(n_fixed, -1))
        rows += base.reshape(-1)
        return rows.view(-1, *base.shape)

    def record_shared(self, senders: np.ndarray, outputs: Tensor, as_diff: bool = False, at_positions: bool = False) -> Tensor:
        """Record senders (indices [k]) whose outputs [k, n_prompts, pos, d_model] are the same
        in every circuit; ``as_diff``: given as out - out*; ``at_positions``: computed at the
        logits' positions only ([k, n_prompts, P, d_model]). Returns out - out*."""
        sender_rows = self.at_positions if at_positions else self.full
        diff = outputs if as_diff else outputs - rows_of(sender_rows.rows.ablated_out, senders)
        slots = senders - self.n_fixed
        sender_rows.record_shared(slots, diff)
        if not at_positions and self.at_positions is not self.full:
            self.at_positions.record_shared(slots, diff.index_select(2, self.positions))
        return diff

    def record_circuits(
        self, senders: np.ndarray, outputs: Tensor, rows: np.ndarray, versions: np.ndarray | None = None, at_positions: bool = False
    ) -> None:
        """Record senders (indices [k]) whose outputs differ between circuits, from their distinct
        outputs [V, n_prompts, pos, d_model] (pos: P with ``at_positions``, as ``record_shared``):
        circuit c's output of sender j is ``outputs[rows[c, j]]`` (``rows`` [C, k] ints; each
        distinct output is differenced once). ``versions`` [C, k] (ints > 0): equal where two
        circuits' outputs of a sender are the same float bits (default: every circuit its own)."""
        n_circuits, n_senders = self.n_circuits, len(senders)
        if versions is None:
            versions = np.arange(1, n_circuits + 1)[:, None].repeat(n_senders, axis=1)
        self.versions[:, senders] = versions
        sender_rows = self.at_positions if at_positions else self.full
        ablated = sender_rows.rows.ablated_out
        if len(outputs) == n_circuits * n_senders and as_slice(rows.ravel()) == slice(0, len(outputs)):  # each its own
            distinct_diff = (outputs.view(n_circuits, n_senders, *outputs.shape[1:]) - rows_of(ablated, senders)).flatten(0, 1)
        else:
            row_sender = np.zeros(len(outputs), dtype=np.int64)
            row_sender[rows] = senders  # the sender of each distinct output
            distinct_diff = outputs - rows_of(ablated, row_sender)
        slots = senders - self.n_fixed
        sender_rows.record_circuits(slots, distinct_diff, rows)
        if not at_positions and self.at_positions is not self.full:
            self.at_positions.record_circuits(slots, distinct_diff.index_select(2, self.positions), rows)
        self.varying[senders] = True
        self.any_varying = True


def grown_buffer(scratch: dict, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised contiguous tensor of ``shape``: the start of a flat buffer kept between
    passes in ``scratch`` under ``key`` (grown to the most elements asked for) when ``shape`` holds
    at most ``BUFFER_KEPT_ELEMENTS`` elements, else a new tensor."""
    n_elements = math.prod(shape)
    if n_elements > BUFFER_KEPT_ELEMENTS:
        return torch.empty(shape, dtype=dtype, device=device)
    buffer = scratch.get(key)
    if buffer is None or len(buffer) < n_elements or buffer.dtype != dtype or buffer.device != device:
        buffer = scratch[key] = torch.empty(n_elements, dtype=dtype, device=device)
    return buffer[:n_elements].view(shape)


def write_rows(table: Tensor, index: np.ndarray, rows: Tensor | None) -> None:
    """``table[index] = rows`` (zeros where ``rows`` is None) for a small ascending index array
    [k]: a slice when the index is a run of consecutive rows."""
    run = as_slice(index)
    if run is not None:
        target = table[run]
        if rows is None:
            target.zero_()
        else:
            target.copy_(rows)
    elif rows is None:
        table.index_fill_(0, on_device(index, table.device), 0)
    else:
        table.index_copy_(0, on_device(index, table.device), rows)


def rows_of(table: Tensor, index: np.ndarray) -> Tensor:
    """``table[index]`` for a small index array [k]: a view when the index is a run of
    consecutive rows, else a copy."""
    run = as_slice(index)
    return table[run] if run is not None else table.index_select(0, on_device(index, table.device))


def as_slice(index: np.ndarray) -> slice | None:
    """The slice of a non-empty index array [k] that is a run of consecutive ascending ints, else None."""
    values = index.tolist()
    start, stop = values[0], values[0] + len(values)
    return slice(start, stop) if values == list(range(start, stop)) else None


def on_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A small CPU array as a tensor on ``device``, copied without waiting for the device's queue
    (on the CPU, the array's own memory)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if device.type == "cpu" else tensor.to(device, non_blocking=True)


def each_circuit(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """fn applied to each slice x[c], stacked: the matrix products inside see the shapes a lone
    circuit gives them, so a circuit's values do not depend on its batch."""
    return torch.stack([fn(x_c) for x_c in x.unbind(0)])


def mask_rows(mask: Tensor, rows: Tensor) -> Tensor:
    """sum_s mask[..., r, s] * rows[..., s, :] -> [..., R, N]: mask [R, s] times rows [s, N] (one
    matrix product), or per circuit, mask [C, R, s] times rows [C, s, N] (a batch of them).

    BLAS sums a row the same way for any number of rows but one (a single row takes a
    matrix-vector kernel), and each matrix of a batch as it would alone; so a lone row is
    computed beside a zero row. (A product accumulated into its output, ``addmm_``, is not:
    small and large row counts take kernels that add the output in at different points.)
    """
    if mask.shape[-2] == 1:
        padded = torch.cat([mask, torch.zeros_like(mask)], dim=-2)
        return (torch.mm(padded, rows) if mask.dim() == 2 else batch_matmul(padded, rows))[..., :1, :]
    return torch.mm(mask, rows) if mask.dim() == 2 else batch_matmul(mask, rows)
