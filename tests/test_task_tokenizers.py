"""The text tasks on each family's tokenizer conventions: byte-level BPE ("ĠMary": GPT-2, Pythia,
OLMo-2, Qwen, Llama 3) and SentencePiece-style BPE ("▁Mary": Llama 2, Mistral, Gemma), each with its
BOS convention (``offline_tokenizers``); and no task reads more of a model than cfg and tokenizer."""

import re
from functools import cache

import pytest
import torch
from offline_tokenizers import (
    DESCRIPTION, FAMILIES, NAMES, NOUNS, OBJECTS, PLACES, VARIABLES, TaskModel, docstring_corpus, family_tokenizer,
    greater_than_corpus, ioi_corpus, word_start,
)

from acdc_engine.core.errors import AcdcError
from acdc_engine.tasks import make_task
from acdc_engine.tasks.docstring import make_docstring
from acdc_engine.tasks.greater_than import make_greater_than
from acdc_engine.tasks.ioi import make_ioi

CORPORA = {"ioi": ioi_corpus, "greater-than": greater_than_corpus, "docstring": docstring_corpus}
WITH_BOS = [name for name in FAMILIES if name != "qwen2"]
IOI_PROMPT = re.compile(r"Then, (\w+) and (\w+) went to the (\w+)\. (\w+) gave a (\w+) to")


@cache
def tokenizer(family, task, digits=None):
    return family_tokenizer(family, CORPORA[task](), digits=digits)


def ioi(tok, **params):
    return make_ioi(tok, **{"n_prompts": 8, "names": NAMES, "places": PLACES, "objects": OBJECTS, **params})


def greater_than(tok, **params):
    return make_greater_than(tok, **{"n_prompts": 8, "nouns": NOUNS, **params})


def docstring(tok, **params):
    return make_docstring(tok, **{"n_prompts": 4, "variable_names": VARIABLES, "description_words": DESCRIPTION, **params})


def text_of(tok, ids):
    return tok.decode([int(i) for i in ids], skip_special_tokens=True)


# --- word starts -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_ioi_answers_are_the_familys_word_start_tokens_of_io_and_s(family):
    tok = tokenizer(family, "ioi")
    task = ioi(tok)
    for clean, answer, wrong in zip(task.clean, task.answers[:, 0], task.wrong_answers[:, 0]):
        io, s, *_ = IOI_PROMPT.fullmatch(text_of(tok, clean)).groups()
        assert tok.convert_ids_to_tokens([int(answer), int(wrong)]) == [word_start(family, io), word_start(family, s)]


@pytest.mark.parametrize("family", FAMILIES)
def test_ioi_refuses_a_name_the_tokenizer_splits_naming_it_and_the_field(family):
    with pytest.raises(AcdcError, match=r"task\.names.*'Xzqj' is [2-9] tokens"):
        ioi(tokenizer(family, "ioi"), names=NAMES + ["Xzqj"])


@pytest.mark.parametrize("family", FAMILIES)
def test_docstring_answer_and_wrong_answers_are_word_start_tokens_of_the_parameter_names(family):
    tok = tokenizer(family, "docstring")
    task = docstring(tok, prepend_bos=False)
    starts = {word_start(family, name) for name in VARIABLES}
    for answer, wrong in zip(task.answers[:, 0], task.wrong_answer_sets[:, 0]):
        pieces = tok.convert_ids_to_tokens([int(answer), *map(int, wrong)])
        assert set(pieces) <= starts and len(set(pieces)) == 14


# --- years -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [name for name in FAMILIES if name != "qwen2"])  # Qwen's own regex parts every digit
def test_greater_than_endings_are_the_bare_two_digit_tokens_that_follow_a_century(family):
    tok = tokenizer(family, "greater-than", r"\d\d")
    task = greater_than(tok)
    for clean, corrupted, above, upto in zip(task.clean, task.corrupted, task.answer_sets[:, 0], task.wrong_answer_sets[:, 0]):
        (changed,) = (clean != corrupted).nonzero()[:, 0].tolist()
        yy = int(tok.convert_ids_to_tokens(int(clean[changed])))
        assert tok.convert_ids_to_tokens(int(corrupted[changed])) == "01"
        assert tok.convert_ids_to_tokens([int(i) for i in above if i >= 0]) == [f"{e:02d}" for e in range(yy + 1, 100)]
        assert tok.convert_ids_to_tokens([int(i) for i in upto if i >= 0]) == [f"{e:02d}" for e in range(yy + 1)]


@pytest.mark.parametrize("family", ["qwen2", "llama", "gemma", "llama3", "olmo2"])
def test_greater_than_refuses_a_tokenizer_that_writes_numbers_digit_by_digit_or_in_threes(family):
    with pytest.raises(AcdcError, match=r"writes no year of century 11 .* as the two tokens XX \| YY"):
        greater_than(tokenizer(family, "greater-than"))


