"""The data every task yields: clean and corrupted prompts, the positions a metric reads, answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError


@dataclass
class TaskData:
    """Token ids for one task, validated on construction.

    clean, corrupted: long [n_prompts, pos]; prompt i of ``corrupted`` is the resample source for
        prompt i of ``clean``.
    positions: long [P], the positions the metric reads (default: the last position).
    answers, wrong_answers: long [n_prompts, P] or None; the token a correct model predicts at each
        read position, and the competing token (logit and probability difference use both).
    params: the builder's arguments, recorded in the circuit file.
    default_metric: the metric used when a run names none (``acdc_engine.measure.metrics``).
    answer_sets, wrong_answer_sets: long [n_prompts, P, K] or None; per prompt and read position, a
        set of correct and a set of competing tokens, padded with -1 to a common K (each set holds at
        least one token); the set metrics (``set_prob_diff``, ``max_logit_diff``) read them.
    """

    name: str
    clean: Tensor
    corrupted: Tensor
    positions: Tensor | None = None
    answers: Tensor | None = None
    wrong_answers: Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    default_metric: str = "kl"
    answer_sets: Tensor | None = None
    wrong_answer_sets: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AcdcError(f"task name must be a non-empty string, got {self.name!r:.80}")
        self.clean = _as_token_tensor(self.clean, "clean")
        self.corrupted = _as_token_tensor(self.corrupted, "corrupted")
        if self.clean.shape != self.corrupted.shape:
            raise AcdcError(
                f"clean and corrupted token batches differ in shape: {tuple(self.clean.shape)} vs "
                f"{tuple(self.corrupted.shape)}; prompt i of each must have the same length"
            )
        n_prompts, n_pos = self.clean.shape
        if n_prompts == 0 or n_pos == 0:
            raise AcdcError(f"task '{self.name}' has no tokens: shape {tuple(self.clean.shape)}")
        if self.positions is None:
            self.positions = torch.tensor([n_pos - 1])
        self.positions = _as_token_tensor(self.positions, "positions").reshape(-1)
        if len(self.positions) == 0:
            raise AcdcError("positions is empty: the metric needs at least one position to read")
        if self.positions.min() < -n_pos or self.positions.max() >= n_pos:
            raise AcdcError(f"metric positions {self.positions.tolist()} lie outside prompts of length {n_pos}")
        self.positions = self.positions % n_pos
        for key in ("answers", "wrong_answers"):
            value = getattr(self, key)
            if value is None:
                continue
            value = _as_token_tensor(value, key)
            expected = (n_prompts, len(self.positions))
            flat = value.dim() <= 1 and value.numel() == n_prompts * len(self.positions)  # prompt-major
            if value.shape != expected and not flat:
                raise AcdcError(f"{key} must have shape [n_prompts, n_positions] = {expected}, got {tuple(value.shape)}")
            setattr(self, key, value.reshape(expected))
        for key in ("answer_sets", "wrong_answer_sets"):
            if getattr(self, key) is not None:
                setattr(self, key, _as_token_sets(getattr(self, key), key, n_prompts, len(self.positions)))

    def check_vocabulary(self, d_vocab: int) -> None:
        """AcdcError if any token id lies outside [0, d_vocab)."""
        for key in ("clean", "corrupted", "answers", "wrong_answers"):
            value = getattr(self, key)
            if value is not None and (value.min() < 0 or value.max() >= d_vocab):
                raise AcdcError(f"{key} holds token ids outside the model's vocabulary [0, {d_vocab})")
        for key in ("answer_sets", "wrong_answer_sets"):
            value = getattr(self, key)
            if value is not None and value.max() >= d_vocab:  # -1 is padding, checked on construction
                raise AcdcError(f"{key} holds token ids outside the model's vocabulary [0, {d_vocab})")


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task.

    name: the task's name in configs and circuit files.
    config: a dataclass with a ``name`` field and the builder's keyword arguments as fields; Hydra
        checks ``conf/task/<name>.yaml`` and command-line overrides against it.
    build: ``build(model, **params) -> TaskData``; of the model the task runs on it reads only
        ``model.cfg`` (``d_vocab``, ``n_ctx``, ``model_name``) and ``model.tokenizer`` (a Hugging
        Face tokenizer, or None).
    """

    name: str
    config: type
    build: Callable[..., TaskData]


def ordinary_tokens(task: str, d_vocab: int, bos_token: int, needed: int) -> Tensor:
    """Every token id in [0, d_vocab) except ``bos_token``; AcdcError when fewer than ``needed``."""
    ordinary = torch.tensor([t for t in range(d_vocab) if t != bos_token])
    if len(ordinary) < needed:
        raise AcdcError(f"{task} needs {needed} distinct ordinary tokens, the vocabulary has {len(ordinary)}")
    return ordinary


def _as_token_tensor(value: Any, what: str) -> Tensor:
    kind = "positions" if what == "positions" else "token ids"
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:  # ragged, non-numeric, beyond int64
        raise AcdcError(f"{what} must hold integer {kind}: cannot read {type(value).__name__} as a tensor ({error})") from None
    if tensor.numel() == 0:
        tensor = tensor.long()  # an empty list reads as float32; its emptiness is reported by the caller
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise AcdcError(f"{what} must hold integer {kind}, got dtype {tensor.dtype}")
    if tensor.dim() != 2 and what in ("clean", "corrupted"):
        raise AcdcError(f"{what} must be a 2-d batch [n_prompts, pos] of token ids, got shape {tuple(tensor.shape)}")
    return tensor.long()


def _as_token_sets(value: Any, what: str, n_prompts: int, n_positions: int) -> Tensor:
    """long [n_prompts, n_positions, K] (a [n_prompts, K] batch when there is one position)."""
    tensor = _as_token_tensor(value, what)
    if tensor.dim() == 2 and n_positions == 1:
        tensor = tensor[:, None, :]
    if tensor.dim() != 3 or tensor.shape[:2] != (n_prompts, n_positions) or tensor.shape[2] == 0:
        raise AcdcError(
            f"{what} must have shape [n_prompts, n_positions, K] = ({n_prompts}, {n_positions}, K >= 1), "
            f"got {tuple(tensor.shape)}"
        )
    if tensor.min() < -1:
        raise AcdcError(f"{what} holds negative token ids other than the padding -1")
    if not (tensor >= 0).any(-1).all():
        raise AcdcError(f"{what} has an empty set (only padding -1) for some prompt and position")
    return tensor
