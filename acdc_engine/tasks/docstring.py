"""Task ``docstring``: predict the next parameter name in a Python docstring (Heimersheim & Janiak 2023).

Clean prompt (reST style, the setting the ACDC paper used: a method with six parameters, two before
the three "matching" ones and one after, a three-word description, two documented parameters with
two-word descriptions):

    def load(self, files, token, path, model, state, root):
        \"\"\"price control action

        :param path: cost issue
        :param model: type age
        :param

The model should continue with " state", the next matching parameter. Corrupted prompt (the
reference's ``random_random``): the same text with the three matching parameters in the signature
and the two documented ones replaced by five fresh names, so nothing tells which name comes next.
Each prompt draws 15 distinct names (the method, the six parameters, the five fresh names and three
more that the generator's other corruptions use); the other 13 names besides the answer are the
wrong answers, as in the ACDC reference. The metric reads the last position.

Metric ``max_logit_diff`` (the default): -(logit[answer] - max over the wrong answers of their
logit); ``answer_sets`` holds each prompt's answer, ``wrong_answer_sets`` its 13 wrong answers.
``answers`` holds the answer too, for ``nll``. Names and description words must each be one token of
the model's tokenizer (``acdc_engine.tasks.tokens``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence


from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.tasks.tokens import (
    Piece, Word, bos_prefix, check, next_token_ids, require_tokenizer, stack_pair, tokenize,
)

# Heimersheim & Janiak 2023: variable names and single-token nouns of the docstring dataset.
VARIABLE_NAMES = (
    "data name file value test new result line user key default request path output node item url model "
    "response text version function log string field start number values sub index error current context "
    "image message check json create size event state row obj parser end files form query fields instance "
    "label run action target array code num table source msg config first required options ret update "
    "module status group content client filename results last read command val base format color settings "
    "order found count match tag title parent call session token server host date description mode "
    "expected project info valid page header option task shape load names port old resource root"
).split()
DESCRIPTION_WORDS = (
    "price control action cost issue process position course minute education type research subject girl "
    "age father force order value act matter health lot street patient class mind church condition paper "
    "bank century section activity table building sense sort staff team student language town plan "
    "management morning committee product practice evidence ground letter foot boy back game food union "
    "role event land art support range stage trade voice arm club field history parent account material "
    "care manager project record example training window air light wife quality rule pound story tax "
    "worker data model nature bed hospital method unit detail date wall computer amount bit president "
    "chapter property son director leader south application board king production operation share lord "
    "contract picture test security election source colour future site loss shop animal heart purpose "
    "standard page doctor factor hair love music charge pattern design piece population tree knowledge "
    "performance plant pressure fire environment size analysis rest success thought region list relation "
    "set space statement demand sea step capital choice player station film feature income individual cup "
    "technology machine cell degree energy growth treatment mile function risk sound task top resource "
    "floor science style hall horse response character user answer dog look brother argument season bill "
    "element glass duty claim fund leg park title note daughter sun box river profit division stone post "
    "client help image oil sector attack direction seat employment goal sign ability campaign fish item "
    "medium show version drug library press surface blood culture memory return bar talk access deal star "
    "text cause mouth payment context reference second article chair earth object agency card collection "
    "communication public document weight bird rock call edge miss option quarter stock aid concept match "
    "network radio target finger forest race sex ball crime message peace review scale scene speech band "
    "expression hill reader owner trust truth turn file past start trial balance copy league length wind "
    "front move pain spirit train contact official strength cash gas shape agent pair protection rise "
    "driver master meaning vote adult play fig route speed credit impact danger flower half path track "
    "video aim bag comment content distance gold link skin boat dad prison sight wine offer writer hole "
    "package confidence generation key phone sample ship threat volume author background engine entry "
    "stuff yard bus regulation row song category consumer football meal wood bridge description existence "
    "flat lip session sheet code flight limit plate rain respect writing capacity dream selection spring "
    "while definition egg examination mark notice output will address bottom kid middle neck run acid "
    "assembly birth ear error module store transfer wave channel component cut fee lead weather block "
    "brain guide program screen connection cover map metal phase pool search sequence sky sum trip cat "
    "display gallery gate heat location reading theme drive faith hell learning opening priority spot tool "
    "castle coal flow lane motion release total wing border index pocket ring billion device engineering "
    "fruit lake leaf pub request square tone walk chain circle creation fall present shot fashion god mass "
    "panel fan iron origin ticket bone cancer chief editor fuel general height round vision warning being "
    "cross living rail working column finding gap grass plane root score shadow shock touch database "
    "formation male ref resident resolution topic break camp currency phrase thinking coat mill stress "
    "boot command depth female frame framework holder ice inch port protein rose saving string wheel "
    "bishop cycle export hat load mode setting stairs travel average camera focus green guard input layer "
    "poll sleep suit bread cake efficiency peak self angle bay bid cloud custom dollar variable zone actor "
    "chip core final frequency gain guy relative rent reply secret shirt apple instance intelligence lad "
    "pipe anger disk fight hero journal left mail pace paragraph platform print rank sand scope shift "
    "stream chemical clock delay host human count mission pack seed tail tie watch dark hold mine net tip "
    "dimension operator professional shell storage summary tube conduct determination drop import label "
    "percent pot proof unity win wire bell comfort complex draft grade lift mouse movie profile standing "
    "belt black check joy local pit red register storm album ban bench button cap chart coin dust folk "
    "margin pole stand stick tin"
).split()

N_DEF_PREFIX, N_MATCHING, N_DEF_SUFFIX = 2, 3, 1  # parameters before, in and after the documented run
N_PARAMS, N_DOCUMENTED = N_DEF_PREFIX + N_MATCHING + N_DEF_SUFFIX, N_MATCHING - 1
N_EXTRA = 3  # names only the reference generator's other corruptions use; wrong answers here
METHOD_DESCRIPTION, PARAM_DESCRIPTION = 3, 2  # words
N_NAMES = 1 + N_PARAMS + N_MATCHING + N_DOCUMENTED + N_EXTRA  # 15


@dataclass
class DocstringTaskConfig:
    name: str = "docstring"
    n_prompts: int = 50
    seed: int = 0
    variable_names: Optional[list[str]] = None  # None: VARIABLE_NAMES
    description_words: Optional[list[str]] = None  # None: DESCRIPTION_WORDS
    prepend_bos: bool = True  # the ACDC reference feeds attn-only-4l the prompts after BOS


def _name(text: str) -> Word:
    return Word(text, "task.variable_names")


def _prompt(method: str, def_args: Sequence[str], doc_args: Sequence[str], description: Sequence[str], arg_descriptions: Sequence[Sequence[str]]) -> list[Piece]:
    """The reST docstring prompt, ending in "    :param" (the answer follows after a space)."""
    pieces: list[Piece] = ["\ndef ", _name(method), "(self"]
    for arg in def_args:
        pieces += [", ", _name(arg)]
    pieces.append('):\n    """')
    for i, word in enumerate(description):
        pieces += [" " if i else "", Word(word, "task.description_words")]
    pieces.append("\n\n")
    for arg, words in zip(doc_args, arg_descriptions):
        pieces += ["    :param ", _name(arg), ":"]
        for word in words:
            pieces += [" ", Word(word, "task.description_words")]
        pieces.append("\n")
    pieces.append("    :param")
    return pieces


