"""Prompts written as text, tokenized by any Hugging Face tokenizer, with single-token checks.

A prompt is a sequence of pieces: plain text (``str``) and ``Word``s, the words a task is about (a
name, a year's digits, a parameter name). The joined text is tokenized once, with character offsets,
and each word must come out as exactly one token of its own: not split into several tokens, not
merged with the text around it (a token may take in the whitespace just before the word, as the
byte-level BPE of GPT-2, Pythia, Qwen, Llama 3 and OLMo-2 does in "ĠMary" and the SentencePiece-style
BPE of Llama 2, Mistral and Gemma does in "▁Mary", but nothing else), and not the tokenizer's unknown
token. Whatever breaks that is reported as a ``Problem``; ``check`` turns problems into one
``AcdcError`` that names every offending word, what the tokenizer made of it and the config field it
came from. An answer is located the same way, as the token its text adds after its prompt
(``next_token_ids``), so the word-start convention never has to be spelled out.

BOS: token ids are the tokenizer's own without special tokens (``add_special_tokens=False``: nothing
the tokenizer would add by itself, such as the ``<s>`` of Llama 2 and Mistral, the ``<bos>`` of
Gemma or the ``<|begin_of_text|>`` of Llama 3); a task prepends ``tokenizer.bos_token_id`` itself
when ``task.prepend_bos`` is true (``bos_prefix``), so a prompt is exactly what the tokenizer writes
with its own special tokens (tokenizers that add a BOS) or that with the BOS token in front (GPT-2,
Pythia, OLMo-2: ``<|endoftext|>``). A tokenizer without a BOS token (Qwen's) is refused when
``task.prepend_bos`` is true: nothing is prepended in its place. Offsets need a fast (Rust
``tokenizers``) tokenizer, which every tokenizer that ``transformers`` 5 loads by default is.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError

MAX_LISTED = 8  # offending words named in one error message


@dataclass(frozen=True)
class Word:
    """A word of a prompt that must be one token. ``source`` names where it came from in errors,
    e.g. ``"task.names"``."""

    text: str
    source: str


Piece = Union[str, Word]


@dataclass(frozen=True)
class Problem:
    """A word that is not one token of its own: ``detail`` says what the tokenizer made of it."""

    word: str
    source: str
    detail: str


@dataclass
class Tokenized:
    """One prompt's token ids (no special tokens), the token index of each of its ``Word``s in
    order, and the problems found (empty when every word is one token)."""

    text: str
    ids: list[int]
    word_positions: list[int]
    problems: list[Problem] = field(default_factory=list)


def require_tokenizer(model: Any, task: str) -> Any:
    """``model.tokenizer``; AcdcError if the model has none (a model built from a config has none)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise AcdcError(
            f"task '{task}' writes its prompts as text and needs the model's tokenizer, but this model has "
            "no tokenizer: use a pretrained model (e.g. model=gpt2) or attach one (model.tokenizer = ...)"
        )
    return tokenizer


def unknown_token_id(tokenizer: Any) -> int | None:
    """The id text becomes when the tokenizer does not know it; None when it has none. GPT-2's family
    names ``<|endoftext|>`` (its BOS and EOS) as unknown token although byte-level BPE never emits
    it for text: a token that is also the BOS or EOS token is not taken for the unknown token."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or unknown in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        return None
    return int(unknown)


def tokenize(tokenizer: Any, prompts: Sequence[Sequence[Piece]]) -> list[Tokenized]:
    """Tokenize each prompt's joined text in one batch and locate its words (see the module docstring)."""
    texts, spans = [], []
    for pieces in prompts:
        text, where = "", []
        for piece in pieces:
            if isinstance(piece, Word):
                where.append((piece, len(text), len(text) + len(piece.text)))
                text += piece.text
            else:
                text += piece
        texts.append(text)
        spans.append(where)
    if not texts:
        return []
    try:
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise AcdcError(
            f"tokenizer {type(tokenizer).__name__} gives no character offsets; the text tasks need a fast "
            "(Rust 'tokenizers') tokenizer, e.g. AutoTokenizer.from_pretrained(..., use_fast=True)"
        ) from None
    unknown = unknown_token_id(tokenizer)
    out = []
    for text, where, ids, offsets in zip(texts, spans, encoded["input_ids"], encoded["offset_mapping"]):
        ids = [int(i) for i in ids]
        positions, problems = [], []
        ends = list(accumulate((e for _, e in offsets), max))
        for word, start, end in where:
            position, detail = _locate(tokenizer, text, ids, offsets, ends, start, end, unknown)
            positions.append(position)
            if detail is not None:
                problems.append(Problem(word.text, word.source, detail))
        out.append(Tokenized(text, ids, positions, problems))
    return out


