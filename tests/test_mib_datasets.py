"""Task ``mib``: MIB's circuit-track datasets (IOI, MCQA, arithmetic, ARC) read from a local copy
with the fields, splits, counterfactuals, filters and answer tokens of MIB's ``HFEAPDataset``.

The datasets are small files written here in MIB's schema (``Dataset.save_to_disk``, parquet,
jsonl, csv, a hub snapshot); tokenizers are trained here (``offline_tokenizers``).
"""

import math
import random
import sys

import pytest
import torch
from factories import small_model
from offline_tokenizers import TaskModel, family_tokenizer, word_level_tokenizer

from acdc_engine import AcdcError, discover
from acdc_engine.tasks import make_task

datasets = pytest.importorskip("datasets")

# --- rows in MIB's schema ------------------------------------------------------------------------


def ioi_row(prompt, io, s, c, s2_flip, abc):
    return {
        "prompt": prompt,
        "metadata": {"indirect_object": io, "subject": s, "random_c": c},
        "s2_io_flip_counterfactual": {"prompt": s2_flip},
        "abc_counterfactual": {"prompt": abc},
    }


IOI_TRAIN = [
    ioi_row("When Mary and John went to the store, John gave a drink to", "Mary", "John", "Carol",
            "When Mary and John went to the store, Mary gave a drink to",
            "When Alice and Bob went to the store, Carol gave a drink to"),
    ioi_row("Then Alice and Bob left. Bob said hi to", "Alice", "Bob", "Dave",
            "Then Alice and Bob left. Alice said hi to", "Then Carol and Dave left. Mary said hi to"),
    ioi_row("Then Mary and John left. John said hi to", "Mary", "John", "Xavierina",  # random_c: several tokens
            "Then Mary and John left. Mary said hi to", "Then Alice and Bob left. Carol said hi to"),
    ioi_row("Afterwards Carol and Dave talked, and Dave spoke to", "Carol", "Dave", "Alice",
            "Afterwards Carol and Dave talked, and Carol spoke to", "Afterwards Mary and John talked, and Bob spoke to"),
]
IOI_VALIDATION = [
    ioi_row("Then Dave and Carol left. Carol said hi to", "Dave", "Carol", "Bob",
            "Then Dave and Carol left. Dave said hi to", "Then Mary and John left. Alice said hi to"),
]


def choice_row(prompt, labels, key, cf_prompt, cf_labels, cf_key):
    return {
        "prompt": prompt,
        "choices": {"label": labels, "text": ["red", "blue"][: len(labels)]},
        "answerKey": key,
        "symbol_counterfactual": {"prompt": cf_prompt, "choices": {"label": cf_labels, "text": ["red", "blue"]}, "answerKey": cf_key},
    }


QUESTION = "The sky is blue. What color is the sky?\nA. red\nB. blue\nAnswer:"
CHOICE_ROWS = [
    choice_row(QUESTION, ["A", "B"], 1, QUESTION.replace("A.", "C.").replace("B.", "D."), ["C", "D"], 1),
    choice_row("Grass is green. What color is grass?\nA. green\nB. red\nAnswer:", ["A", "B"], 0,
               "Grass is green. What color is grass?\nB. green\nA. red\nAnswer:", ["B", "A"], 0),
    choice_row(QUESTION, ["A", "B"], 1, QUESTION, ["A", "Zqxv"], 1),  # counterfactual label: several tokens
]


def arithmetic_row(prompt, label, operator, cf_prompt, cf_label):
    counterfactual = None if cf_prompt is None else {"prompt": cf_prompt, "label": cf_label}
    return {"prompt": prompt, "label": label, "operator": operator, "random_counterfactual": counterfactual}


ARITHMETIC_ROWS = [
    arithmetic_row("Q: How much is 5 plus 7? A:", 12, "+", "Q: How much is 3 plus 4? A:", 7),
    arithmetic_row("Q: How much is 9 minus 4? A:", 5, "-", "Q: How much is 8 minus 5? A:", 3),
    arithmetic_row("Q: How much is 2 plus 2? A:", 4, "+", None, None),  # no counterfactual
    arithmetic_row("Q: How much is 90000 plus 8765? A:", 98765, "+", "Q: How much is 3 plus 4? A:", 7),  # label: several tokens
    arithmetic_row("Q: What is 8 plus 7? A:", 15, "+", "Q: How much is 5 plus 7? A:", 12),
    arithmetic_row("Q: How much is 12 minus 9? A:", 3, "-", "Q: How much is 9 minus 4? A:", 5),
]

