"""What the learned-mask methods share: the hard concrete, the parameter checks, the training loop.

Used by ``edge_pruning.py`` (edge and head-input masks), ``subnetwork_probing.py`` (q/k/v and MLP
masks, both hard concrete) and ``ugs.py`` (edge masks sampled uniformly in a window; the loop only).

The hard concrete (Louizos et al. 2018), for a location log_alpha, a temperature beta and uniform
noise u in (0, 1):

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),   z = clamp(s * (r - l) + l, 0, 1)

with the stretch interval (l, r) = (-0.1, 1.1) of Louizos et al., Edge Pruning and the ACDC
repository's subnetwork probing. Each method draws u its own way (its reference's).

**Runs that survive.** A run given a ``Checkpointing`` (``discover(checkpoint=...)``; the command
line's run folder) saves its ``MaskTrainingState`` every ``checkpoint_every`` steps or
``checkpoint_seconds`` seconds, after its last step, at the next step after SIGTERM (then stops,
``checkpoint.Terminated``), and before stopping on a non-finite loss; a run resumed from it ends
bit for bit as the uninterrupted run. The checkpoint (``acdc_engine.methods.checkpoint``, format
"acdc-engine/mask-checkpoint") holds, after ``step`` steps:

    parameter.<name>            every trained tensor as it is (edge-pruning: edge_log_alpha,
                                head_log_alpha, lambdas; ugs: log_alpha; subnetwork-probing: qkv, mlp)
    optimizer.<k>.<index>.<key> optimizer k's state of its parameter ``index`` (Adam: step,
                                exp_avg, exp_avg_sq; edge-pruning's optimizer 1 is the multipliers')
    generator                   the mask noise's ``torch.Generator`` state (uint8)
    log.metric, log.sparsity, log.loss   float64 [step]: the training log so far
    metadata state              {method, step, optimizers (their count), seconds}, and the
                                fingerprint of the run's settings, model and data

The optimizers' settings (learning rates, betas) are not saved: they come from the run's settings,
which the fingerprint ties the checkpoint to (a resume with other settings is refused, naming them).

**A non-finite loss** (or gradient) stops the run before its update: ``NonFiniteLoss``, one line,
with the state after the last finite step saved in the checkpoint and kept on the error. Those masks
are the best the run has: the loss is one noisy sample and, under edge-pruning's rising target, not
comparable across steps, so the lowest loss seen would name no better masks, only older ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.progress import progress_bar
from acdc_engine.methods.method import Checkpointing

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

    def copy(self) -> TrainingLog:
        return TrainingLog(list(self.metric), list(self.sparsity), list(self.loss))


@dataclass
class MaskTrainingState:
    """Where a learned-mask run stands after ``step`` steps: enough to continue it bit for bit
    (the module docstring lists it as a checkpoint holds it).

    method: the method's name. step: the steps done (step i, 0-based, comes next).
    parameters: every trained tensor by name (a name without dots).
    optimizers: per optimizer, its per-parameter state {index among its parameters: {key: tensor}}
        (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``); empty before the first step.
    generator: the noise generator's state (``torch.Generator.get_state``, uint8).
    log: the ``TrainingLog`` of the steps done.
    """

    method: str
    step: int
    parameters: dict[str, Tensor]
    optimizers: list[dict[int, dict[str, Tensor]]]
    generator: Tensor
    log: TrainingLog

    @property
    def visited(self) -> int:
        """``step``: a run's progress under the name ``Checkpointing`` and ``discover`` give it."""
        return self.step

    def to_tensors(self) -> dict[str, Tensor]:
        """The state's tensors by their checkpoint names (module docstring), on the CPU."""
        tensors = {f"parameter.{name}": value for name, value in self.parameters.items()}
        for k, optimizer in enumerate(self.optimizers):
            for index, entries in optimizer.items():
                tensors.update({f"optimizer.{k}.{index}.{key}": value for key, value in entries.items()})
        tensors["generator"] = self.generator
        for name in ("metric", "sparsity", "loss"):
            tensors[f"log.{name}"] = torch.tensor(getattr(self.log, name), dtype=torch.float64)
        return {name: value.detach().to("cpu").contiguous() for name, value in tensors.items()}

    @classmethod
    def from_tensors(cls, method: str, step: int, n_optimizers: int, tensors: dict[str, Tensor]) -> MaskTrainingState:
        """The state ``to_tensors`` wrote (KeyError or ValueError when a tensor is missing or misnamed)."""
        parameters = {name.split(".", 1)[1]: value for name, value in tensors.items() if name.startswith("parameter.")}
        optimizers: list[dict[int, dict[str, Tensor]]] = [{} for _ in range(n_optimizers)]
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, k, index, key = name.split(".")
                optimizers[int(k)].setdefault(int(index), {})[key] = value
        log = TrainingLog(*(tensors[f"log.{name}"].tolist() for name in ("metric", "sparsity", "loss")))
        return cls(method, step, parameters, optimizers, tensors["generator"], log)