def _distinct(variable_names: Optional[Sequence[str]], description_words: Optional[Sequence[str]]) -> tuple[list[str], list[str]]:
    """(names, words): the distinct entries, in order, of the given pools (None: the defaults);
    AcdcError if there are fewer than ``N_NAMES`` names or ``METHOD_DESCRIPTION`` words."""
    names = list(dict.fromkeys(VARIABLE_NAMES if variable_names is None else variable_names))
    words = list(dict.fromkeys(DESCRIPTION_WORDS if description_words is None else description_words))
    if len(names) < N_NAMES:
        raise AcdcError(f"task.variable_names needs at least {N_NAMES} distinct names, got {len(names)}")
    if len(words) < METHOD_DESCRIPTION:
        raise AcdcError(f"task.description_words needs at least {METHOD_DESCRIPTION} distinct words, got {len(words)}")
    return names, words


def _check_every_entry(tokenizer: Any, names: Sequence[str], words: Sequence[str]) -> None:
    """AcdcError (``check``) if a name or description word is not one token in a prompt: every entry
    is probed in each slot of its kind, so whatever a seed draws, each drawn word is one token."""
    description, arg_description = words[:METHOD_DESCRIPTION], [words[:PARAM_DESCRIPTION]] * N_DOCUMENTED
    probes = [_prompt(n, [n] * N_PARAMS, [n] * N_DOCUMENTED, description, arg_description) for n in names]
    probes += [
        _prompt(names[0], names[:N_PARAMS], names[:N_DOCUMENTED], [w] * METHOD_DESCRIPTION, [[w] * PARAM_DESCRIPTION] * N_DOCUMENTED)
        for w in words
    ]
    check(tokenize(tokenizer, probes), "docstring")