CORPUS = [
    *(row["prompt"] for row in IOI_TRAIN + IOI_VALIDATION),
    *(row[key]["prompt"] for row in IOI_TRAIN + IOI_VALIDATION for key in ("s2_io_flip_counterfactual", "abc_counterfactual")),
    " Mary John Alice Bob Carol Dave", QUESTION, CHOICE_ROWS[1]["prompt"], CHOICE_ROWS[1]["symbol_counterfactual"]["prompt"],
    *(row["prompt"] for row in ARITHMETIC_ROWS), "12", "15",
]


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """load_dataset's cache in a temporary folder, and no progress bars."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))
        was_enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        yield
        if was_enabled:
            datasets.enable_progress_bars()


@pytest.fixture(scope="module")
def tok():
    """GPT-2's byte-level BPE over the rows' words: every name after a space is one token; " Xavierina",
    "Zqxv" and "98765" are several."""
    return family_tokenizer("gpt2", CORPUS)


@pytest.fixture(scope="module")
def model(tok):
    return TaskModel(tok)


def save_splits(folder, **splits):
    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture
def ioi_dir(tmp_path):
    return save_splits(tmp_path / "ioi", train=IOI_TRAIN, validation=IOI_VALIDATION)


def mib(model, dataset, path, **params):
    return make_task("mib", model, dataset=dataset, path=path, **params)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def first_token(tok, text):
    """What MIB's HFEAPDataset takes as an answer: the first token of the text tokenized alone."""
    return ids(tok, text)[0]


def real_rows(task):
    return [row[:n].tolist() for row, n in zip(task.clean, task.lengths)]


# --- IOI -----------------------------------------------------------------------------------------


def test_ioi_prompts_are_the_bos_token_then_the_tokenizers_ids(model, tok, ioi_dir):
    task = mib(model, "ioi", ioi_dir)
    kept = [IOI_TRAIN[i] for i in (0, 1, 3)]
    assert real_rows(task) == [[tok.bos_token_id, *ids(tok, row["prompt"])] for row in kept]
    corrupted = [row[:n].tolist() for row, n in zip(task.corrupted, task.corrupted_lengths)]
    assert corrupted == [[tok.bos_token_id, *ids(tok, row["s2_io_flip_counterfactual"]["prompt"])] for row in kept]


def test_the_bos_prompt_is_what_transformer_lens_to_tokens_gives_a_gpt2_style_tokenizer(model, tok, ioi_dir):
    # to_tokens(prepend_bos=True) on a tokenizer that adds no BOS prepends the BOS string to the text
    task = mib(model, "ioi", ioi_dir)
    assert real_rows(task)[0] == tok(tok.bos_token + IOI_TRAIN[0]["prompt"])["input_ids"]


def test_prompts_of_different_lengths_are_right_padded_and_read_at_their_last_real_token(model, tok, ioi_dir):
    task = mib(model, "ioi", ioi_dir)
    lengths = [1 + len(ids(tok, IOI_TRAIN[i]["prompt"])) for i in (0, 1, 3)]
    assert task.lengths.tolist() == lengths and len(set(lengths)) > 1
    assert task.clean.shape[1] == max(lengths + task.corrupted_lengths.tolist())
    assert task.read_positions()[:, 0].tolist() == [n - 1 for n in lengths]
    pad = tok.eos_token_id  # GPT-2 has no pad token: TransformerLens pads with EOS
    assert all((row[n:] == pad).all() for row, n in zip(task.clean, task.lengths))


def test_ioi_answers_are_the_first_tokens_of_the_spaced_indirect_object_and_subject(model, tok, ioi_dir):
    task = mib(model, "ioi", ioi_dir)
    kept = [IOI_TRAIN[i]["metadata"] for i in (0, 1, 3)]
    assert task.answers.tolist() == [[first_token(tok, " " + m["indirect_object"])] for m in kept]
    assert task.wrong_answers.tolist() == [[first_token(tok, " " + m["subject"])] for m in kept]
    assert task.default_metric == "logit_diff"