def _locate(tokenizer: Any, text: str, ids: list[int], offsets: Sequence, ends: list[int], start: int, end: int, unknown: int | None) -> tuple[int, str | None]:
    """(token index, None) if text[start:end] is one token of its own, else (-1, what went wrong).
    ``ends``: the running maximum of the tokens' end offsets (for a binary search)."""
    covering = []
    for i in range(bisect_right(ends, start), len(offsets)):
        s, e = offsets[i]
        if s >= end:
            break
        if e > s:
            covering.append(i)
    if len(covering) != 1:
        return -1, f"is {len(covering)} tokens {tokenizer.convert_ids_to_tokens([ids[i] for i in covering])}"
    (index,) = covering
    s, e = offsets[index]
    piece = tokenizer.convert_ids_to_tokens(ids[index])
    if e != end or s > start or text[s:start].strip():
        return -1, f"is not a token of its own: it shares the token {piece!r} with the text around it"
    if unknown is not None and ids[index] == unknown:
        return -1, f"is not in the vocabulary: it becomes the unknown token {piece!r}"
    return index, None


def check(tokenized: Sequence[Tokenized], task: str) -> None:
    """AcdcError naming every word (up to ``MAX_LISTED``) that is not one token, grouped by source."""
    seen: dict[tuple[str, str], str] = {}
    for prompt in tokenized:
        for problem in prompt.problems:
            seen.setdefault((problem.source, problem.word), problem.detail)
    if not seen:
        return
    sources = sorted({source for source, _ in seen})
    listed = [f"{word!r} {detail}" for (_, word), detail in list(seen.items())[:MAX_LISTED]]
    more = f" (and {len(seen) - MAX_LISTED} more)" if len(seen) > MAX_LISTED else ""
    raise AcdcError(
        f"task '{task}' needs each word from {', '.join(sources)} to be one token of this tokenizer, and "
        f"{len(seen)} {'is' if len(seen) == 1 else 'are'} not: {'; '.join(listed)}{more}. Leave them out of {' / '.join(sources)} "
        "or use a model whose tokenizer keeps them whole"
    )


def next_token_ids(
    tokenizer: Any, prompts: Sequence[Sequence[Piece]], continuations: Sequence[Sequence[Sequence[Piece]]], task: str
) -> list[list[int]]:
    """The token each continuation adds after its prompt: ``result[i][j]`` for prompt i and its
    continuation j (pieces ending in a ``Word``, e.g. ``[" ", Word("Mary", ...)]``).

    Each prompt is tokenized with each continuation appended: the prompt's own tokens must come out
    unchanged and exactly one token must follow, the continuation's word (AcdcError otherwise).
    """
    flat = [list(p) + list(c) for p, conts in zip(prompts, continuations) for c in conts]
    bare = tokenize(tokenizer, prompts)
    extended = tokenize(tokenizer, flat)
    check(extended, task)
    out, k = [], 0
    for prompt, conts in zip(bare, continuations):
        row = []
        for _ in conts:
            full = extended[k]
            k += 1
            if full.ids[: len(prompt.ids)] != prompt.ids or len(full.ids) != len(prompt.ids) + 1:
                raise AcdcError(
                    f"task '{task}': appending the answer to {prompt.text[-40:]!r} changes how the prompt is "
                    f"tokenized ({len(prompt.ids)} tokens alone, {len(full.ids)} with {full.text[len(prompt.text):]!r}); "
                    "the answer must be one token that follows the prompt's own tokens"
                )
            row.append(full.ids[-1])
        out.append(row)
    return out


