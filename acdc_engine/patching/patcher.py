"""``EdgePatcher``: run a model with any set of edges patched, many circuits at once.

The forward pass is our own, over the model's architecture-neutral description (``ModelSpec``,
``acdc_engine.architecture``): no hook per edge, one product per receiver group and layer, each
distinct receiver input computed once.
Circuits are stacked on a leading axis C, so one call evaluates C circuits side by side. The pass
reads top to bottom in ``_patched_forward``: the precomputed ``Baseline``, then one step per layer
(``steps``), then the logits.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import build_graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.patching.baseline import (
    ABLATIONS, Activations, Baseline, ReceiverGroups, check_mean_covers,
)
from acdc_engine.patching.gradients import FactoredCorrections, chunk_products, gradient_pass
from acdc_engine.patching.memory import available_memory, circuit_elements_per_token
from acdc_engine.patching.pass_state import PassCache, PassState
from acdc_engine.patching.positions import ReadPositions
from acdc_engine.patching.qkv_gradients import FactoredGradients
from acdc_engine.patching.self_check import SelfCheck, check_against_model
from acdc_engine.patching.steps import attention_layer, logits_at, mlp_layer


class EdgePatcher:
    """Runs ``model`` on fixed clean tokens with edges patched from fixed corrupted tokens.

    Args:
        model: a ``ModelSpec``, a TransformerLens 4 ``TransformerBridge`` or a TransformerLens 3
            ``HookedTransformer`` (``acdc_engine.architecture.as_model_spec``).
        clean, corrupted: token ids [n_prompts, pos], same shape (right-padded prompts: see
            ``TaskData``; a causal model's real positions never read the padding after them).
        positions: the positions whose logits are returned, [P] for every prompt or [n_prompts, P]
            per prompt (default: all).
        ablation: "resample" (default), "zero" or "mean".
        split_input: token and positional embeddings as two senders. The patcher builds its
            model's graph (``self.graph``, ``build_graph(spec.cfg, split_input)``).
        self_check: compare the pass with every edge kept (and with every edge removed) against the
            model's own forward pass first; AcdcError if they differ by more than the dtype's
            tolerance (``acdc_engine.patching.self_check``). The result is ``self.self_check``.
        lengths, corrupted_lengths: [n_prompts], the real tokens of each clean / corrupted prompt
            (default: all); mean ablation averages the corrupted prompts' real tokens only. The
            clean ones are kept as ``self.lengths`` (long [n_prompts], on the CPU).
        permute_corrupted_positions: reproduce the original ACDC's resample ablation with split
            embeddings, whose corrupted run sees the positional embedding at permuted positions
            (a fixed seeded permutation, ``baseline.permuted_position_inputs``), so that edges from
            ``pos_embed`` can matter. Off by default; needs ablation resample and split_input.
    """

    def __init__(
        self,
        model: Any,
        clean: Tensor,
        corrupted: Tensor,
        positions: Tensor | None = None,
        ablation: str = "resample",
        *,
        split_input: bool = False,
        self_check: bool = True,
        permute_corrupted_positions: bool = False,
        lengths: Tensor | None = None,
        corrupted_lengths: Tensor | None = None,
    ) -> None:
        from acdc_engine.architecture import as_model_spec

        spec = as_model_spec(model)
        if ablation not in ABLATIONS:
            raise AcdcError(f"unknown ablation '{ablation}'; choose one of {', '.join(ABLATIONS)}")
        if clean.shape != corrupted.shape:
            raise AcdcError(
                f"clean and corrupted token batches differ in shape: {tuple(clean.shape)} vs {tuple(corrupted.shape)}"
            )
        cfg = spec.cfg
        graph = build_graph(cfg, split_input=split_input)
        self.spec = spec
        self.graph = graph
        self.ablation = ablation
        self.device = torch.device(cfg.device if cfg.device is not None else "cpu")
        self.dtype = cfg.dtype
        self.clean = clean.to(self.device)
        self.corrupted = corrupted.to(self.device)
        n_prompts, n_pos = clean.shape
        self.positions = (torch.arange(n_pos) if positions is None else positions).to(self.device)
        self._read = ReadPositions.of(self.positions)
        self.groups = ReceiverGroups.of(graph, self.device)
        self._cpu_groups = self.groups.as_numpy()
        self._receiver_layer = np.array(graph.receiver_layer)
        self._edge_exists = graph.edge_exists.numpy()
        self._cache = PassCache()  # kept between passes
        self._full_logits: dict[int, Tensor] = {}  # start layer -> the full circuit's logits (``_full_pass``)
        self.prompts_per_gradient_pass: int | None = None  # None: as many as fit (``patching.gradients``)
        every_position = torch.equal(self._read.computed.cpu(), torch.arange(n_pos))
        self._pass_positions = None if every_position else self._read.computed
        full = torch.full((n_prompts,), n_pos)
        lengths = full if lengths is None else lengths.cpu()
        self.lengths = lengths
        corrupted_lengths = lengths if corrupted_lengths is None else corrupted_lengths.cpu()
        if ablation == "mean":
            check_mean_covers(lengths, corrupted_lengths)
        with torch.no_grad():
            self.baseline = Baseline(
                spec, graph, self.groups, self.clean, self.corrupted, ablation, permute_corrupted_positions,
                corrupted_lengths.to(self.device),
            )
        self.permute_corrupted_positions = permute_corrupted_positions
        self.self_check: SelfCheck | None = check_against_model(self) if self_check else None

    @property
    def clean_run(self) -> Activations:
        return self.baseline.clean_run

    @property
    def ablated(self) -> Activations:
        return self.baseline.ablated

    @property
    def clean_sender_out(self) -> Tensor:
        """Every sender's output on the clean prompts, [n_prompts, pos, n_senders, d_model]."""
        return self.baseline.clean_run.sender_out

    @property
    def ablated_sender_out(self) -> Tensor:
        """Every sender's ablated output (what a removed edge carries), [n_prompts, pos, n_senders, d_model]."""
        return self.baseline.ablated.sender_out

    @torch.no_grad()
    def logits(self, mask: CircuitMask, start_layer: int = 0) -> Tensor:
        """Logits of C circuits at ``positions``.

        Args:
            mask: bool, edges [C, n_senders, n_receivers] and head inputs [C, n_layers, n_heads, 3]
                (or without the C axis), True = in the circuit.
            start_layer: resume the forward pass at this layer, taking everything before it from the
                clean run. Valid when every receiver below it is intact (all its edges and head
                inputs present), as during ACDC's visit of that layer: then nothing upstream changed.
        Returns:
            [C, n_prompts, P, d_vocab] (no C axis if the masks had none).
        """
        edge_mask, head_input_mask = mask.edges, mask.head_inputs
        squeeze = edge_mask.dim() == 2
        if squeeze:
            edge_mask, head_input_mask = edge_mask[None], head_input_mask[None]
        edge_mask, head_input_mask = edge_mask.cpu().bool(), head_input_mask.cpu().bool()
        if start_layer > 0:
            below = self._receiver_layer < self.graph.shape.attention_reads(start_layer)
            intact = edge_mask.numpy()[:, :, below] | ~self._edge_exists[:, below]
            if not (intact.all() and head_input_mask.numpy()[:, :start_layer].all()):
                raise ValueError(f"cannot resume at layer {start_layer}: a receiver below it is patched")
        if self._is_full(edge_mask, head_input_mask):
            logits = self._read.take(self._full_pass(edge_mask, head_input_mask, start_layer))
        else:
            logits = self._read.take(self._patched_forward(edge_mask, head_input_mask, start_layer))
        return logits[0] if squeeze else logits

    def _is_full(self, edge_mask: Tensor, head_input_mask: Tensor) -> bool:
        """Whether masks [C, ...] (bool, on the CPU) are one circuit, the full model (every edge
        that exists kept, and no other)."""
        return len(edge_mask) == 1 and bool(head_input_mask.all()) and np.array_equal(edge_mask[0].numpy(), self._edge_exists)

    def _full_pass(self, edge_mask: Tensor, head_input_mask: Tensor, start_layer: int) -> Tensor:
        """``_patched_forward`` of the full model (its masks) from ``start_layer``, [1, n_prompts, U, d_vocab]:
        from start layers 0 and n_layers (the self-check's pass, a metric's reference logits,
        ACDC's first measurement) computed once and then copied (the pass is deterministic)."""
        kept = self._full_logits.get(start_layer)
        if kept is None:
            kept = self._patched_forward(edge_mask, head_input_mask, start_layer)
            if start_layer in (0, self.graph.shape.n_layers):
                self._full_logits[start_layer] = kept
        return kept.clone()

    def _patched_forward(self, edge_mask: Tensor, head_input_mask: Tensor, start_layer: int) -> Tensor:
        """Logits [C, n_prompts, U, d_vocab] of C circuits (masks bool on the CPU) at the positions
        the pass computes (``ReadPositions.computed``), resuming at ``start_layer``.

        A receiver whose mask column is the same in every circuit and that keeps no edge from a
        sender that differs between circuits gets the same input in every circuit: it, and a head
        or MLP all of whose receivers are like it, is computed once for the batch (or taken from
        an earlier pass that computed it from the same values, ``PassCache``); the rest per
        circuit. Either way a circuit's values are the same float bits as when it is evaluated
        alone (tests check this bit for bit). Masks that keep no edge at all skip the layers.
        """
        spec, graph, groups = self.spec, self.graph, self._cpu_groups
        n_fixed = self.baseline.senders_before[graph.shape.attention_reads(start_layer)]
        keep = head_input_mask.permute(0, 1, 3, 2).numpy()  # [C, layer, 3, h]
        with torch.inference_mode():  # the layers' tensors, and what the patcher keeps of them, never meet autograd
            state = PassState(self.baseline, edge_mask.numpy(), start_layer, n_fixed, self.dtype, self._cache, self._pass_positions)
            # with no edge kept anywhere the logits read the all-removed input alone, nothing the layers compute
            layers = range(start_layer, graph.shape.n_layers) if state.kept.any() else range(0)
            for layer in layers:
                attention_layer(spec, graph, groups, state, layer, keep[:, layer])
                if graph.shape.has_mlp:
                    mlp_layer(spec, graph, groups, state, layer)
        return logits_at(spec, graph, groups, state)  # outside inference mode: a metric may take gradients through them

    def bytes_per_circuit(self) -> int:
        """A generous estimate of the memory one more circuit in a batch takes, in bytes
        (``acdc_engine.patching.memory``)."""
        n_prompts, n_pos = self.clean.shape
        per_token = circuit_elements_per_token(
            self.spec.cfg, n_senders=len(self.graph.senders), n_tokens=n_pos, n_positions=len(self._read.computed)
        )
        return int(per_token * n_prompts * n_pos * self.clean_run.sender_out.element_size())

    def auto_batch_size(self, limit: int = 32, memory_fraction: float = 0.25) -> int:
        """How many circuits to evaluate per pass: at most ``limit``, and within a fraction of the
        device's available memory (1 where it cannot be read)."""
        free = available_memory(self.device)
        if free is None:
            return 1
        return max(1, min(limit, int(memory_fraction * free / self.bytes_per_circuit())))

    def receiver_gradients(
        self,
        metric: Callable[[Tensor], Tensor],
        input_embeddings: Tensor | None = None,
        fixed: Mapping[int, Tensor] | None = None,
    ) -> tuple[Tensor, float]:
        """d metric / d in_v for every receiver v of the full model (for the node and neuron methods).

        Args:
            metric: circuit logits [1, n_prompts, P, d_vocab] -> [1].
            input_embeddings: [n_prompts, pos, n_input_senders, d_model] to use instead of the clean
                prompts' input sender outputs (EAP-IG interpolates them); default: the clean ones.
            fixed: {sender index: output [n_prompts, pos, d_model]}: those senders' outputs replaced
                by constants, through which no gradient flows (EAP-IG-activations); the receivers
                that only feed them get gradient 0.
        Returns:
            (gradients [n_prompts, pos, n_receivers, d_model], the metric's value). Each gradient is
            the total derivative: it includes the paths through every later receiver. Prompts go
            through in chunks that fit in memory (``acdc_engine.patching.gradients``).
        """
        n_prompts, n_pos = self.clean.shape
        out = torch.zeros(n_prompts, n_pos, len(self.graph.receivers), self.spec.cfg.d_model, dtype=self.dtype, device=self.device)

        def store(receivers: Tensor, grad: FactoredGradients, chunk: slice) -> None:
            out[chunk, :, receivers] = grad.dense()

        return out, gradient_pass(self, metric, store, input_embeddings, fixed)

    def edge_scores(
        self,
        metric: Callable[[Tensor], Tensor],
        input_embeddings: Tensor | None = None,
        fixed: Mapping[int, Tensor] | None = None,
    ) -> tuple[Tensor, float]:
        """EAP's sum over prompts, positions and d_model of (out*_u - out_u) * g_v for every edge
        u -> v, with g_v = d metric / d in_v as ``receiver_gradients`` takes it (same arguments).

        Each receiver group's gradient is contracted with the senders before it as the backward pass
        computes it (``acdc_engine.patching.gradients.chunk_products``; the rank-one terms of
        factored gradients after the pass, ``FactoredCorrections``), so the gradients of all
        receivers are never held at once. Returns (scores [n_senders, n_receivers] in at least
        float32 on the patcher's device, 0 where no edge exists; the metric's value).
        """
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        diff = self.baseline.sender_diff  # out_u - out*_u, sender-major [S, n_prompts, pos, d_model]
        scores = torch.zeros(len(self.graph.senders), len(self.graph.receivers), dtype=dtype, device=self.device)
        senders_before, receiver_layer = self.baseline.senders_before, self.graph.receiver_layer

        corrections = FactoredCorrections()

        def contract(receivers: Tensor, grad: FactoredGradients, chunk: slice) -> None:
            n_senders = senders_before[receiver_layer[int(receivers[0])]]
            scores[:n_senders, receivers] -= chunk_products(diff[:n_senders], grad.scaled, chunk, dtype)
            corrections.hold(receivers, n_senders, grad, chunk)

        value = gradient_pass(self, metric, contract, input_embeddings, fixed)
        corrections.add_to(scores, diff)
        exists = self.graph.edge_exists.to(self.device)
        return torch.where(exists, scores, torch.zeros((), dtype=dtype, device=self.device)), value