def _draw_prompt_pair(rng: random.Random, names: Sequence[str], words: Sequence[str]) -> tuple[list[Piece], list[Piece], list[list[Piece]]]:
    """(clean prompt, corrupted prompt, continuations) of ``N_NAMES`` names and the description
    words drawn from ``rng``; the continuations are [" ", name] for the answer first, then for each
    of the 13 wrong answers."""
    method, *drawn = rng.sample(names, N_NAMES)
    prefix, drawn = drawn[:N_DEF_PREFIX], drawn[N_DEF_PREFIX:]
    matching, drawn = drawn[:N_MATCHING], drawn[N_MATCHING:]
    suffix, drawn = drawn[:N_DEF_SUFFIX], drawn[N_DEF_SUFFIX:]
    fresh_def, drawn = drawn[:N_MATCHING], drawn[N_MATCHING:]
    fresh_doc = drawn[:N_DOCUMENTED]
    answer = matching[-1]
    description = rng.sample(words, METHOD_DESCRIPTION)
    arg_descriptions = [rng.sample(words, PARAM_DESCRIPTION) for _ in range(N_DOCUMENTED)]
    clean = _prompt(method, prefix + matching + suffix, matching[:-1], description, arg_descriptions)
    corrupt = _prompt(method, prefix + fresh_def + suffix, fresh_doc, description, arg_descriptions)
    others = [name for name in [*prefix, *matching, *suffix, *fresh_def, *drawn] if name != answer]
    return clean, corrupt, [[" ", _name(name)] for name in [answer, *others]]


def make_docstring(
    tokenizer: Any,
    n_prompts: int = 50,
    seed: int = 0,
    variable_names: Optional[Sequence[str]] = None,
    description_words: Optional[Sequence[str]] = None,
    prepend_bos: bool = True,
) -> TaskData:
    """Docstring prompts (module docstring) tokenized by ``tokenizer`` (any Hugging Face fast tokenizer)."""
    if n_prompts < 1:
        raise AcdcError(f"task.n_prompts must be at least 1, got {n_prompts}")
    bos = bos_prefix(tokenizer, prepend_bos, "docstring")
    names, words = _distinct(variable_names, description_words)
    _check_every_entry(tokenizer, names, words)
    rng = random.Random(seed)
    clean_prompts, corrupt_prompts, continuations = [], [], []
    for _ in range(n_prompts):
        clean_prompt, corrupt_prompt, candidates = _draw_prompt_pair(rng, names, words)
        clean_prompts.append(clean_prompt)
        corrupt_prompts.append(corrupt_prompt)
        continuations.append(candidates)
    clean, corrupt = tokenize(tokenizer, clean_prompts), tokenize(tokenizer, corrupt_prompts)
    check(clean + corrupt, "docstring")
    ids = next_token_ids(tokenizer, clean_prompts, continuations, "docstring")
    clean_ids, corrupt_ids = stack_pair(bos, clean, corrupt, "docstring", "a corruption must tokenize to its clean prompt's length")
    return TaskData(
        name="docstring",
        clean=clean_ids,
        corrupted=corrupt_ids,
        answers=[[row[0]] for row in ids],
        answer_sets=[[[row[0]]] for row in ids],
        wrong_answer_sets=[[row[1:]] for row in ids],
        params={
            "n_prompts": n_prompts,
            "seed": seed,
            "variable_names": None if variable_names is None else list(variable_names),
            "description_words": None if description_words is None else list(description_words),
            "prepend_bos": prepend_bos,
        },
        default_metric="max_logit_diff",
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_docstring(require_tokenizer(model, "docstring"), **params)


SPEC = TaskSpec(name="docstring", config=DocstringTaskConfig, build=build)