# --- BOS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", WITH_BOS)
def test_prepend_bos_gives_the_tokenizers_own_encoding_with_its_bos_first(family):
    tok = tokenizer(family, "ioi")
    task = ioi(tok, prepend_bos=True)
    for row in task.clean.tolist():
        text = text_of(tok, row)
        assert row == [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        if FAMILIES[family].adds_bos:  # Llama, Mistral, Gemma, Llama 3: exactly what the tokenizer writes
            assert row == tok(text)["input_ids"]


@pytest.mark.parametrize("family", [name for name in FAMILIES if FAMILIES[name].adds_bos])
def test_without_prepend_bos_the_bos_that_the_tokenizer_adds_by_itself_is_left_out(family):
    tok = tokenizer(family, "ioi")
    task = ioi(tok, prepend_bos=False)
    assert tok.bos_token_id not in task.clean.unique().tolist()
    assert torch.equal(ioi(tok, prepend_bos=True).clean[:, 1:], task.clean)


IOI_RECORD = {"clean": "Then, Mary and John went to the store. John gave a drink to",
              "corrupted": "Then, Alice and Bob went to the store. Carol gave a drink to",
              "answer": " Mary", "wrong_answer": " John"}


@pytest.mark.parametrize(
    "task, build",
    [
        ("ioi", lambda tok: ioi(tok, prepend_bos=True)),
        ("greater-than", lambda tok: greater_than(tok, prepend_bos=True)),
        ("docstring", lambda tok: docstring(tok)),
        ("ioi", lambda tok: make_task("jsonl", TaskModel(tok), records=[IOI_RECORD])),
    ],
    ids=["ioi", "greater-than", "docstring", "jsonl"],
)
def test_prepend_bos_on_a_tokenizer_without_bos_is_refused_naming_the_field(task, build):
    tok = tokenizer("qwen2", task)
    with pytest.raises(AcdcError, match=r"task\.prepend_bos is true but this tokenizer has no BOS token.*set task\.prepend_bos=false"):
        build(tok)


# --- jsonl -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_jsonl_text_is_the_tokenizers_own_tokens_and_a_spaced_answer_the_token_after_the_prompt(family):
    tok = tokenizer(family, "ioi")
    prepend = family in WITH_BOS
    task = make_task("jsonl", TaskModel(tok), records=[IOI_RECORD], prepend_bos=prepend)
    own = tok(IOI_RECORD["clean"], add_special_tokens=False)["input_ids"]
    assert task.clean.tolist() == [[tok.bos_token_id, *own] if prepend else own]
    followed = tok(IOI_RECORD["clean"] + IOI_RECORD["answer"], add_special_tokens=False)["input_ids"]
    assert followed == [*own, int(task.answers[0, 0])]
    assert tok.convert_ids_to_tokens(int(task.answers[0, 0])) == word_start(family, "Mary")
    assert tok.convert_ids_to_tokens(int(task.wrong_answers[0, 0])) == word_start(family, "John")


def test_jsonl_reads_gpt2s_endoftext_in_a_text_prompt_as_that_token_not_as_unknown():
    tok = tokenizer("gpt2", "ioi")  # GPT-2 names <|endoftext|> its unknown token too
    record = {key: "<|endoftext|>" + IOI_RECORD[key] for key in ("clean", "corrupted")}
    task = make_task("jsonl", TaskModel(tok), records=[record], prepend_bos=False)
    assert task.clean[0, 0] == tok.bos_token_id == tok.unk_token_id


# --- what a task reads of the model ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, task, params",
    [
        ("ioi", "ioi", {"n_prompts": 4, "names": NAMES, "places": PLACES, "objects": OBJECTS}),
        ("greater-than", "greater-than", {"n_prompts": 4, "nouns": NOUNS}),
        ("docstring", "docstring", {"n_prompts": 2, "variable_names": VARIABLES, "description_words": DESCRIPTION}),
        ("jsonl", "ioi", {"records": [IOI_RECORD]}),
        ("induction", "ioi", {}),
        ("predecessor", "ioi", {}),
    ],
)
def test_every_task_builds_from_the_models_cfg_and_tokenizer_alone(name, task, params):
    tok = tokenizer("llama", task, r"\d\d" if task == "greater-than" else None)
    built = make_task(name, TaskModel(tok), **params)
    assert built.clean.shape == built.corrupted.shape and built.clean.max() < len(tok)


def test_a_tracr_task_builds_from_the_models_cfg_alone():
    built = make_task("tracr-reverse", TaskModel(None, d_vocab=5, model_name="tracr-reverse"))
    assert built.clean.shape == built.corrupted.shape and built.name == "tracr-reverse"
