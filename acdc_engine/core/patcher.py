"""What methods may ask of a patched model: the ``Patcher`` protocol, and ``Evaluate``.

Methods are typed against these, not against the engine's concrete ``EdgePatcher``
(``acdc_engine.patching``), so a method reads as what it needs: logits of circuits, gradients at
the receivers, and the senders' clean and ablated outputs.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import torch
from torch import Tensor

from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask

Evaluate = Callable[[CircuitMask, int], Tensor]
"""(circuits [C, ...], start layer) -> metric [C] float64 on the CPU, lower is better.

The start layer is where a resumed forward pass may begin: every receiver below it is intact."""


class Patcher(Protocol):
    """A model on fixed clean and corrupted prompts, run with any circuit's edges patched.

    graph: the model's graph. device: where the pass runs. positions: the positions whose logits
    are returned, [P]. clean_sender_out / ablated_sender_out: every sender's output on the clean
    prompts and its ablated value, [n_prompts, pos, n_senders, d_model].
    """

    graph: Graph
    device: torch.device
    positions: Tensor

    @property
    def clean_sender_out(self) -> Tensor: ...

    @property
    def ablated_sender_out(self) -> Tensor: ...

    def logits(self, mask: CircuitMask, start_layer: int = 0) -> Tensor:
        """Logits [*C, n_prompts, P, d_vocab] of the circuits in ``mask`` (bool), resuming at
        ``start_layer`` when every receiver below it is intact."""
        ...

    def receiver_gradients(
        self,
        metric: Callable[[Tensor], Tensor],
        input_embeddings: Tensor | None = None,
        fixed: Mapping[int, Tensor] | None = None,
    ) -> tuple[Tensor, float]:
        """(d metric / d in_v for every receiver v of the full model, [n_prompts, pos, n_receivers,
        d_model]; the metric's value). ``input_embeddings`` replace the clean input senders'
        outputs, [n_prompts, pos, n_input_senders, d_model]; ``fixed`` {sender index: [n_prompts,
        pos, d_model]} replaces those senders' outputs by constants no gradient flows through."""
        ...

    def edge_scores(
        self,
        metric: Callable[[Tensor], Tensor],
        input_embeddings: Tensor | None = None,
        fixed: Mapping[int, Tensor] | None = None,
    ) -> tuple[Tensor, float]:
        """(sum over prompts, positions and d_model of (out*_u - out_u) * d metric / d in_v for
        every edge u -> v, [n_senders, n_receivers] in at least float32, 0 where no edge exists;
        the metric's value), one gradient pass with ``receiver_gradients``' arguments."""
        ...

    def auto_batch_size(self, limit: int = 32, memory_fraction: float = 0.25) -> int:
        """Circuits per pass that fit in a fraction of the device's free memory, at most ``limit``."""
        ...