def test_ioi_filter_drops_a_row_whose_three_names_differ_in_token_count_and_says_so(model, ioi_dir, capsys):
    task = mib(model, "ioi", ioi_dir)
    assert (task.params["n_rows"], task.params["n_filtered_out"], task.params["n_examples"]) == (4, 1, 3)
    assert "4 rows; MIB's filter (' ' + indirect_object, ' ' + subject and ' ' + random_c tokenize to one length) dropped 1" in capsys.readouterr().err


def test_the_counterfactual_is_mibs_default_column_unless_one_is_named(model, tok, ioi_dir):
    default, abc = mib(model, "ioi", ioi_dir), mib(model, "ioi", ioi_dir, counterfactual="abc_counterfactual")
    assert default.params["counterfactual"] == "s2_io_flip_counterfactual"
    assert abc.corrupted[0, : abc.corrupted_lengths[0]].tolist() == [tok.bos_token_id, *ids(tok, IOI_TRAIN[0]["abc_counterfactual"]["prompt"])]


def test_a_split_is_read_by_name(model, tok, ioi_dir):
    task = mib(model, "ioi", ioi_dir, split="validation")
    assert real_rows(task) == [[tok.bos_token_id, *ids(tok, IOI_VALIDATION[0]["prompt"])]]


def test_num_examples_takes_the_first_rows_the_filter_keeps(model, tok, ioi_dir):
    task = mib(model, "ioi", ioi_dir, num_examples=2)
    assert task.answers.tolist() == [[first_token(tok, " Mary")], [first_token(tok, " Alice")]]
    assert task.params["n_examples"] == 2


def test_num_examples_beyond_the_rows_left_uses_them_all_and_says_so(model, ioi_dir, capsys):
    task = mib(model, "ioi", ioi_dir, num_examples=50)
    assert len(task.clean) == 3
    assert "task.num_examples=50 is more than the 3 rows left: using all 3" in capsys.readouterr().err


def test_num_examples_none_uses_every_row_the_filter_keeps(model, ioi_dir):
    assert len(mib(model, "ioi", ioi_dir, num_examples=None).clean) == 3


# --- MCQA and ARC --------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mcqa", "arc_easy", "arc_challenge"])
def test_multiple_choice_answers_are_the_labels_at_answer_key_tokenized_alone(model, tok, tmp_path, dataset):
    task = mib(model, dataset, save_splits(tmp_path / dataset, train=CHOICE_ROWS[:2]))
    assert task.answers.tolist() == [[first_token(tok, "B")], [first_token(tok, "A")]]
    assert task.wrong_answers.tolist() == [[first_token(tok, "D")], [first_token(tok, "B")]]
    assert task.params["counterfactual"] == "symbol_counterfactual"


@pytest.mark.parametrize("dataset", ["mcqa", "arc_easy", "arc_challenge"])
def test_multiple_choice_filter_drops_labels_of_different_token_counts(model, tmp_path, dataset):
    task = mib(model, dataset, save_splits(tmp_path / dataset, train=CHOICE_ROWS))
    assert (task.params["n_rows"], task.params["n_filtered_out"]) == (3, 1)


def test_mcqa_reads_the_4_answer_choices_config_of_a_hub_snapshot(model, tok, tmp_path):
    snapshot = tmp_path / "copycolors_mcqa"
    for config, rows in (("2_answer_choices", CHOICE_ROWS[1:2]), ("4_answer_choices", CHOICE_ROWS[:1])):
        (snapshot / config).mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(snapshot / config / "train-00000-of-00001.parquet"))
    (snapshot / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*.parquet\n" for c in ("2_answer_choices", "4_answer_choices"))
        + "---\n"
    )
    task = mib(model, "mcqa", str(snapshot))
    assert real_rows(task) == [[tok.bos_token_id, *ids(tok, QUESTION)]]


