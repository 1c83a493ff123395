"""Task ``jsonl``: custom datasets from a JSON-lines file or inline records, validated record by record."""

import json
import re
from pathlib import Path

import pytest
import torch
from offline_tokenizers import TaskModel
from tiny_hf import word_tokenizer

from acdc_engine.core.errors import AcdcError
from acdc_engine.measure.metrics import make_metric
from acdc_engine.tasks import make_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def text_model():
    """A model with a word-level tokenizer (BOS id 0): every word of tiny_hf.WORDS is one token."""
    return TaskModel(word_tokenizer())


@pytest.fixture(scope="module")
def ids_model():
    """A model without a tokenizer, vocabulary of 20 tokens."""
    return TaskModel(None, d_vocab=20)


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def ids(*words):
    tokenizer = word_tokenizer()
    return [tokenizer.convert_tokens_to_ids(w) for w in words]


IOI = {"clean": "When Mary and John went to the store , John gave a drink to",
       "corrupted": "When Alice and Bob went to the store , Mary gave a drink to",
       "answer": "Mary", "wrong_answer": "John"}


def test_text_records_are_tokenized_with_the_models_tokenizer_bos_first(text_model, tmp_path):
    task = make_task("jsonl", text_model, path=str(write_jsonl(tmp_path / "d.jsonl", [IOI])))
    assert task.clean.tolist() == [ids("<|endoftext|>", *IOI["clean"].split())]
    assert task.corrupted.tolist() == [ids("<|endoftext|>", *IOI["corrupted"].split())]
    assert task.answers.tolist() == [ids("Mary")] and task.wrong_answers.tolist() == [ids("John")]


def test_text_records_without_bos_when_prepend_bos_is_false(text_model, tmp_path):
    task = make_task("jsonl", text_model, path=str(write_jsonl(tmp_path / "d.jsonl", [IOI])), prepend_bos=False)
    assert task.clean.tolist() == [ids(*IOI["clean"].split())]


def test_token_id_records_are_used_as_given(ids_model, tmp_path):
    record = {"clean": [3, 4, 5, 6], "corrupted": [3, 7, 8, 9], "answer": 4, "wrong_answer": 11}
    task = make_task("jsonl", ids_model, path=str(write_jsonl(tmp_path / "d.jsonl", [record])))
    assert task.clean.tolist() == [[3, 4, 5, 6]] and task.corrupted.tolist() == [[3, 7, 8, 9]]
    assert task.answers.tolist() == [[4]] and task.wrong_answers.tolist() == [[11]]


def test_the_metric_reads_the_last_position(ids_model):
    task = make_task("jsonl", ids_model, records=[{"clean": [1, 2, 3], "corrupted": [4, 5, 6]}])
    assert task.positions.tolist() == [2]


def test_default_metric_is_logit_diff_when_every_record_gives_both_answers(ids_model):
    records = [{"clean": [1, 2], "corrupted": [3, 4], "answer": 5, "wrong_answer": 6}]
    assert make_task("jsonl", ids_model, records=records).default_metric == "logit_diff"


def test_default_metric_is_kl_without_answers(ids_model):
    task = make_task("jsonl", ids_model, records=[{"clean": [1, 2], "corrupted": [3, 4]}])
    assert task.default_metric == "kl" and task.answers is None and task.wrong_answers is None


def test_inline_records_give_the_same_task_as_the_same_records_in_a_file(ids_model, tmp_path):
    records = [{"clean": [1, 2, 3], "corrupted": [4, 5, 6], "answer": 7, "wrong_answer": 8},
               {"clean": [9, 2, 3], "corrupted": [4, 5, 10], "answer": 11, "wrong_answer": 12}]
    from_file = make_task("jsonl", ids_model, path=str(write_jsonl(tmp_path / "d.jsonl", records)))
    inline = make_task("jsonl", ids_model, records=records)
    for key in ("clean", "corrupted", "answers", "wrong_answers", "positions"):
        assert torch.equal(getattr(from_file, key), getattr(inline, key))


