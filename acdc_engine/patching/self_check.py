"""The self-check every run starts with: the engine's pass must reproduce the model's own forward pass.

The model's own forward pass is that of the object the user gave (``ModelSpec.source_logits``): the
Hugging Face model inside a TransformerBridge, run with its own modules (never the bridge's forward,
which re-implements parts of the pass and can be wrong where the engine is right, or agree with the
engine where both are wrong), or a HookedTransformer's forward. Where the model came in a bridge,
how far the bridge's forward is from the model is recorded too (``SelfCheck.wrapper``).

With every edge kept, the patched pass must give the model's own logits on the clean prompts; with
every edge removed under resample ablation, its own logits on the corrupted prompts (under zero or
mean ablation, or with permuted corrupted positions, the all-removed pass has no counterpart in the
model, so the engine's unpatched run of the corrupted prompts is compared instead). Both at the task's positions. A model that fails gets no
circuit: a wrong circuit is worse than none.

Tolerance: ``TOLERANCE[dtype] * max(1, max |model logit|)``, the rounding that a different but
correct order of the same float operations leaves. float64's is float32-sized: Hugging Face models
loaded in float64 keep some float32 arithmetic (measured up to 1e-6 in the logits of tiny NeoX, GPT-J,
Gemma-2/3, OLMo-2 and Phi-3 models), far below the nats a missing feature costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.patching.baseline import ReceiverGroups, record_run
from acdc_engine.patching.positions import select_positions

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec

_REFERENCES = {"huggingface": "the Hugging Face model's", "source": "the model object's", "engine": "the engine's plain pass"}
TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@dataclass(frozen=True)
class SelfCheck:
    """Largest |engine - model| logit differences found, and the tolerance they were held to.

    reference: whose forward pass the model's logits came from (``ModelSpec.source_logits``):
        "huggingface" (the Hugging Face model under a TransformerBridge), "source" (a
        HookedTransformer's own forward) or "engine" (a native model: the engine's plain forward).
    wrapper: for a model that came in a wrapper (a TransformerBridge), the largest |wrapper's
        forward - model's forward| over the clean and corrupted prompts at the task's positions:
        recorded, not judged (the wrapper may be wrong where the engine is right); None otherwise.
    """

    full: float
    empty: float
    tolerance: float
    dtype: str
    reference: str = "source"
    wrapper: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"max_abs_logit_diff_full": self.full, "max_abs_logit_diff_empty": self.empty, "tolerance": self.tolerance,
               "dtype": self.dtype, "reference": self.reference}
        if self.wrapper is not None:
            out["max_abs_logit_diff_wrapper_vs_model"] = self.wrapper
        return out


ONE_FORWARD_LOGITS = 2**24
"""The model's own forward runs the clean and corrupted prompts as one batch when their logits
hold at most this many elements (64 MiB in float32); else one forward each."""


def _source_logits(spec: ModelSpec, clean: Tensor, corrupted: Tensor) -> tuple[Tensor, Tensor]:
    """The model's own logits [n, pos, d_vocab] on the clean and the corrupted prompts."""
    if 2 * clean.numel() * (spec.cfg.d_vocab_out or spec.cfg.d_vocab) > ONE_FORWARD_LOGITS:
        return spec.source_logits(clean), spec.source_logits(corrupted)
    both = spec.source_logits(torch.cat([clean, corrupted]))
    return both[: len(clean)], both[len(clean) :]


def _max_abs_diff(engine: Tensor, model: Tensor) -> float:
    return float((engine.double() - model.double()).abs().max())


class CheckedPass(Protocol):
    """What the self-check reads of a patched pass (``EdgePatcher`` is one): the model and its
    graph, the prompts and the positions read, the ablation, and the pass itself."""

    spec: ModelSpec
    graph: Graph
    groups: ReceiverGroups
    clean: Tensor
    corrupted: Tensor
    positions: Tensor
    ablation: str
    permute_corrupted_positions: bool
    dtype: torch.dtype

    def logits(self, mask: CircuitMask, start_layer: int = 0) -> Tensor: ...


@torch.no_grad()
def check_against_model(patcher: CheckedPass) -> SelfCheck:
    """Compare ``patcher``'s full and all-removed passes with its model's own forward pass (the
    model the user gave: the Hugging Face model under a TransformerBridge, not the bridge's
    forward, which is only recorded); AcdcError naming the model and the size of the mismatch
    when either exceeds the tolerance."""
    spec, graph, positions = patcher.spec, patcher.graph, patcher.positions
    full = graph.full_mask()
    try:
        model_clean, model_corrupted = (select_positions(logits, positions) for logits in _source_logits(spec, patcher.clean, patcher.corrupted))
    except Exception as error:  # the model cannot run its own forward on these prompts: nothing to hold the engine to
        raise AcdcError(
            f"self-check failed for model '{spec.cfg.model_name}': the model's own forward pass fails on the task's "
            f"prompts ({type(error).__name__}: {' '.join(str(error).split())[:300]}), so the engine computes no circuit"
        ) from None
    engine_full = patcher.logits(full)
    if patcher.ablation == "resample" and not patcher.permute_corrupted_positions:
        engine_empty = patcher.logits(graph.empty_mask())
    else:  # the all-removed pass has no counterpart in the model: check the engine's plain run instead
        corrupted_run = record_run(spec, graph, patcher.groups, patcher.corrupted)
        engine_empty = spec.unembed(select_positions(corrupted_run.resid[graph.shape.logits_read], positions))
    scale = max(1.0, float(model_clean.abs().max()), float(model_corrupted.abs().max()))
    tolerance = TOLERANCE.get(patcher.dtype, 1e-1) * scale
    wrapper_clean = spec.wrapper_logits(patcher.clean)
    wrapper = None
    if wrapper_clean is not None:
        wrapper_corrupted = select_positions(spec.wrapper_logits(patcher.corrupted), positions)
        wrapper_clean = select_positions(wrapper_clean, positions)
        wrapper = max(_max_abs_diff(wrapper_clean, model_clean), _max_abs_diff(wrapper_corrupted, model_corrupted))
    reference = "huggingface" if spec.reference_forward is not None else "source" if spec.source is not None else "engine"
    result = SelfCheck(
        _max_abs_diff(engine_full, model_clean),
        _max_abs_diff(engine_empty, model_corrupted),
        tolerance,
        str(patcher.dtype).removeprefix("torch."),
        reference,
        wrapper,
    )
    for what, diff in (("every edge kept", result.full), ("every edge removed", result.empty)):
        if not diff <= tolerance:  # also catches NaN
            raise AcdcError(
                f"self-check failed for model '{spec.cfg.model_name}': the engine's pass with {what} differs from "
                f"the model's own forward pass ({_REFERENCES[reference]}) by {diff:.3g} in the logits "
                f"(tolerance {tolerance:.3g} in {result.dtype}); "
                "the engine does not reproduce this model, so it computes no circuit"
            )
    return result