class NonFiniteLoss(AcdcError):
    """A learned-mask run stopped at a step whose loss, or the loss's gradient, is not finite.
    ``state`` is the run after the last finite step (its masks the best the run reached, see the
    module docstring), also saved in the run's checkpoint when it has one."""

    def __init__(self, message: str, state: MaskTrainingState) -> None:
        super().__init__(message)
        self.state = state


@dataclass
class MaskTraining:
    """A learned-mask method's training, as ``train_masks`` runs it.

    name: the method's name (the bar's label, the first word of errors, the state's ``method``).
    steps: how many steps. step: ``step(i)`` builds step i's (0-based) outcome, drawing its noise
        from ``generator`` only.
    parameters: every trained tensor by name (no dots in names); optimizers: every optimizer (Adam,
        AdamW: state of tensors only), stepped in this order; generator: the noise's generator.
    before_update: called after the backward pass, before the optimizers step (gradient clipping).
    """

    name: str
    steps: int
    step: Callable[[int], StepOutcome]
    parameters: dict[str, Tensor]
    optimizers: Sequence[torch.optim.Optimizer]
    generator: torch.Generator
    before_update: Optional[Callable[[], None]] = None

    def state(self, log: TrainingLog) -> MaskTrainingState:
        """A copy of where the training stands after the steps in ``log``."""
        return MaskTrainingState(
            method=self.name,
            step=len(log.loss),
            parameters={name: value.detach().clone() for name, value in self.parameters.items()},
            optimizers=[_optimizer_state(optimizer) for optimizer in self.optimizers],
            generator=self.generator.get_state(),
            log=log.copy(),
        )

    def restore(self, saved: Any) -> TrainingLog:
        """Set the parameters, optimizers and generator to ``saved`` (a ``MaskTrainingState`` of this
        training, else AcdcError); returns its log, to be continued."""
        self.check_fits(saved)
        with torch.no_grad():
            for name, value in self.parameters.items():
                value.copy_(saved.parameters[name])
        for optimizer, entries in zip(self.optimizers, saved.optimizers):
            groups = optimizer.state_dict()["param_groups"]  # the run's own settings, which the fingerprint ties
            optimizer.load_state_dict({"state": _cloned(entries), "param_groups": groups})
        self.generator.set_state(saved.generator.clone())
        return saved.log.copy()

    def check_fits(self, saved: Any) -> None:
        """AcdcError unless ``saved`` is this method's state with this training's parameters (names,
        shapes, dtypes) and optimizers, at a step in 0..steps with that many log entries."""
        if not isinstance(saved, MaskTrainingState) or saved.method != self.name:
            raise AcdcError(f"{self.name}: the saved state is not a {self.name} run's")
        for name, value in self.parameters.items():
            kept = saved.parameters.get(name)
            if kept is None or kept.shape != value.shape or kept.dtype != value.dtype:
                raise AcdcError(
                    f"{self.name}: the saved state's {name} does not fit this run's ({tuple(value.shape)}, {value.dtype})"
                )
        if set(saved.parameters) != set(self.parameters) or len(saved.optimizers) != len(self.optimizers):
            raise AcdcError(f"{self.name}: the saved state holds other parameters or optimizers than this run's")
        if not 0 <= saved.step <= self.steps or any(len(entries) != saved.step for entries in vars(saved.log).values()):
            raise AcdcError(
                f"{self.name}: the saved state's step {saved.step} lies outside 0..{self.steps} or disagrees with its log"
            )


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Tensor]]:
    return _cloned(optimizer.state_dict()["state"])