def test_every_bad_record_is_reported_by_line_and_none_is_used(text_model, tmp_path):
    lines = [
        IOI,                                                                        # 1 good
        {**IOI, "clean": "When Mary and John went to the store , John gave to"},    # 2 good: a pair may differ in length
        "",                                                                         # 3 blank: skipped
        {**IOI, "corrupted": "When Zed and Bob went to the store , Mary gave a drink to"},  # 4 unknown word
        {"clean": IOI["clean"], "answer": "Mary", "wrong_answer": "John"},          # 5 no corrupted
        '{"clean": "When Mary",',                                                   # 6 not JSON
        {**IOI, "answer": "Mary and"},                                              # 7 two-token answer
        {"clean": [0] * 15, "corrupted": [0] * 14 + [99], "answer": 2, "wrong_answer": 3},  # 8 id 99 > vocab
        {**IOI, "clean": "When Mary and John went to the store , John gave a book to"},  # 9 good
        {"clean": [0] * 9, "corrupted": [0] * 9, "answer": 2, "wrong_answer": 3},   # 10 good: shorter than the rest
        {**IOI, "extra": 1},                                                        # 11 unknown field
    ]
    with pytest.raises(AcdcError) as error:
        make_task("jsonl", text_model, path=str(write_jsonl(tmp_path / "d.jsonl", lines)))
    message = str(error.value)
    reported = {int(n) for n in re.findall(r"line (\d+):", message)}
    assert reported == {4, 5, 6, 7, 8, 11}
    assert "6 of 10 records are invalid" in message
    for complaint in ("does not know", "missing field(s) corrupted", "not valid JSON",
                      "exactly one token", "99", "unknown field(s) extra"):
        assert complaint in message


def test_a_record_with_a_key_given_twice_is_refused_by_line_and_column(ids_model, tmp_path):
    lines = [{"clean": [1, 2], "corrupted": [3, 4]}, '{"clean": [1, 2], "corrupted": [3, 4], "clean": [5, 6]}']
    with pytest.raises(AcdcError, match=r"line 2: duplicate key 'clean' in one object, column 40"):
        make_task("jsonl", ids_model, path=str(write_jsonl(tmp_path / "d.jsonl", lines)))


def test_an_answer_some_records_give_must_be_given_by_all(ids_model):
    records = [{"clean": [1, 2], "corrupted": [3, 4], "answer": 5},
               {"clean": [1, 2], "corrupted": [3, 4]}]
    with pytest.raises(AcdcError, match=r"task.records\[1\]: missing field answer"):
        make_task("jsonl", ids_model, records=records)


def test_text_needs_a_tokenizer(ids_model):
    with pytest.raises(AcdcError, match=r"task.records\[0\]: clean is text but the model has no tokenizer"):
        make_task("jsonl", ids_model, records=[{"clean": "a b", "corrupted": [1, 2]}])


def test_token_ids_must_be_integers(ids_model):
    with pytest.raises(AcdcError, match=r"task.records\[0\]: clean holds \[1.5, True\]"):
        make_task("jsonl", ids_model, records=[{"clean": [1.5, True], "corrupted": [1, 2]}])


def test_path_and_records_are_exclusive_and_one_is_needed(ids_model, tmp_path):
    with pytest.raises(AcdcError, match="exactly one of task.path"):
        make_task("jsonl", ids_model)
    with pytest.raises(AcdcError, match="exactly one of task.path"):
        make_task("jsonl", ids_model, path=str(tmp_path / "d.jsonl"), records=[])


def test_missing_file_is_reported_by_path(ids_model, tmp_path):
    with pytest.raises(AcdcError, match="nothing.jsonl' is not a file"):
        make_task("jsonl", ids_model, path=str(tmp_path / "nothing.jsonl"))


def test_a_file_without_records_is_refused(ids_model, tmp_path):
    with pytest.raises(AcdcError, match="no records"):
        make_task("jsonl", ids_model, path=str(write_jsonl(tmp_path / "d.jsonl", ["", "  "])))


def compose_task(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from acdc_engine.commands.discover import CONF_DIR
    from acdc_engine.commands.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}, cfg.task.name


def mean_logit_diff(model, task):
    with torch.no_grad():
        logits = model(task.clean)[:, task.positions]
    return make_metric("logit_diff", task, logits)(logits[None]).item()  # logits [1 circuit, n, P, vocab]


@pytest.mark.parametrize(
    "overrides",
    [("task=jsonl-example",), ("task=jsonl", f"task.path={REPO / 'examples' / 'toy-induction.jsonl'}")],
    ids=["inline-yaml", "examples-file"],
)
def test_shipped_examples_are_valid_induction_data_for_the_default_model(toy_induction_model, overrides):
    params, name = compose_task(*overrides)
    task = make_task(name, toy_induction_model, **params)
    assert task.default_metric == "logit_diff"
    # logit_diff is lower-is-better: negative when the model prefers the answer, as induction should
    assert mean_logit_diff(toy_induction_model, task) < 0
