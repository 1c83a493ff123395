"""The state of one patched pass over C circuits: the senders' outputs so far, and receivers' inputs.

For receiver v with edge mask m_uv (1 = in the circuit) the patching rule (docs/design.md) is

    in_v = A_v + sum_u m_uv * (out_u - out_u*)

where A_v is v's input with every incoming edge removed (``Baseline.ablated_input``), out_u is sender
u's output in this pass and out_u* what a removed edge carries. Senders written before the pass's
start layer take their clean outputs (the *fixed* senders); the others are recorded as the pass
computes them, once for the batch when they are the same in every circuit, else per circuit.

Every receiver's input is summed in one order, (fixed senders' rows + A_v) + this pass's senders'
rows, whichever path computes it, so a circuit's input does not depend on the batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from acdc_engine.patching.baseline import Baseline


@dataclass
class ReceiverInputs:
    """The inputs of a group of R receivers for a batch of C circuits.

    varies [R]: the receiver's input differs between circuits; those inputs are ``per_circuit``
        [C, n_prompts, pos, R_varies, d_model].
    active [R]: the same in every circuit and not the all-removed input; computed once in
        ``shared`` [n_prompts, pos, R_active, d_model]. The remaining receivers keep no edge: their
        input is the all-removed input, whose downstream values are precomputed (``Baseline``).
    """

    varies: Tensor
    active: Tensor
    shared: Tensor | None
    per_circuit: Tensor | None


class PassState:
    """Senders' outputs of one patched pass (as out_u - out_u*), and receivers' inputs from them.

    Args:
        baseline: the patcher's precomputed runs.
        kept: edge masks [C, n_senders, n_receivers] in the pass's dtype (1 = in the circuit).
        n_fixed: how many senders (a prefix) take their clean outputs: those written before the
            start layer.
    """

    def __init__(self, baseline: Baseline, kept: Tensor, n_fixed: int) -> None:
        self.baseline = baseline
        self.kept = kept
        self.n_circuits = kept.shape[0]
        self.n_fixed = n_fixed
        clean = baseline.clean_minus_ablated
        n_prompts, n_pos, n_senders, d_model = clean.shape
        self.fixed_diff = clean[:, :, :n_fixed]
        # this pass's senders: ``shared_diff`` holds those equal in every circuit (zero where one
        # varies); ``circuit_diff`` (made at the first varying sender) holds every sender per circuit
        self.shared_diff = torch.zeros(n_prompts, n_pos, n_senders - n_fixed, d_model, dtype=clean.dtype, device=clean.device)
        self.circuit_diff: Tensor | None = None
        self.varying = torch.zeros(n_senders, dtype=torch.bool, device=clean.device)

    def inputs(self, receivers: Tensor, read_at: int, positions: Tensor | None = None) -> ReceiverInputs:
        """The inputs of ``receivers`` (indices [R]) reading at ``read_at``, at ``positions`` (default all)."""
        n_before = self.baseline.senders_before[read_at]
        n_fixed = self.n_fixed
        at = slice(None) if positions is None else positions
        column = self.kept[:, :n_before, receivers]  # [C, s, R]
        varies = (column != column[:1]).any(0).any(0) | column[:, self.varying[:n_before]].any(0).any(0)
        active = column[0].any(0) & ~varies
        base = self.baseline.ablated_input[read_at][:, at, None, :]
        fixed, new = slice(0, n_fixed), slice(n_fixed, n_before)
        shared = None
        if active.any():
            mask = column[0][:, active].T  # [Ra, s]
            shared = masked_sum(mask[:, fixed], self.fixed_diff[:, at])
            shared += base
            if n_before > n_fixed:
                shared += masked_sum(mask[:, new], self.shared_diff[:, at, : n_before - n_fixed])
        per_circuit = None
        if varies.any():
            mask = column[:, :, varies].transpose(1, 2)  # [C, Rv, s]
            n_varies = mask.shape[1]
            rows = masked_sum(mask[:, :, fixed].reshape(self.n_circuits * n_varies, -1), self.fixed_diff[:, at])
            per_circuit = rows.unflatten(2, (self.n_circuits, n_varies)).permute(2, 0, 1, 3, 4) + base
            if n_before > n_fixed:
                if self.circuit_diff is None:
                    diffs = self.shared_diff[None, :, at, : n_before - n_fixed].expand(self.n_circuits, -1, -1, -1, -1)
                else:
                    diffs = self.circuit_diff[:, :, at, : n_before - n_fixed]
                per_circuit += torch.stack([masked_sum(mask[c, :, new], diffs[c]) for c in range(self.n_circuits)])
        return ReceiverInputs(varies, active, shared, per_circuit)

    def record(self, senders: Tensor, outputs: Tensor, per_circuit: bool) -> None:
        """Record senders' outputs: [n_prompts, pos, s, d_model] (the same in every circuit) or, with
        ``per_circuit``, [C, n_prompts, pos, s, d_model]."""
        diff = outputs - self.baseline.ablated.sender_out[:, :, senders]
        slots = senders - self.n_fixed
        if per_circuit:
            self.varying[senders] = True
            if self.circuit_diff is None:
                self.circuit_diff = self.shared_diff[None].repeat(self.n_circuits, 1, 1, 1, 1)
            self.circuit_diff[:, :, :, slots] = diff
        else:
            self.shared_diff[:, :, slots] = diff
            if self.circuit_diff is not None:
                self.circuit_diff[:, :, :, slots] = diff[None]


def each_circuit(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """fn applied to each circuit's slice x[c], stacked: the matrix products inside see the shapes
    a lone circuit gives them (BLAS may sum a row differently when it has more rows to share out
    between threads), so a circuit's values do not depend on its batch."""
    return torch.stack([fn(x_c) for x_c in x.unbind(0)])


def masked_sum(mask: Tensor, diff: Tensor) -> Tensor:
    """sum_s mask[r, s] * diff[..., s, :] -> [..., R, d], by one kind of BLAS call whatever R is.

    mask [R, s], diff [..., s, d]. BLAS sums a row the same way for any number of rows but one (a
    single row takes a matrix-vector kernel), so a lone row is computed beside a zero row.
    """
    if mask.shape[0] == 1:
        return torch.matmul(torch.cat([mask, torch.zeros_like(mask)]), diff)[..., :1, :]
    return torch.matmul(mask, diff)
