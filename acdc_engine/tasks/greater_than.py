"""Task ``greater-than``: complete a year span with a later year (Hanna et al. 2023).

Clean prompt: "The [NOUN] lasted from the year [XX][YY] to [XX]", e.g. "The war lasted from the year
1732 to 17"; a model that does the task continues with two digits greater than YY. Corrupted prompt:
the same tokens with YY's token replaced by the token of "01" (as the ACDC reference does), so the
start year no longer says where the span begins. The metric reads the last position.

Metric ``set_prob_diff`` (the default): -(sum of p(yy) over yy > YY - sum of p(yy) over yy <= YY),
the yy running over the 100 two-digit endings "00".."99", each the token the tokenizer writes it as
right after a century, as in the prompt's year (the token a model emits after "to XX"; GPT-2 writes
it so on its own too, but a SentencePiece-style tokenizer writes an ending on its own with a
word-start "▁"): ``answer_sets`` holds, per prompt, the tokens of the endings above YY, and
``wrong_answer_sets`` those of the endings up to YY (``TaskData``, padded with -1).

Years: XX from ``centuries`` (default 11-17) and YY from 02 to 98, as in Hanna et al.; a year that the
tokenizer does not write as the two tokens XX | YY (GPT-2 writes some years, e.g. " 1776", as one
token) is left out of the pool, as Hanna et al. did; none left is an error. Tokenizers that write
numbers digit by digit (Llama 2, Mistral, Gemma, Qwen, Phi-3) or in runs of up to three (Llama 3,
OLMo-2) have no such years, and the task refuses them: it is defined on two-digit tokens. Nouns,
each century and all 100 endings must be one token each (``acdc_engine.tasks.tokens``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.tasks.tokens import MAX_LISTED, Piece, Tokenized, Word, bos_prefix, check, require_tokenizer, stack, tokenize

# Hanna et al. 2023: the nouns of the greater-than dataset.
NOUNS = (
    "abduction accord affair agreement appraisal assaults assessment attack attempts campaign captivity "
    "case challenge chaos clash collaboration coma competition confrontation consequence conspiracy "
    "construction consultation contact contract convention cooperation custody deal decline decrease "
    "demonstrations development disagreement disorder dispute domination dynasty effect effort "
    "employment endeavor engagement epidemic evaluation exchange existence expansion expedition "
    "experiments fall fame flights friendship growth hardship hostility illness impact imprisonment "
    "improvement incarceration increase insurgency invasion investigation journey kingdom marriage "
    "modernization negotiation notoriety obstruction operation order outbreak outcome overhaul patrols "
    "pilgrimage plague plan practice process program progress project pursuit quest raids reforms reign "
    "relationship retaliation riot rise rivalry romance rule sanctions shift siege slump stature stint "
    "strikes study test testing tests therapy tour tradition treaty trial trip unemployment voyage "
    "warfare work"
).split()
ENDINGS = tuple(f"{yy:02d}" for yy in range(100))
FIRST_YY, LAST_YY = 2, 98
CORRUPT_YY = 1


@dataclass
class GreaterThanTaskConfig:
    name: str = "greater-than"
    n_prompts: int = 100
    seed: int = 0
    nouns: Optional[list[str]] = None  # None: Hanna et al.'s nouns (NOUNS)
    centuries: list[int] = field(default_factory=lambda: list(range(11, 18)))
    prepend_bos: bool = False  # the ACDC reference feeds GPT-2 the prompts without BOS


def _prompt(noun: str, century: str, yy: str) -> list[Piece]:
    return [
        "The ", Word(noun, "task.nouns"), " lasted from the year ", Word(century, "task.centuries"),
        Word(yy, "the two-digit year endings"), " to ", Word(century, "task.centuries"),
    ]


@dataclass(frozen=True)
class _Year:
    """A probe prompt of year XXYY, tokenized; ``problem`` says why XX | YY are not two tokens of
    their own (None when they are)."""

    xx: str
    yy: str
    probe: Tokenized
    problem: Optional[str]


def _written_years(tokenizer: Any, centuries: Sequence[int], noun: str) -> list[_Year]:
    """The probe of every year XXYY, XX in ``centuries`` and YY in 00..99, century by century."""
    years = [(f"{century}", f"{yy:02d}") for century in centuries for yy in range(100)]
    probes = tokenize(tokenizer, [_prompt(noun, xx, yy) for xx, yy in years])
    out = []
    for (xx, yy), probe in zip(years, probes):
        problem = next((f"{p.word!r} {p.detail}" for p in probe.problems if p.source != "task.nouns"), None)
        out.append(_Year(xx, yy, probe, problem))
    return out


def _pool(written: Sequence[_Year], centuries: Sequence[int]) -> list[tuple[str, str]]:
    pool, empty = [], []
    for century in centuries:
        candidates = [y for y in written if y.xx == f"{century}" and FIRST_YY <= int(y.yy) <= LAST_YY]
        kept = [(y.xx, y.yy) for y in candidates if y.problem is None]
        if not kept:
            empty.append(f"{century} (e.g. {candidates[0].problem})")
        pool += kept
    if empty:
        raise AcdcError(
            f"task 'greater-than': this tokenizer writes no year of century {'; '.join(empty)} as the two "
            "tokens XX | YY; the task needs a tokenizer that splits years into two-digit tokens, as GPT-2's "
            "does (one that writes numbers digit by digit or in threes has no such year; else leave such "
            "centuries out of task.centuries)"
        )
    return pool


def year_pool(tokenizer: Any, centuries: Sequence[int], noun: str = "war") -> list[tuple[str, str]]:
    """(XX, YY) of the years XX02..XX98 that ``tokenizer`` writes as the two tokens XX | YY in the
    prompt; AcdcError naming the centuries none of whose years it writes so."""
    return _pool(_written_years(tokenizer, centuries, noun), centuries)


def _endings(written: Sequence[_Year]) -> torch.Tensor:
    """long [100]: the token of each ending "00".."99" in the first year of ``written`` that holds it
    as a token of its own (a token's text has one id, so any such year gives the same token)."""
    found: dict[str, int] = {}
    for year in written:
        if year.problem is None and year.yy not in found:
            found[year.yy] = year.probe.ids[year.probe.word_positions[2]]
    missing = [e for e in ENDINGS if e not in found]
    if missing:
        example = next(y for y in written if y.yy == missing[0])
        raise AcdcError(
            f"task 'greater-than': this tokenizer writes the ending(s) {', '.join(missing[:MAX_LISTED])}"
            f"{' ...' if len(missing) > MAX_LISTED else ''} as a token of its own after no century of "
            f"task.centuries (e.g. {example.problem}); the metric needs a token for each of the 100 endings 00..99"
        )
    return torch.tensor([found[e] for e in ENDINGS])


def make_greater_than(
    tokenizer: Any,
    n_prompts: int = 100,
    seed: int = 0,
    nouns: Optional[Sequence[str]] = None,
    centuries: Sequence[int] = tuple(range(11, 18)),
    prepend_bos: bool = False,
) -> TaskData:
    """Greater-than prompts (module docstring) tokenized by ``tokenizer`` (any Hugging Face fast tokenizer)."""
    if n_prompts < 1:
        raise AcdcError(f"task.n_prompts must be at least 1, got {n_prompts}")
    bos = bos_prefix(tokenizer, prepend_bos, "greater-than")
    bad = [c for c in centuries if not 10 <= c <= 99]
    if not centuries or bad:
        raise AcdcError(f"task.centuries must list two-digit centuries (10-99), got {list(centuries)}")
    noun_pool = list(dict.fromkeys(NOUNS if nouns is None else nouns))
    if not noun_pool:
        raise AcdcError("task.nouns is empty")
    written = _written_years(tokenizer, centuries, noun_pool[0])
    years = _pool(written, centuries)
    ending_ids = _endings(written)
    check(tokenize(tokenizer, [_prompt(noun, *years[0]) for noun in noun_pool]), "greater-than")  # every noun
    rng = random.Random(seed)
    drawn = [(rng.choice(noun_pool), rng.choice(years)) for _ in range(n_prompts)]
    prompts = [_prompt(noun, century, yy) for noun, (century, yy) in drawn]
    clean = tokenize(tokenizer, prompts)
    check(clean, "greater-than")
    clean_ids = stack([bos + t.ids for t in clean], [t.text for t in clean], "clean", "greater-than")
    yy_position = torch.tensor([t.word_positions[2] for t in clean]) + len(bos)
    rows = torch.arange(n_prompts)
    start = torch.tensor([int(yy) for _, (_, yy) in drawn])
    corrupt_ids = clean_ids.clone()
    corrupt_ids[rows, yy_position] = ending_ids[CORRUPT_YY]
    above = torch.arange(100)[None, :] > start[:, None]  # [n_prompts, 100]
    every = ending_ids.expand(n_prompts, -1)
    return TaskData(
        name="greater-than",
        clean=clean_ids,
        corrupted=corrupt_ids,
        answer_sets=every.masked_fill(~above, -1)[:, None, :],
        wrong_answer_sets=every.masked_fill(above, -1)[:, None, :],
        params={
            "n_prompts": n_prompts,
            "seed": seed,
            "nouns": None if nouns is None else list(nouns),
            "centuries": list(centuries),
            "prepend_bos": prepend_bos,
        },
        default_metric="set_prob_diff",
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_greater_than(require_tokenizer(model, "greater-than"), **params)


SPEC = TaskSpec(name="greater-than", config=GreaterThanTaskConfig, build=build)
