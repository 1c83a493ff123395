"""What the learned-mask methods share: the hard concrete, the parameter checks, the training loop.

Used by ``edge_pruning.py`` (edge and head-input masks), ``subnetwork_probing.py`` (q/k/v and MLP
masks, both hard concrete) and ``ugs.py`` (edge masks sampled uniformly in a window; the loop only).

The hard concrete (Louizos et al. 2018), for a location log_alpha, a temperature beta and uniform
noise u in (0, 1):

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),   z = clamp(s * (r - l) + l, 0, 1)

with the stretch interval (l, r) = (-0.1, 1.1) of Louizos et al., Edge Pruning and the ACDC
repository's subnetwork probing. Each method draws u its own way (its reference's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.progress import progress_bar

LEFT, RIGHT = -0.1, 1.1
"""The hard concrete's stretch interval (l, r)."""


# ----- parameter rules -----------------------------------------------------------------------------


def check_int(name: str, value: Any, low: int) -> None:
    """AcdcError unless ``value`` is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AcdcError(f"{name} must be an integer >= {low}, got {value!r}")


def check_number(
    name: str, value: Any, low: float, high: float, closed_low: bool = True, closed_high: bool = True
) -> None:
    """AcdcError unless ``value`` is a finite number (not a bool) in the interval from low to high."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)
    if not ok:
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise AcdcError(f"{name} must be a finite number in {interval}, got {value!r}")


# ----- the hard concrete ---------------------------------------------------------------------------


def hard_concrete(log_alpha: Tensor, u: Tensor, temperature: float) -> Tensor:
    """The stretched and clamped hard-concrete sample z for noise ``u`` (shape broadcasting with
    ``log_alpha``, entries in (0, 1)); differentiable in ``log_alpha``."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / temperature)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def deterministic_masks(log_alpha: Tensor) -> Tensor:
    """The test-time masks clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1); >= 0.5 exactly where
    sigmoid(log_alpha) >= 0.5 (l and r are symmetric about 1/2)."""
    return (torch.sigmoid(log_alpha) * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def probability_nonzero(log_alpha: Tensor, temperature: float) -> Tensor:
    """P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)): each mask's expected L0."""
    return torch.sigmoid(log_alpha - temperature * math.log(-LEFT / RIGHT))


# ----- the training loop ---------------------------------------------------------------------------


@dataclass
class StepOutcome:
    """One step's loss (a scalar tensor, to be minimised), the metric of its sampled masks (a
    scalar tensor, lower = better), the masks' expected sparsity (the fraction expected removed)
    and words for the error message should the loss not be finite (e.g. "lambdas [0.1, 0.2]")."""

    loss: Tensor
    metric: Tensor
    sparsity: float
    detail: str = ""


@dataclass
class TrainingLog:
    """Per step: the sampled masks' metric, the expected sparsity and the loss."""

    metric: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


def train_masks(
    name: str,
    steps: int,
    step: Callable[[int], StepOutcome],
    optimizers: Sequence[torch.optim.Optimizer],
    progress: bool = False,
    before_update: Optional[Callable[[], None]] = None,
) -> TrainingLog:
    """Run ``steps`` steps: ``step(i)`` builds step i's loss, every optimizer's gradients are
    zeroed, the loss is backpropagated, ``before_update`` (e.g. gradient clipping) runs, every
    optimizer steps. A progress bar (``desc=name``) shows loss, metric and sparsity.

    Raises AcdcError, one line naming the method and the step, at the first loss that is not finite.
    """
    log = TrainingLog()
    bar = progress_bar(range(steps), progress=progress, desc=name, unit="step")
    for i in bar:
        outcome = step(i)
        if not torch.isfinite(outcome.loss):
            detail = f", {outcome.detail}" if outcome.detail else ""
            raise AcdcError(
                f"{name}: the loss is not finite at step {i + 1} of {steps} (metric {float(outcome.metric.detach()):.6g}"
                f"{detail}); try a smaller lr"
            )
        for optimizer in optimizers:
            optimizer.zero_grad()
        outcome.loss.backward()
        if before_update is not None:
            before_update()
        for optimizer in optimizers:
            optimizer.step()
        log.metric.append(float(outcome.metric.detach()))
        log.sparsity.append(outcome.sparsity)
        log.loss.append(float(outcome.loss.detach()))
        bar.set_postfix(loss=f"{log.loss[-1]:.4g}", metric=f"{log.metric[-1]:.4g}", sparsity=f"{outcome.sparsity:.3f}", refresh=False)
    return log
