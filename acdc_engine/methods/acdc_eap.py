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

from torch import Tensor

from acdc_engine.errors import AcdcError
from acdc_engine.methods.eap import eap_ig_scores
from acdc_engine.metrics import Metric


def check_skip_below(skip_below: float) -> float:
    skip_below = float(skip_below)
    if not math.isfinite(skip_below) or skip_below < 0:
        raise AcdcError(f"method.skip_below must be a finite number >= 0, got {skip_below}")
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
