"""The positions a metric reads: one set for every prompt ([P]) or a set per prompt ([n_prompts, P]).

A patched pass computes its last layer at one set of positions for the whole batch. With per-prompt
positions (prompts of different lengths, each read at its last real token) that set is their union,
and each prompt's own positions are then taken from it (``ReadPositions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def select_positions(values: Tensor, positions: Tensor) -> Tensor:
    """``values`` [*, n_prompts, pos, d] at ``positions`` ([P], or [n_prompts, P] per prompt):
    [*, n_prompts, P, d]."""
    if positions.dim() == 1:
        return values[..., positions, :]
    index = positions[..., None].expand(*positions.shape, values.shape[-1])
    return values.gather(-2, index.expand(*values.shape[:-3], *index.shape))


def add_at_positions(target: Tensor, positions: Tensor, values: Tensor) -> None:
    """``target`` [n_prompts, pos, d] += ``values`` [n_prompts, P, d] at ``positions`` ([P] or
    [n_prompts, P]), in place; a position read twice receives both values."""
    n_prompts, n_read = values.shape[:2]
    rows = torch.arange(n_prompts, device=target.device)[:, None].expand(n_prompts, n_read)
    target.index_put_((rows, positions.expand(n_prompts, n_read)), values, accumulate=True)


@dataclass(frozen=True)
class ReadPositions:
    """What a pass computes and returns for positions ``given`` ([P] or [n_prompts, P]).

    computed: [U], sorted, the positions the pass's last layer computes (the union of ``given``).
    index: [n_prompts, P] into ``computed`` for per-prompt positions; None when ``given`` is [P]
        (then ``computed`` is ``given`` itself, in its order).
    """

    given: Tensor
    computed: Tensor
    index: Tensor | None

    @classmethod
    def of(cls, positions: Tensor) -> "ReadPositions":
        if positions.dim() == 1:
            return cls(positions, positions, None)
        computed = torch.unique(positions)
        return cls(positions, computed, torch.searchsorted(computed, positions))

    def take(self, values: Tensor) -> Tensor:
        """``values`` [C, n_prompts, U, d] at ``computed`` -> [C, n_prompts, P, d] at ``given``."""
        return values if self.index is None else select_positions(values, self.index)