def bos_prefix(tokenizer: Any, prepend_bos: bool, task: str) -> list[int]:
    """What a task puts before every prompt's tokens: ``[tokenizer.bos_token_id]`` when
    ``prepend_bos``, else nothing; AcdcError naming ``task.prepend_bos`` when the tokenizer has no
    BOS token (nothing is prepended in its place)."""
    if not prepend_bos:
        return []
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise AcdcError(
            f"task '{task}': task.prepend_bos is true but this tokenizer has no BOS token (Qwen's have none); "
            "set task.prepend_bos=false"
        )
    return [int(bos)]


def stack(rows: Sequence[Sequence[int]], texts: Sequence[str], what: str, task: str) -> Tensor:
    """long [len(rows), length]; AcdcError if the prompts tokenize to different lengths."""
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        example = {len(row): text for row, text in zip(rows, texts)}
        raise AcdcError(
            f"task '{task}': {what} prompts tokenize to different lengths ({', '.join(map(str, lengths))} tokens, "
            f"e.g. {example[lengths[0]]!r} and {example[lengths[-1]]!r}); all prompts of a batch need one length"
        )
    return torch.tensor([list(row) for row in rows], dtype=torch.long)


def stack_pair(bos: list[int], clean: Sequence[Tokenized], corrupt: Sequence[Tokenized], task: str, hint: str) -> tuple[Tensor, Tensor]:
    """(clean, corrupted) token ids, long [n_prompts, len(bos) + prompt length] each, ``bos``
    before every prompt; AcdcError unless all prompts, clean and corrupted, have one length
    (``hint`` says what the task's corruption must do)."""
    clean_ids = stack([bos + t.ids for t in clean], [t.text for t in clean], "clean", task)
    corrupt_ids = stack([bos + t.ids for t in corrupt], [t.text for t in corrupt], "corrupted", task)
    if clean_ids.shape != corrupt_ids.shape:
        raise AcdcError(
            f"task '{task}': clean prompts have {clean_ids.shape[1]} tokens and their corruptions "
            f"{corrupt_ids.shape[1]}; {hint}"
        )
    return clean_ids, corrupt_ids


def padding_token(tokenizer: Any) -> int:
    """The token id right padding is written with: the tokenizer's pad token, else its EOS token (as
    TransformerLens pads, and so EAP-IG and MIB), else 0 (no tokenizer). Only a corrupted prompt
    shorter than its clean prompt is ever read at its padding (see ``TaskData``)."""
    for name in ("pad_token_id", "eos_token_id"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, int):
            return token
    return 0


@dataclass(frozen=True)
class PaddedPair:
    """Clean and corrupted prompts right-padded to one width: ids long [n_prompts, width] each,
    lengths long [n_prompts] each (the real tokens of each row)."""

    clean: Tensor
    corrupted: Tensor
    lengths: Tensor
    corrupted_lengths: Tensor

    @property
    def fields(self) -> dict[str, Tensor]:
        """The ``TaskData`` fields this pair gives (lengths only when some row is padded)."""
        out = {"clean": self.clean, "corrupted": self.corrupted}
        if (self.lengths < self.clean.shape[1]).any() or (self.corrupted_lengths < self.clean.shape[1]).any():
            out.update(lengths=self.lengths, corrupted_lengths=self.corrupted_lengths)
        return out


def pad_pair(clean: Sequence[Sequence[int]], corrupted: Sequence[Sequence[int]], pad: int) -> PaddedPair:
    """Prompts of any lengths (row i of ``clean`` pairs with row i of ``corrupted``), each right-padded
    with ``pad`` to the longest prompt of either."""
    width = max(len(row) for row in [*clean, *corrupted])

    def padded(rows: Sequence[Sequence[int]]) -> Tensor:
        return torch.tensor([list(row) + [pad] * (width - len(row)) for row in rows], dtype=torch.long)

    def lengths(rows: Sequence[Sequence[int]]) -> Tensor:
        return torch.tensor([len(row) for row in rows], dtype=torch.long)

    return PaddedPair(padded(clean), padded(corrupted), lengths(clean), lengths(corrupted))