# --- arithmetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset, kept", [("arithmetic_addition", [0, 4]), ("arithmetic_subtraction", [1, 5])])
def test_arithmetic_keeps_its_operators_rows_with_a_counterfactual_and_one_token_labels(model, tok, tmp_path, dataset, kept):
    task = mib(model, dataset, save_splits(tmp_path / dataset, train=ARITHMETIC_ROWS))
    assert real_rows(task) == [[tok.bos_token_id, *ids(tok, ARITHMETIC_ROWS[i]["prompt"])] for i in kept]
    assert task.answers.tolist() == [[first_token(tok, str(ARITHMETIC_ROWS[i]["label"]))] for i in kept]
    assert task.wrong_answers.tolist() == [[first_token(tok, str(ARITHMETIC_ROWS[i]["random_counterfactual"]["label"]))] for i in kept]
    assert (task.params["n_rows"], task.params["n_filtered_out"]) == (6, 4)


# --- layouts -------------------------------------------------------------------------------------


def single_dataset(folder):
    datasets.Dataset.from_list(IOI_TRAIN).save_to_disk(str(folder))
    return str(folder)


def parquet_folder(folder):
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", IOI_TRAIN), ("validation", IOI_VALIDATION)):
        datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return str(folder)


def data_file(suffix):
    def write(folder):
        folder.mkdir()
        path = folder / f"ioi{suffix}"
        table = datasets.Dataset.from_list(IOI_TRAIN)
        table.to_parquet(str(path)) if suffix == ".parquet" else table.to_json(str(path))
        return str(path)

    return write


def flat_csv(folder):
    folder.mkdir()
    datasets.Dataset.from_list(IOI_TRAIN).flatten().to_csv(str(folder / "ioi.csv"), index=False)
    return str(folder / "ioi.csv")


@pytest.mark.parametrize(
    "write", [single_dataset, parquet_folder, data_file(".parquet"), data_file(".jsonl"), flat_csv],
    ids=["save_to_disk-dataset", "parquet-folder", "parquet-file", "jsonl-file", "flattened-csv-file"],
)
def test_every_local_layout_gives_the_task_the_save_to_disk_folder_gives(model, ioi_dir, tmp_path, write):
    expected, task = mib(model, "ioi", ioi_dir), mib(model, "ioi", write(tmp_path / "copy"))
    for key in ("clean", "corrupted", "lengths", "corrupted_lengths", "positions", "answers", "wrong_answers"):
        assert torch.equal(getattr(task, key), getattr(expected, key)), key


# --- other tokenizers ----------------------------------------------------------------------------


def test_a_tokenizer_that_adds_its_bos_gets_it_once_as_its_own_encoding_has_it(tmp_path):
    llama3 = family_tokenizer("llama3", CORPUS)
    task = mib(TaskModel(llama3), "ioi", save_splits(tmp_path / "ioi", train=IOI_TRAIN))
    # to_tokens(prepend_bos=True) on such a tokenizer is the tokenizer's own encoding
    assert real_rows(task)[0] == llama3(IOI_TRAIN[0]["prompt"])["input_ids"]


def test_a_tokenizer_without_bos_starts_each_prompt_with_its_eos_as_transformer_lens_does(tmp_path):
    qwen = family_tokenizer("qwen2", CORPUS)
    assert qwen.bos_token_id is None
    task = mib(TaskModel(qwen), "ioi", save_splits(tmp_path / "ioi", train=IOI_TRAIN))
    assert task.clean[:, 0].tolist() == [qwen.eos_token_id] * len(task.clean)


# --- control -------------------------------------------------------------------------------------


def mib_control(pairs, vocab_size):
    """MIB's control answers restated: the module-level ``random``, one answer map and one seed offset
    shared by all examples, read in order; the wrong answer first moves the offset on by one."""
    answer_map, offset = {}, [0]

    def replace(index, token, step):
        offset[0] += step
        random.seed(index + offset[0])
        if token not in answer_map:
            drawn = random.randint(1000, vocab_size - 1000)
            while drawn in set(answer_map.values()):
                offset[0] += 1
                random.seed(index + offset[0])
                drawn = random.randint(1000, vocab_size - 1000)
            answer_map[token] = drawn
        return answer_map[token]

    state = random.getstate()
    try:
        return [(replace(i, a, 0), replace(i, w, 1)) for i, (a, w) in enumerate(pairs)]
    finally:
        random.setstate(state)


def vocabulary_of_size(words, size):
    """A word-level tokenizer knowing ``words`` and as many made-up words as make ``size`` tokens."""
    known = word_level_tokenizer(words).vocab_size
    return word_level_tokenizer([*words, *(f"w{i}" for i in range(size - known))])


