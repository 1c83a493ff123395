"""Task ``ioi``: indirect object identification (Wang et al. 2022, "Interpretability in the Wild").

Clean prompt, from a template with the indirect object [A] and the subject [B] (ACDC's default, the
first of Wang et al.'s ABBA templates):
    "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"   -> answer " [A]"
A model that does the task continues with the indirect object (IO, [A]) rather than the subject
(S, [B]). Corrupted prompt (Wang et al.'s ABC distribution): the same template, place and object with
the three name slots filled by three fresh names X, Y, Z, distinct from each other and from IO and S:
    "Then, X and Y went to the [PLACE]. Z gave a [OBJECT] to"
so a patched edge carries no information about which name is repeated. The metric reads each
prompt's last token; ``answers`` is the IO name's token, ``wrong_answers`` the S name's; the default metric is
``logit_diff`` (-(logit[IO] - logit[S])).

A template holds [A] twice (the first clause and its end, the answer) and [B] twice (S1 and S2), and
may hold [PLACE] and [OBJECT] (each filled with one word per prompt). ``BABA_TEMPLATES`` are Wang et
al.'s fifteen; ``ABBA_TEMPLATES`` the same with [A] and [B] swapped in the first clause
(``task.templates`` takes templates, and the words "ABBA" and "BABA" for all fifteen of a family).
Names, places and objects must each be one token of the model's tokenizer
(``acdc_engine.tasks.tokens``). Templates of different lengths share a batch: prompts are
right-padded to the longest (``tokens.pad_pair``) with their lengths, and a clean prompt and its
corruption always have the same length (same template, one-token names).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.tasks.tokens import (
    Piece, Word, bos_prefix, check, next_token_ids, pad_pair, padding_token, require_tokenizer, tokenize,
)

# Wang et al. 2022: the names, places and objects of the IOI dataset.
NAMES = (
    "Michael Christopher Jessica Matthew Ashley Jennifer Joshua Amanda Daniel David James Robert John "
    "Joseph Andrew Ryan Brandon Jason Justin Sarah William Jonathan Stephanie Brian Nicole Nicholas "
    "Anthony Heather Eric Elizabeth Adam Megan Melissa Kevin Steven Thomas Timothy Christina Kyle Rachel "
    "Laura Lauren Amber Brittany Danielle Richard Kimberly Jeffrey Amy Crystal Michelle Tiffany Jeremy "
    "Benjamin Mark Emily Aaron Charles Rebecca Jacob Stephen Patrick Sean Erin Jamie Kelly Samantha Nathan "
    "Sara Dustin Paul Angela Tyler Scott Katherine Andrea Gregory Erica Mary Travis Lisa Kenneth Bryan "
    "Lindsey Kristen Jose Alexander Jesse Katie Lindsay Shannon Vanessa Courtney Christine Alicia Cody "
    "Allison Bradley Samuel"
).split()
PLACES = "store garden restaurant school hospital office house station".split()
OBJECTS = "ring kiss bone basketball computer necklace drink snack".split()

BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)


def abba(template: str) -> str:
    """The template with its first [A] and first [B] swapped (BABA <-> ABBA)."""
    first_a, first_b = template.index("[A]"), template.index("[B]")
    lo, hi = sorted((first_a, first_b))
    return template[:lo] + template[hi : hi + 3] + template[lo + 3 : hi] + template[lo : lo + 3] + template[hi + 3 :]


ABBA_TEMPLATES = tuple(abba(t) for t in BABA_TEMPLATES)
SLOT = re.compile(r"\[([A-Z]+)\]")
SLOTS = ("A", "B", "PLACE", "OBJECT")


@dataclass
class IoiTaskConfig:
    name: str = "ioi"
    n_prompts: int = 100
    seed: int = 0
    templates: list[str] = field(default_factory=lambda: [ABBA_TEMPLATES[0]])
    names: Optional[list[str]] = None  # None: Wang et al.'s 100 names (NAMES)
    places: Optional[list[str]] = None  # None: PLACES
    objects: Optional[list[str]] = None  # None: OBJECTS
    prepend_bos: bool = False  # the ACDC reference feeds GPT-2 the prompts without BOS


def _check_template(template: str) -> None:
    """AcdcError unless ``template`` holds only known slots, [A] twice (the second time at its end) and [B] twice."""
    unknown = sorted(set(SLOT.findall(template)) - set(SLOTS))
    if unknown:
        raise AcdcError(f"task.templates: {template!r} has unknown slots {unknown}; use [A], [B], [PLACE], [OBJECT]")
    if template.count("[A]") != 2 or template.count("[B]") != 2 or not template.endswith("[A]"):
        raise AcdcError(
            f"task.templates: {template!r} must hold [A] (the indirect object) twice, the second time at its "
            "very end (the answer), and [B] (the subject) twice"
        )


def _fill(template: str, a: Sequence[str], b: Sequence[str], place: str, obj: str) -> list[Piece]:
    """Pieces of ``template`` with its k-th [A] filled by a[k], k-th [B] by b[k]."""
    pieces: list[Piece] = []
    used = {"A": 0, "B": 0}
    rest = 0
    for match in SLOT.finditer(template):
        pieces.append(template[rest : match.start()])
        slot = match.group(1)
        if slot in used:
            pieces.append(Word((a if slot == "A" else b)[used[slot]], "task.names"))
            used[slot] += 1
        else:
            pieces.append(Word(place, "task.places") if slot == "PLACE" else Word(obj, "task.objects"))
        rest = match.end()
    return pieces


def _split_answer(pieces: list[Piece]) -> tuple[list[Piece], list[Piece]]:
    """(prompt, continuation): the final word and the whitespace before it become the continuation."""
    *head, before, answer = pieces
    stripped = before.rstrip()
    return [*head, stripped], [before[len(stripped) :], answer]


def _pool(values: Optional[Sequence[str]], default: Sequence[str], key: str, at_least: int) -> list[str]:
    """The distinct entries, in order, of ``values`` (None: ``default``); AcdcError naming ``task.<key>``
    if there are fewer than ``at_least``."""
    pool = list(dict.fromkeys(default if values is None else values))
    if len(pool) < at_least:
        raise AcdcError(f"task.{key} needs at least {at_least} distinct entries, got {len(pool)}")
    return pool


TEMPLATE_FAMILIES = {"ABBA": ABBA_TEMPLATES, "BABA": BABA_TEMPLATES}
"""Words ``task.templates`` takes for a whole family of templates."""


def _checked_templates(templates: Sequence[str]) -> list[str]:
    """``templates`` as a list, each family word (``TEMPLATE_FAMILIES``) replaced by its templates;
    AcdcError if it is empty or a template is malformed (``_check_template``)."""
    templates = [t for entry in templates for t in TEMPLATE_FAMILIES.get(entry, (entry,))]
    if not templates:
        raise AcdcError("task.templates is empty")
    for template in templates:
        _check_template(template)
    return templates


def _check_every_entry(tokenizer: Any, template: str, names: Sequence[str], places: Sequence[str], objects: Sequence[str]) -> None:
    """AcdcError (``check``) if a name, place or object is not one token in ``template``: every entry
    is probed in each slot of its kind, so whatever a seed draws, each drawn word is one token."""
    place, obj = places[0], objects[0]
    probes = [_fill(template, (n, n), (n, n), place, obj) for n in names]
    probes += [_fill(template, names[:2], names[:2], p, obj) for p in places]
    probes += [_fill(template, names[:2], names[:2], place, o) for o in objects]
    check(tokenize(tokenizer, probes), "ioi")


def _draw_prompt_pair(
    rng: random.Random, templates: Sequence[str], names: Sequence[str], places: Sequence[str], objects: Sequence[str]
) -> tuple[list[Piece], list[Piece], list[list[Piece]]]:
    """(clean prompt, corrupted prompt, continuations) of a template, IO, S, three fresh names X, Y, Z,
    a place and an object drawn from ``rng``; the prompts end before the answer, the continuations
    are the whitespace and IO (the answer), then the same whitespace and S (the wrong answer)."""
    template = rng.choice(templates)
    io, s = rng.sample(names, 2)
    x, y, z = rng.sample([n for n in names if n not in (io, s)], 3)
    place, obj = rng.choice(places), rng.choice(objects)
    clean, to_io = _split_answer(_fill(template, (io, io), (s, s), place, obj))
    corrupt = _split_answer(_fill(template, (x, x), (y, z), place, obj))[0]
    return clean, corrupt, [to_io, [to_io[0], Word(s, "task.names")]]


def make_ioi(
    tokenizer: Any,
    n_prompts: int = 100,
    seed: int = 0,
    templates: Sequence[str] = (ABBA_TEMPLATES[0],),
    names: Optional[Sequence[str]] = None,
    places: Optional[Sequence[str]] = None,
    objects: Optional[Sequence[str]] = None,
    prepend_bos: bool = False,
) -> TaskData:
    """IOI prompts (module docstring) tokenized by ``tokenizer`` (any Hugging Face fast tokenizer)."""
    if n_prompts < 1:
        raise AcdcError(f"task.n_prompts must be at least 1, got {n_prompts}")
    bos = bos_prefix(tokenizer, prepend_bos, "ioi")
    templates = _checked_templates(templates)
    name_pool = _pool(names, NAMES, "names", 5)  # IO, S and three fresh names for the corruption
    place_pool = _pool(places, PLACES, "places", 1)
    object_pool = _pool(objects, OBJECTS, "objects", 1)
    _check_every_entry(tokenizer, templates[0], name_pool, place_pool, object_pool)
    rng = random.Random(seed)
    clean_prompts, corrupt_prompts, answers = [], [], []
    for _ in range(n_prompts):
        clean_prompt, corrupt_prompt, candidates = _draw_prompt_pair(rng, templates, name_pool, place_pool, object_pool)
        clean_prompts.append(clean_prompt)
        corrupt_prompts.append(corrupt_prompt)
        answers.append(candidates)
    clean, corrupt = tokenize(tokenizer, clean_prompts), tokenize(tokenizer, corrupt_prompts)
    check(clean + corrupt, "ioi")
    answer_ids = next_token_ids(tokenizer, clean_prompts, answers, "ioi")
    pair = pad_pair([bos + t.ids for t in clean], [bos + t.ids for t in corrupt], padding_token(tokenizer))
    return TaskData(
        name="ioi",
        **pair.fields,
        answers=[[row[0]] for row in answer_ids],
        wrong_answers=[[row[1]] for row in answer_ids],
        params={
            "n_prompts": n_prompts,
            "seed": seed,
            "templates": templates,
            "names": None if names is None else list(names),
            "places": None if places is None else list(places),
            "objects": None if objects is None else list(objects),
            "prepend_bos": prepend_bos,
        },
        default_metric="logit_diff",
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_ioi(require_tokenizer(model, "ioi"), **params)


SPEC = TaskSpec(name="ioi", config=IoiTaskConfig, build=build)
