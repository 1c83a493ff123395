"""A circuit's masks and scores as one object each: ``CircuitMask`` and ``Scores``.

Both hold two tensors in the graph's layout (``acdc_engine.core.graph``):

    edges        [*C, n_senders, n_receivers]   one entry per sender -> receiver pair (the pairs
                                                that are no edge stay False / 0 / NaN)
    head_inputs  [*C, n_layers, n_heads, 3]     each head receiver's head input, q, k, v

with an optional leading circuit axis ``C`` (several circuits evaluated in one pass). A
``CircuitMask`` is bool (True = in the circuit) for exact methods, or float in [0, 1] for the
differentiable pass (``acdc_engine.patching.float_pass``); ``Scores`` are float64, NaN = not
scored. A new level of masks (neurons, SAE features) is a new field here, with the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError

P = TypeVar("P", bound="EdgeTensors")


@dataclass(frozen=True)
class EdgeTensors:
    """Two tensors in the graph's layout with the same leading circuit axes (see the module)."""

    edges: Tensor
    head_inputs: Tensor

    def __post_init__(self) -> None:
        if self.edges.dim() < 2 or self.head_inputs.dim() < 3:
            raise AcdcError(f"masks need shapes [*C, S, R] and [*C, L, H, 3], got {tuple(self.edges.shape)} and {tuple(self.head_inputs.shape)}")
        if self.edges.shape[:-2] != self.head_inputs.shape[:-3]:
            raise AcdcError(f"edge and head-input tensors differ in their circuit axes: {tuple(self.edges.shape)} vs {tuple(self.head_inputs.shape)}")

    @property
    def circuit_shape(self) -> torch.Size:
        """The leading circuit axes: () for one circuit, (C,) for a batch."""
        return self.edges.shape[:-2]

    def __len__(self) -> int:
        if not self.circuit_shape:
            raise TypeError("one circuit has no length; a batch of C circuits has C")
        return self.circuit_shape[0]

    def __iter__(self):
        raise TypeError("a mask is not a pair to unpack: read .edges and .head_inputs (or .unbind() a batch)")

    def __getitem__(self: P, index: int | slice | Tensor) -> P:
        """The circuit(s) at ``index`` of the leading circuit axis."""
        return type(self)(self.edges[index], self.head_inputs[index])

    def map(self: P, fn: Callable[[Tensor], Tensor]) -> P:
        """Both tensors through ``fn`` (``mask.map(torch.Tensor.clone)``)."""
        return type(self)(fn(self.edges), fn(self.head_inputs))

    def clone(self: P) -> P:
        return self.map(torch.Tensor.clone)

    @classmethod
    def stack(cls: type[P], items: Sequence[P] | Iterable[P]) -> P:
        """Circuits stacked on a new leading axis."""
        items = list(items)
        return cls(torch.stack([i.edges for i in items]), torch.stack([i.head_inputs for i in items]))

    def unbind(self: P) -> list[P]:
        """The circuits of the leading axis, one by one."""
        return [self[i] for i in range(len(self))]

    def equal(self, other: "EdgeTensors") -> bool:
        """Same shapes and values in both tensors (NaN equal to NaN)."""
        return _same(self.edges, other.edges) and _same(self.head_inputs, other.head_inputs)


class CircuitMask(EdgeTensors):
    """Which edges and head inputs a circuit keeps: bool (True = in) or float in [0, 1]."""

    def as_float(self, dtype: torch.dtype = torch.float32) -> "CircuitMask":
        return self.map(lambda t: t.to(dtype))


class Scores(EdgeTensors):
    """A score for every edge and head input, float64; NaN = not scored (e.g. removed untested)."""

    @classmethod
    def unscored(cls, mask: CircuitMask) -> "Scores":
        """NaN everywhere, in the shapes of ``mask``."""
        return cls(torch.full(mask.edges.shape, math.nan, dtype=torch.float64), torch.full(mask.head_inputs.shape, math.nan, dtype=torch.float64))


def _same(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
