"""ACDC seeded by attribution (method ``acdc-eap``): exact ACDC that skips edges EAP-IG rates negligible.

An edge's EAP-IG score (``acdc_engine.methods.eap``) estimates, to first order, how much the metric
changes when that edge alone is patched: the quantity ACDC measures as ``m - cur`` when it tries
the removal. Before ACDC starts, every edge whose |score| is below ``skip_below * threshold`` is
marked; at its turn in the visiting order it is removed without a forward pass (score null in the
circuit file, like a moot candidate). Every other edge, and every head input, is tested exactly as
ACDC tests it, in the same order.

This changes results, hence a method of its own: an edge skipped on its first-order estimate is
lost even when its measured effect, in the circuit as pruned by then, would have exceeded the
threshold; and removing it changes ``cur`` for the candidates after it. ``skip_below = 0`` skips
nothing and is exact ACDC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.methods.acdc import AcdcParams, acdc_outcome, batch_size_for, threshold_selection
from acdc_engine.methods.eap import check_steps, eap_ig_scores, ig_alphas
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.measure.metrics import Metric


def check_skip_below(skip_below: float) -> float:
    skip_below = float(skip_below)
    if not math.isfinite(skip_below) or skip_below < 0:
        raise AcdcError(f"skip_below must be a finite number >= 0, got {skip_below}")
    return skip_below


def attribution_skips(patcher, metric: Metric, threshold: float, skip_below: float, steps: int) -> tuple[Tensor, Tensor]:
    """The edges ACDC may skip, and the EAP-IG scores they were chosen by.

    Args:
        patcher: an ``EdgePatcher`` on the task's prompts.
        metric: circuit logits [C, n_prompts, P, d_vocab] -> [C], lower is better (ACDC's metric).
        threshold: ACDC's threshold, in the metric's units.
        skip_below: skip an edge when |score| < skip_below * threshold.
        steps: EAP-IG interpolation steps (one forward and one backward pass each).
    Returns:
        (skip: bool [S, R], True only where an edge exists; scores: [S, R]).
    """
    scores = eap_ig_scores(patcher, metric, steps)
    skip = patcher.graph.edge_exists.to(scores.device) & (scores.abs() < check_skip_below(skip_below) * threshold)
    return skip.cpu(), scores


# ----- the method, for discover ---------------------------------------------------------------------


@dataclass
class AcdcEapParams(AcdcParams):
    """acdc-eap's parameters: exact ACDC's, and

    steps: EAP-IG's interpolation steps (one forward and one backward pass each).
    skip_below: skip an edge when its |EAP-IG score| < skip_below * threshold (0: exact ACDC).
    """

    steps: int = 5
    skip_below: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)
        check_skip_below(self.skip_below)


@dataclass
class AcdcEapConfig(AcdcEapParams):
    """``conf/method/acdc-eap.yaml``."""

    name: str = "acdc-eap"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


def _run(inputs: MethodInput, params: AcdcEapParams) -> MethodOutcome:
    batch_size = batch_size_for(inputs, params.batch_size)  # before the attribution pass allocates
    skip, _ = attribution_skips(inputs.patcher, inputs.metric, params.threshold, params.skip_below, params.steps)
    outcome = acdc_outcome(inputs, "acdc-eap", params.threshold, batch_size, skip=skip)
    outcome.description.update(steps=params.steps, skip_below=params.skip_below, edges_skipped=int(skip.sum()))
    attribution_passes = len(ig_alphas(params.steps))
    outcome.forward_passes += attribution_passes
    outcome.backward_passes += attribution_passes
    return outcome


SPEC = MethodSpec(
    name="acdc-eap", params=AcdcEapParams, config=AcdcEapConfig, run=_run, selection=threshold_selection,
    circuits=CircuitSelection.THRESHOLD, checkpoints=True, memory=MemoryProfile.GRADIENT_SCORES,
)
