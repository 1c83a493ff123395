"""Task ``greater-than``: complete a year span with a later year (Hanna et al. 2023).

Clean prompt: "The [NOUN] lasted from the year [XX][YY] to [XX]", e.g. "The war lasted from the year
1732 to 17"; a model that does the task continues with two digits greater than YY. Corrupted prompt:
the same tokens with YY's token replaced by the token of "01" (as the ACDC reference does), so the
start year no longer says where the span begins. The metric reads the last position.

Metric ``set_prob_diff`` (the default): -(sum of p(yy) over yy > YY - sum of p(yy) over yy <= YY),
the yy running over the 100 two-digit endings "00".."99", each the token the tokenizer writes it as
on its own (the token a model emits after " XX"; it must be the token YY has inside the prompt's
year): ``answer_sets`` holds, per prompt, the tokens of the endings above YY, and
``wrong_answer_sets`` those of the endings up to YY (``TaskData``, padded with -1).

Years: XX from ``centuries`` (default 11-17) and YY from 02 to 98, as in Hanna et al.; a year that the
tokenizer does not write as the two tokens XX | YY (GPT-2 writes some years, e.g. " 1776", as one
token) is left out of the pool, as Hanna et al. did; none left is an error. Nouns, each century and
all 100 endings must be one token each (``acdc_engine.tasks.tokens``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from acdc_engine.errors import AcdcError
from acdc_engine.tasks.task_data import TaskData, TaskSpec
from acdc_engine.tasks.tokens import Piece, Word, check, require_tokenizer, stack, tokenize, with_bos

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


def year_pool(tokenizer: Any, centuries: Sequence[int], noun: str = "war") -> list[tuple[str, str]]:
    """(XX, YY) of the years XX02..XX98 that ``tokenizer`` writes as the two tokens XX | YY in the
    prompt; AcdcError naming the centuries none of whose years it writes so."""
    pool, empty = [], []
    for century in centuries:
        candidates = [(f"{century}", f"{yy:02d}") for yy in range(FIRST_YY, LAST_YY + 1)]
        probes = tokenize(tokenizer, [_prompt(noun, xx, yy) for xx, yy in candidates])
        problems = [[p for p in probe.problems if p.source != "task.nouns"] for probe in probes]
        kept = [year for year, found in zip(candidates, problems) if not found]
        if not kept:
            empty.append(f"{century} (e.g. {problems[0][0].word!r} {problems[0][0].detail})")
        pool += kept
    if empty:
        raise AcdcError(
            f"task 'greater-than': this tokenizer writes no year of century {'; '.join(empty)} as the two "
            "tokens XX | YY; the task needs a tokenizer that splits years into two-digit tokens, as GPT-2's "
            "does (or leave such centuries out of task.centuries)"
        )
    return pool


def endings(tokenizer: Any) -> torch.Tensor:
    """long [100]: the token of each two-digit ending "00".."99" written on its own (the token a model
    emits after " XX"); AcdcError if one is not a single token."""
    written = tokenize(tokenizer, [[Word(e, "the two-digit year endings")] for e in ENDINGS])
    check(written, "greater-than")
    return torch.tensor([t.ids[t.word_positions[0]] for t in written])


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
    bad = [c for c in centuries if not 10 <= c <= 99]
    if not centuries or bad:
        raise AcdcError(f"task.centuries must list two-digit centuries (10-99), got {list(centuries)}")
    noun_pool = list(dict.fromkeys(NOUNS if nouns is None else nouns))
    if not noun_pool:
        raise AcdcError("task.nouns is empty")
    years = year_pool(tokenizer, centuries, noun_pool[0])
    check(tokenize(tokenizer, [_prompt(noun, *years[0]) for noun in noun_pool]), "greater-than")  # every noun
    rng = random.Random(seed)
    drawn = [(rng.choice(noun_pool), rng.choice(years)) for _ in range(n_prompts)]
    prompts = [_prompt(noun, century, yy) for noun, (century, yy) in drawn]
    clean = tokenize(tokenizer, prompts)
    check(clean, "greater-than")
    ending_ids = endings(tokenizer)
    clean_ids = stack(with_bos([t.ids for t in clean], tokenizer, prepend_bos, "greater-than"), [t.text for t in clean], "clean", "greater-than")
    yy_position = torch.tensor([t.word_positions[2] for t in clean]) + int(prepend_bos)
    rows = torch.arange(n_prompts)
    start = torch.tensor([int(yy) for _, (_, yy) in drawn])
    mismatch = (clean_ids[rows, yy_position] != ending_ids[start]).nonzero()
    if len(mismatch):
        i = int(mismatch[0])
        raise AcdcError(
            f"task 'greater-than': this tokenizer writes the ending {drawn[i][1][1]!r} of year {''.join(drawn[i][1])} "
            f"as token {int(clean_ids[i, yy_position[i]])} but on its own as token {int(ending_ids[start[i]])}; "
            "the metric needs the two to agree"
        )
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