IOI_WORDS = "When Mary and John went to the store gave a drink Then Alice Bob left said hi Afterwards Carol Dave talked spoke Xavierina".split()


@pytest.mark.parametrize("vocab_size", [2006, 3000], ids=["7-token-range-draws-collide", "1001-token-range"])
def test_control_replaces_each_answer_token_as_mibs_random_draws_do(tmp_path, vocab_size):
    tokenizer = vocabulary_of_size(IOI_WORDS, vocab_size)
    assert tokenizer.vocab_size == vocab_size
    path = save_splits(tmp_path / "ioi", train=IOI_TRAIN)
    plain, control = mib(TaskModel(tokenizer), "ioi", path), mib(TaskModel(tokenizer), "ioi", path, control=True)
    pairs = list(zip(plain.answers[:, 0].tolist(), plain.wrong_answers[:, 0].tolist()))
    expected = mib_control(pairs, vocab_size)
    assert list(zip(control.answers[:, 0].tolist(), control.wrong_answers[:, 0].tolist())) == expected
    assert len({t for pair in expected for t in pair}) == len({t for pair in pairs for t in pair})  # distinct stay distinct
    assert torch.equal(control.clean, plain.clean)


def test_control_needs_a_vocabulary_of_more_than_2000_tokens(model, ioi_dir):
    with pytest.raises(AcdcError, match=r"task.control draws answers from token ids \[1000, vocab_size - 1000\]"):
        mib(model, "ioi", ioi_dir, control=True)


# --- end to end ----------------------------------------------------------------------------------


E2E = {"ioi": IOI_TRAIN, "mcqa": CHOICE_ROWS, "arc_easy": CHOICE_ROWS, "arithmetic_addition": ARITHMETIC_ROWS}


@pytest.mark.parametrize("method, params", [("acdc", {"threshold": 0.01}), ("eap", {"top_n": 5})])
@pytest.mark.parametrize("dataset", E2E)
def test_the_task_runs_through_discover(tok, tmp_path, dataset, method, params):
    model = small_model(attn_only=True, d_vocab=len(tok), n_ctx=64)
    model.tokenizer = tok
    path = save_splits(tmp_path / dataset, train=E2E[dataset])
    circuit = discover(model, "mib", task_params={"dataset": dataset, "path": path}, method=method, progress=False, **params)
    assert circuit.metric["name"] == "logit_diff"
    assert all(math.isfinite(circuit.metric[key]) for key in ("full", "circuit", "empty"))
    assert circuit.task["dataset"] == dataset and circuit.task["n_prompts"] == circuit.task["n_examples"] >= 2
    assert len(set(circuit.task["lengths"])) > 1  # prompts of several lengths, read at their last real tokens


def test_the_yaml_composes_and_builds_the_dataset_it_names(model, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from acdc_engine.commands.config_schema import register_configs
    from acdc_engine.commands.discover import CONF_DIR

    path = save_splits(tmp_path / "arith", train=ARITHMETIC_ROWS)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["task=mib", "task.dataset=arithmetic_subtraction", f"task.path={path}"])
    params = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    task = make_task(cfg.task.name, model, **params)
    assert (task.params["dataset"], task.params["split"], task.params["num_examples"], len(task.clean)) == ("arithmetic_subtraction", "train", 100, 2)


# --- bad input: one line naming the problem ------------------------------------------------------


def refused(match, build):
    with pytest.raises(AcdcError, match=match) as error:
        build()
    assert "\n" not in str(error.value)


def test_no_path_is_refused_naming_the_hub_id(model):
    refused(r"task mib needs task.path: a local copy of MIB's mcqa dataset \(mib-bench/copycolors_mcqa", lambda: mib(model, "mcqa", None))


def test_a_missing_folder_is_refused(model, tmp_path):
    refused("task.path '.*nothing' does not exist", lambda: mib(model, "ioi", str(tmp_path / "nothing")))


def test_a_missing_split_is_refused_listing_the_splits(model, ioi_dir):
    refused("task.split 'test' is not in task.path .*; its splits: train, validation", lambda: mib(model, "ioi", ioi_dir, split="test"))


def test_a_single_saved_split_of_another_name_is_refused(model, tmp_path):
    datasets.Dataset.from_list(IOI_TRAIN, split="validation").save_to_disk(str(tmp_path / "ioi"))
    refused("which holds the split 'validation' alone", lambda: mib(model, "ioi", str(tmp_path / "ioi")))


