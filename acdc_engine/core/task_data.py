"""The data every task yields: clean and corrupted prompts, the positions a metric reads, answers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError


@dataclass
class TaskData:
    """Token ids for one task, validated on construction.

    clean, corrupted: long [n_prompts, pos]; prompt i of ``corrupted`` is the resample source for
        prompt i of ``clean``, position by position (a removed edge into position p of clean prompt
        i carries the sender's output at position p of corrupted prompt i).
    lengths, corrupted_lengths: long [n_prompts], how many tokens of each clean / corrupted prompt
        are real; the rest of its row is right padding. Default: every prompt fills the row;
        ``corrupted_lengths`` defaults to ``lengths`` (EAP-IG runs both with the clean prompts'
        attention mask). Prompts of a pair may differ in length; they are aligned by index, as in
        EAP-IG and MIB: where a corrupted prompt is shorter, its padding tokens, run causally as
        tokens, are what the clean prompt's later positions are patched with. A causal model's
        values at a real position never depend on the padding after it, so no attention mask is
        needed; the padding is never read by a metric and never enters a mean.
    positions: the positions the metric reads: long [P] shared by every prompt, or [n_prompts, P]
        per prompt; negative positions count back from each prompt's last real token (-1: the last
        real token). Default: each prompt's last real token. Stored as [P] when every prompt reads
        the same positions, else [n_prompts, P]; every read position is a real token.
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
    lengths: Tensor | None = None
    corrupted_lengths: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AcdcError(f"task name must be a non-empty string, got {self.name!r:.80}")
        self.clean = _as_token_tensor(self.clean, "clean")
        self.corrupted = _as_token_tensor(self.corrupted, "corrupted")
        if self.clean.shape != self.corrupted.shape:
            raise AcdcError(
                f"clean and corrupted token batches differ in shape: {tuple(self.clean.shape)} vs "
                f"{tuple(self.corrupted.shape)}; pad both on the right to one width and give their lengths"
            )
        n_prompts, n_pos = self.clean.shape
        if n_prompts == 0 or n_pos == 0:
            raise AcdcError(f"task '{self.name}' has no tokens: shape {tuple(self.clean.shape)}")
        self.lengths = _as_lengths(self.lengths, "lengths", n_prompts, n_pos)
        self.corrupted_lengths = (
            self.lengths.clone() if self.corrupted_lengths is None
            else _as_lengths(self.corrupted_lengths, "corrupted_lengths", n_prompts, n_pos)
        )
        self.positions = _read_positions(self.positions, self.lengths, n_pos)
        for key in ("answers", "wrong_answers"):
            value = getattr(self, key)
            if value is None:
                continue
            value = _as_token_tensor(value, key)
            expected = (n_prompts, self.n_positions)
            flat = value.dim() <= 1 and value.numel() == n_prompts * self.n_positions  # prompt-major
            if value.shape != expected and not flat:
                raise AcdcError(f"{key} must have shape [n_prompts, n_positions] = {expected}, got {tuple(value.shape)}")
            setattr(self, key, value.reshape(expected))
        for key in ("answer_sets", "wrong_answer_sets"):
            if getattr(self, key) is not None:
                setattr(self, key, _as_token_sets(getattr(self, key), key, n_prompts, self.n_positions))

    @property
    def n_positions(self) -> int:
        """P, how many positions the metric reads in each prompt."""
        return self.positions.shape[-1]

    @property
    def padded(self) -> bool:
        """Whether some clean or corrupted prompt is shorter than the batch (has right padding)."""
        n_pos = self.clean.shape[1]
        return bool((self.lengths < n_pos).any() or (self.corrupted_lengths < n_pos).any())

    def read_positions(self) -> Tensor:
        """The positions each prompt's metric reads, long [n_prompts, P]."""
        return self.positions.expand(len(self.clean), -1) if self.positions.dim() == 1 else self.positions

    def subset(self, prompts: Tensor) -> TaskData:
        """The task on clean prompts ``prompts`` (long [k] indices) and their corrupted partners:
        every per-prompt field taken at those rows, the rest as it is."""
        rows = {key: getattr(self, key)[prompts] for key in PER_PROMPT_FIELDS if getattr(self, key) is not None}
        if self.positions.dim() == 2:
            rows["positions"] = self.positions[prompts]
        return dataclasses.replace(self, **rows)

    def check_padding(self, pad_token: int | None) -> None:
        """AcdcError when a clean prompt is read at a position that holds ``pad_token`` (the model
        tokenizer's padding id, None: unknown) inside a run of it that ends the prompt: right-padded
        prompts given without their lengths, which would be read at the padding. Tasks that give
        ``lengths`` are trusted."""
        if pad_token is None or self.padded:
            return
        trailing = (self.clean == pad_token).flip(1).cumprod(1).flip(1).bool()  # [n, pos]: pad from here to the end
        reads = self.read_positions()
        hit = trailing.gather(1, reads) & (reads > 0)
        if hit.any():
            prompt, slot = (int(i) for i in hit.nonzero()[0])
            raise AcdcError(
                f"task '{self.name}': clean prompt {prompt} is read at position {int(reads[prompt, slot])}, which is "
                f"right padding (token {pad_token}, the tokenizer's pad token, up to the end of the prompt) in "
                f"{int(hit.any(1).sum())} of {len(self.clean)} prompts; give each prompt's length (task field lengths, "
                "or EAP-IG's attention_mask / input_lengths) so the metric reads each prompt's last real token"
            )

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