def _cloned(entries: dict[int, dict[str, Tensor]]) -> dict[int, dict[str, Tensor]]:
    return {index: {key: value.clone() for key, value in state.items()} for index, state in entries.items()}


def train_masks(
    training: MaskTraining,
    progress: bool = False,
    resume: Optional[MaskTrainingState] = None,
    checkpointer: Optional[Checkpointing] = None,
) -> TrainingLog:
    """Run ``training``'s steps from the start, or from ``resume`` (a saved state: the outcome is
    the uninterrupted run's, bit for bit). Each step: ``step(i)`` builds the loss, every
    optimizer's gradients are zeroed, the loss is backpropagated, ``before_update`` runs, every
    optimizer steps. A progress bar (``desc=name``) shows loss, metric and sparsity.

    ``checkpointer`` receives the state after a step when it says a save is due (every
    ``checkpoint_every`` steps, ``checkpoint_seconds`` seconds, or at once after SIGTERM:
    ``Checkpointer``), after the last step (unless ``resume`` had done it), and before the
    ``NonFiniteLoss`` (an AcdcError, one line naming the method, the step and, when saved, the
    checkpoint) raised at the first step whose loss or gradient is not finite: the state then is
    the run after the step before, whose masks the error also keeps.
    """
    log = TrainingLog() if resume is None else training.restore(resume)
    done = len(log.loss)
    bar = progress_bar(total=training.steps, initial=done, progress=progress, desc=training.name, unit="step")
    for i in range(done, training.steps):
        _take_step(training, i, log, checkpointer, bar)
        if checkpointer is not None and i + 1 < training.steps and checkpointer.due(i + 1):
            checkpointer.save(training.state(log))
    bar.close()
    if checkpointer is not None and done < training.steps:
        checkpointer.save(training.state(log))
    return log


def _take_step(training: MaskTraining, i: int, log: TrainingLog, checkpointer: Optional[Checkpointing], bar: tqdm) -> None:
    """Step i: the loss, its gradient, the update; appended to ``log``. On a non-finite loss or
    gradient nothing is updated: ``_stop``."""
    noise = training.generator.get_state()  # the state before step i draws its noise
    outcome = training.step(i)
    if not torch.isfinite(outcome.loss):
        _stop(training, i, log, noise, checkpointer, bar, "the loss", outcome)
    for optimizer in training.optimizers:
        optimizer.zero_grad()
    outcome.loss.backward()
    gradients = [value.grad for value in training.parameters.values() if value.grad is not None]
    if not all(bool(torch.isfinite(gradient).all()) for gradient in gradients):
        _stop(training, i, log, noise, checkpointer, bar, "the loss's gradient", outcome)
    if training.before_update is not None:
        training.before_update()
    for optimizer in training.optimizers:
        optimizer.step()
    log.metric.append(float(outcome.metric.detach()))
    log.sparsity.append(outcome.sparsity)
    log.loss.append(float(outcome.loss.detach()))
    bar.update(1)
    bar.set_postfix(loss=f"{log.loss[-1]:.4g}", metric=f"{log.metric[-1]:.4g}", sparsity=f"{outcome.sparsity:.3f}", refresh=False)


def _stop(
    training: MaskTraining, i: int, log: TrainingLog, noise: Tensor, checkpointer: Optional[Checkpointing], bar: tqdm,
    what: str, outcome: StepOutcome,
) -> NoReturn:
    """Raise ``NonFiniteLoss`` for step i with the state before it (its noise not drawn), saved
    through ``checkpointer`` when there is one."""
    bar.close()
    training.generator.set_state(noise)
    state = training.state(log)
    saved = ""
    if checkpointer is not None:
        checkpointer.save(state)
        masks = f"the masks after step {i}, the last finite one," if i else "the initial masks"
        saved = f"; {masks} are saved with the run's state in {checkpointer.path}"
    detail = f", {outcome.detail}" if outcome.detail else ""
    raise NonFiniteLoss(
        f"{training.name}: {what} is not finite at step {i + 1} of {training.steps} "
        f"(metric {float(outcome.metric.detach()):.6g}{detail}); try a smaller lr{saved}",
        state,
    )