def test_a_missing_counterfactual_column_is_refused_listing_those_there_are(model, ioi_dir):
    refused(
        "has no counterfactual column 's1_io_flip_counterfactual' .* its counterfactual columns: abc_counterfactual, s2_io_flip_counterfactual",
        lambda: mib(model, "ioi", ioi_dir, counterfactual="s1_io_flip_counterfactual"),
    )


def test_a_dataset_of_another_kind_is_refused_by_its_missing_columns(model, ioi_dir):
    refused("has no counterfactual column 'symbol_counterfactual'", lambda: mib(model, "mcqa", ioi_dir))


def test_a_missing_field_is_refused_naming_it(model, tmp_path):
    rows = [{**row, "metadata": {"indirect_object": "Mary", "subject": "John"}} for row in IOI_TRAIN]
    refused("has no field metadata.random_c, which MIB's ioi reads", lambda: mib(model, "ioi", save_splits(tmp_path / "d", train=rows)))


def test_an_unknown_dataset_is_refused_listing_mibs_tasks(model, ioi_dir):
    refused(
        "task_params.dataset must be one of ioi, mcqa, arithmetic_addition, arithmetic_subtraction, arc_easy, arc_challenge",
        lambda: mib(model, "greater-than", ioi_dir),
    )


def test_a_file_of_a_kind_datasets_does_not_read_is_refused(model, tmp_path):
    (tmp_path / "ioi.txt").write_text("prompt")
    refused("is not a data file datasets reads", lambda: mib(model, "ioi", str(tmp_path / "ioi.txt")))


def test_a_data_file_datasets_cannot_parse_is_refused_with_its_reason(model, tmp_path):
    (tmp_path / "ioi.parquet").write_text("not parquet")
    refused("task.path '.*ioi.parquet' cannot be read as a dataset: ", lambda: mib(model, "ioi", str(tmp_path / "ioi.parquet")))


def test_choice_labels_from_a_csv_file_are_refused_as_not_a_list(model, tmp_path):
    datasets.Dataset.from_list(CHOICE_ROWS).flatten().to_csv(str(tmp_path / "mcqa.csv"), index=False)
    refused("row 0: choices.label must be a list of labels, .* a CSV file cannot hold lists", lambda: mib(model, "mcqa", str(tmp_path / "mcqa.csv")))


def test_an_answer_key_outside_the_labels_is_refused_naming_the_row(model, tmp_path):
    rows = [CHOICE_ROWS[0], {**CHOICE_ROWS[1], "answerKey": 2}]
    refused(r"split 'train' of .*, row 1: answerKey must be an index into choices.label \(2 labels\), got 2",
            lambda: mib(model, "mcqa", save_splits(tmp_path / "d", train=rows)))


def test_a_filter_that_keeps_no_row_is_refused(model, tmp_path):
    path = save_splits(tmp_path / "d", train=[IOI_TRAIN[2]])
    refused(r"MIB's filter .* keeps none of the 1 rows", lambda: mib(model, "ioi", path))


def test_a_model_without_a_tokenizer_is_refused(ioi_dir):
    refused("no tokenizer", lambda: mib(TaskModel(None, d_vocab=50), "ioi", ioi_dir))


def test_without_the_datasets_library_the_error_names_the_extra(model, ioi_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    refused(r"not installed: pip install 'acdc-engine\[mib\]'", lambda: mib(model, "ioi", ioi_dir))


@pytest.mark.parametrize("dataset, folder_task", [("ioi", "ioi"), ("arc_easy", "arc-easy"), ("arithmetic_addition", "arithmetic-addition")])
def test_acdc_mib_names_a_mib_dataset_tasks_folder_after_the_dataset_it_reads(model, tmp_path, dataset, folder_task):
    import argparse

    from acdc_engine.commands.mib import _task_key

    rows = {"ioi": IOI_TRAIN, "arc_easy": CHOICE_ROWS[:2], "arithmetic_addition": ARITHMETIC_ROWS}[dataset]
    task = mib(model, dataset, save_splits(tmp_path / dataset, train=rows))
    assert _task_key(argparse.Namespace(task_key=None, task="mib"), task) == folder_task