PER_PROMPT_FIELDS = ("clean", "corrupted", "answers", "wrong_answers", "answer_sets", "wrong_answer_sets", "lengths", "corrupted_lengths")
"""The fields of a ``TaskData`` with one row per prompt (``positions`` too when it is [n_prompts, P])."""


EAP_IG_PADDING_FIELDS = ("attention_mask", "input_lengths")
"""EAP-IG's names for a padded batch's lengths, accepted in a task dict (``task_from_fields``)."""


def task_from_fields(fields: Mapping[str, Any]) -> TaskData:
    """A TaskData from a dict of its fields (``name`` defaults to "custom"), where EAP-IG's
    ``attention_mask`` (long or bool [n_prompts, pos], 1 = real token, right padding) or
    ``input_lengths`` ([n_prompts]) may give the clean prompts' ``lengths``; when several are
    given they must agree."""
    fields = dict(fields)
    given = {key: fields.pop(key) for key in ("lengths",) + EAP_IG_PADDING_FIELDS if fields.get(key) is not None}
    if "attention_mask" in given:
        given["attention_mask"] = _lengths_of_mask(given["attention_mask"])
    if given:
        lengths = {key: _as_token_tensor(value, key).reshape(-1) for key, value in given.items()}
        first, *others = lengths
        for key in others:
            if not torch.equal(lengths[first], lengths[key]):
                raise AcdcError(f"task fields {first} and {key} give different prompt lengths")
        fields["lengths"] = lengths[first]
    return TaskData(name=fields.pop("name", "custom"), **fields)


def _lengths_of_mask(mask: Any) -> Tensor:
    """The lengths [n_prompts] an attention mask [n_prompts, pos] of right-padded prompts gives."""
    mask = torch.as_tensor(mask)
    if mask.dim() != 2 or not ((mask == 0) | (mask == 1)).all():
        raise AcdcError(f"attention_mask must be a [n_prompts, pos] batch of 0 and 1, got shape {tuple(mask.shape)}")
    mask = mask.long()
    lengths = mask.sum(1)
    right_padded = mask == (torch.arange(mask.shape[1])[None] < lengths[:, None]).long()
    if not right_padded.all():
        raise AcdcError(
            "attention_mask is not right padding (each row must be ones, then zeros); pad prompts on the right, "
            "as EAP-IG and MIB do"
        )
    return lengths


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


def _as_lengths(value: Any, what: str, n_prompts: int, n_pos: int) -> Tensor:
    """long [n_prompts] of real-token counts in [1, n_pos] (default: all n_pos)."""
    if value is None:
        return torch.full((n_prompts,), n_pos, dtype=torch.long)
    lengths = _as_token_tensor(value, what).reshape(-1)
    if len(lengths) != n_prompts:
        raise AcdcError(f"{what} must give one length per prompt ({n_prompts}), got {len(lengths)}")
    if lengths.min() < 1 or lengths.max() > n_pos:
        raise AcdcError(f"{what} must lie in [1, {n_pos}] (the batch is {n_pos} tokens wide), got {lengths.min()} .. {lengths.max()}")
    return lengths


def _read_positions(value: Any, lengths: Tensor, n_pos: int) -> Tensor:
    """The metric's positions, [P] or [n_prompts, P], each a real token of its prompt (see ``TaskData``)."""
    n_prompts = len(lengths)
    if value is None:
        return (lengths - 1)[:, None] if (lengths < n_pos).any() else torch.tensor([n_pos - 1])
    positions = _as_token_tensor(value, "positions")
    if positions.dim() > 2 or (positions.dim() == 2 and positions.shape[0] != n_prompts):
        raise AcdcError(f"positions must have shape [P] or [n_prompts, P] = ({n_prompts}, P), got {tuple(positions.shape)}")
    positions = positions.reshape(-1) if positions.dim() < 2 else positions
    if positions.shape[-1] == 0:
        raise AcdcError("positions is empty: the metric needs at least one position to read")
    per_prompt = positions.expand(n_prompts, -1)
    length = lengths[:, None].expand_as(per_prompt)
    if (per_prompt < -length).any() or (per_prompt >= n_pos).any():
        raise AcdcError(f"metric positions {positions.tolist()} lie outside prompts of length {n_pos}")
    per_prompt = torch.where(per_prompt < 0, per_prompt + length, per_prompt)
    beyond = per_prompt >= length
    if beyond.any():
        prompt = int(beyond.any(1).nonzero()[0])
        raise AcdcError(
            f"metric position {int(per_prompt[prompt][beyond[prompt]][0])} of prompt {prompt} lies in its right padding "
            f"(the prompt has {int(lengths[prompt])} real tokens); a metric reads real tokens only"
        )
    return per_prompt[0].clone() if (per_prompt == per_prompt[0]).all() else per_prompt


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
