"""The classic pretrained-model tasks ioi, greater-than and docstring, their metrics and published circuits.

No model hub is reachable: tokenizers are trained here, in the test, from the tasks' own words (GPT-2's
byte-level BPE, or a word-level vocabulary; ``offline_tokenizers``). The other families' tokenizers
are in test_task_tokenizers.py.
"""

import importlib.util
import inspect
import math
import re
from operator import attrgetter
from pathlib import Path

import pytest
import torch
from factories import small_model
from hydra import compose, initialize_config_dir
from offline_tokenizers import (
    DESCRIPTION, NAMES, NOUNS, OBJECTS, PLACES, VARIABLES, docstring_corpus, family_tokenizer, greater_than_corpus, ioi_corpus,
    word_level_tokenizer,
)
from omegaconf import OmegaConf

from acdc_engine import AcdcError, TaskData, discover
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.measure.metrics import make_metric
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tasks import TASKS
from acdc_engine.tasks.docstring import make_docstring
from acdc_engine.tasks.greater_than import make_greater_than, year_pool
from acdc_engine.tasks.ioi import ABBA_TEMPLATES, BABA_TEMPLATES, make_ioi

ROOT = Path(__file__).resolve().parents[1]


def bpe_tokenizer(corpus, digits=r"\d\d"):
    """GPT-2's byte-level BPE trained on ``corpus`` until each of its words is one token; digit runs
    are first cut by the regex ``digits`` (pairs by default, so 1732 is written 17 | 32)."""
    return family_tokenizer("gpt2", corpus, digits=digits)


@pytest.fixture(scope="module")
def ioi_tok():
    return bpe_tokenizer(ioi_corpus())


@pytest.fixture(scope="module")
def gt_tok():
    return bpe_tokenizer(greater_than_corpus())


@pytest.fixture(scope="module")
def doc_tok():
    return bpe_tokenizer(docstring_corpus())


def ioi(tokenizer, **params):
    return make_ioi(tokenizer, **{"n_prompts": 12, "names": NAMES, "places": PLACES, "objects": OBJECTS, **params})


def greater_than(tokenizer, **params):
    return make_greater_than(tokenizer, **{"n_prompts": 12, "nouns": NOUNS, **params})


def docstring(tokenizer, **params):
    return make_docstring(tokenizer, **{"n_prompts": 8, "variable_names": VARIABLES, "description_words": DESCRIPTION, **params})


# --- ioi ---------------------------------------------------------------------------------------

IOI_PROMPT = re.compile(r"Then, (\w+) and (\w+) went to the (\w+)\. (\w+) gave a (\w+) to")


def test_ioi_prompt_names_io_then_s_and_asks_for_io_over_s(ioi_tok):
    task = ioi(ioi_tok)
    for clean, answer, wrong in zip(task.clean, task.answers[:, 0], task.wrong_answers[:, 0]):
        io, s, place, s2, obj = IOI_PROMPT.fullmatch(ioi_tok.decode(clean)).groups()
        assert io != s and s2 == s and place in PLACES and obj in OBJECTS
        assert ioi_tok.decode([int(answer)]) == f" {io}" and ioi_tok.decode([int(wrong)]) == f" {s}"
    assert task.default_metric == "logit_diff" and task.positions.tolist() == [task.clean.shape[1] - 1]


def test_ioi_corruption_puts_three_fresh_distinct_names_in_the_same_sentence(ioi_tok):
    task = ioi(ioi_tok)
    for clean, corrupted in zip(task.clean, task.corrupted):
        io, s, place, _, obj = IOI_PROMPT.fullmatch(ioi_tok.decode(clean)).groups()
        x, y, place2, z, obj2 = IOI_PROMPT.fullmatch(ioi_tok.decode(corrupted)).groups()
        assert len({x, y, z}) == 3 and not {x, y, z} & {io, s}
        assert (place2, obj2) == (place, obj)


def test_ioi_is_reproducible_from_its_seed(ioi_tok):
    assert torch.equal(ioi(ioi_tok, seed=3).clean, ioi(ioi_tok, seed=3).clean)
    assert not torch.equal(ioi(ioi_tok, seed=3).clean, ioi(ioi_tok, seed=4).clean)


def test_ioi_abba_templates_swap_the_first_clauses_names():
    assert ABBA_TEMPLATES[0] == "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to [A]"
    assert BABA_TEMPLATES[0] == "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]"
    assert len(BABA_TEMPLATES) == len(ABBA_TEMPLATES) == 15


def test_ioi_prepends_bos_when_asked(ioi_tok):
    plain, with_bos = ioi(ioi_tok), ioi(ioi_tok, prepend_bos=True)
    assert (with_bos.clean[:, 0] == ioi_tok.bos_token_id).all()
    assert torch.equal(with_bos.clean[:, 1:], plain.clean) and torch.equal(with_bos.answers, plain.answers)


def test_ioi_fails_naming_a_name_the_tokenizer_splits(ioi_tok):
    with pytest.raises(AcdcError, match=r"task\.names.*'Xzqj' is [2-9] tokens"):
        ioi(ioi_tok, names=NAMES + ["Xzqj"])


def test_ioi_fails_naming_a_word_outside_a_word_level_vocabulary():
    tokenizer = word_level_tokenizer([*NAMES, *PLACES, *OBJECTS, *"Then and went to the gave a".split()])
    assert ioi(tokenizer).clean.shape == (12, 15)
    with pytest.raises(AcdcError, match=r"'lamp' is not in the vocabulary.*task\.objects"):
        ioi(tokenizer, objects=["lamp"])


def test_ioi_templates_of_different_lengths_share_a_right_padded_batch_read_at_each_last_token(ioi_tok):
    task = ioi(ioi_tok, templates=[BABA_TEMPLATES[0], BABA_TEMPLATES[10]], n_prompts=20)
    alone = {t: ioi(ioi_tok, templates=[t], n_prompts=1).clean.shape[1] for t in (BABA_TEMPLATES[0], BABA_TEMPLATES[10])}
    assert sorted(set(task.lengths.tolist())) == sorted(alone.values())
    assert torch.equal(task.corrupted_lengths, task.lengths)
    assert task.positions.tolist() == [[n - 1] for n in task.lengths.tolist()]
    pad = ioi_tok.pad_token_id if ioi_tok.pad_token_id is not None else ioi_tok.eos_token_id
    for row, n in zip(task.clean, task.lengths.tolist()):
        assert (row[n:] == pad).all()


def test_ioi_takes_a_whole_template_family_by_name(ioi_tok):
    task = ioi(ioi_tok, templates=["BABA"], n_prompts=60)
    assert task.params["templates"] == list(BABA_TEMPLATES)
    assert len(set(task.lengths.tolist())) > 1


def test_ioi_rejects_a_template_without_the_answer_at_its_end(ioi_tok):
    with pytest.raises(AcdcError, match=r"task\.templates"):
        ioi(ioi_tok, templates=["Then, [A] and [B] went to the [PLACE]. [B] gave [A] a [OBJECT]"])


# --- greater-than ------------------------------------------------------------------------------

GT_PROMPT = re.compile(r"The (\w+) lasted from the year (\d\d)(\d\d) to (\d\d)")


def test_greater_than_prompt_repeats_the_century_and_corrupts_the_ending_to_01(gt_tok):
    task = greater_than(gt_tok)
    for clean, corrupted in zip(task.clean, task.corrupted):
        noun, xx, yy, xx2 = GT_PROMPT.fullmatch(gt_tok.decode(clean)).groups()
        assert noun in NOUNS and xx == xx2 and 11 <= int(xx) <= 17 and 2 <= int(yy) <= 98
        assert gt_tok.decode(corrupted) == f"The {noun} lasted from the year {xx}01 to {xx}"
        assert (clean != corrupted).sum() == 1
    assert task.default_metric == "set_prob_diff"


def endings(tokenizer, ids):
    """The two-digit endings a padded token set holds, as numbers, sorted."""
    return sorted(int(tokenizer.decode([int(i)])) for i in ids if i >= 0)


def test_greater_than_answer_sets_split_the_endings_above_and_up_to_the_start_year(gt_tok):
    task = greater_than(gt_tok)
    for clean, right, wrong in zip(task.clean, task.answer_sets[:, 0], task.wrong_answer_sets[:, 0]):
        yy = int(GT_PROMPT.fullmatch(gt_tok.decode(clean)).group(3))
        assert endings(gt_tok, right) == list(range(yy + 1, 100)) and endings(gt_tok, wrong) == list(range(yy + 1))


def test_greater_than_leaves_out_years_the_tokenizer_writes_as_one_token():
    tokenizer = bpe_tokenizer(greater_than_corpus() + ["1776"], digits=r"1776|\d\d")
    pool = year_pool(tokenizer, [17])
    assert ("17", "76") not in pool and ("17", "75") in pool and len(pool) == 96


def test_greater_than_fails_when_the_tokenizer_splits_years_into_single_digits():
    with pytest.raises(AcdcError, match=r"no year of century 11 .*two-digit tokens"):
        greater_than(bpe_tokenizer(greater_than_corpus(), digits=r"\d"), centuries=[11])


def test_greater_than_fails_naming_a_noun_the_tokenizer_splits(gt_tok):
    with pytest.raises(AcdcError, match=r"task\.nouns.*'armistice'"):
        greater_than(gt_tok, nouns=NOUNS + ["armistice"])


# --- docstring ---------------------------------------------------------------------------------

DOC_PROMPT = re.compile(
    r'\ndef (\w+)\(self, (\w+), (\w+), (\w+), (\w+), (\w+), (\w+)\):\n    """(\w+) (\w+) (\w+)\n\n'
    r"    :param (\w+): (\w+) (\w+)\n    :param (\w+): (\w+) (\w+)\n    :param"
)


def test_docstring_prompt_documents_the_run_of_parameters_that_the_answer_continues(doc_tok):
    task = docstring(doc_tok)
    assert (task.clean[:, 0] == doc_tok.bos_token_id).all() and task.default_metric == "max_logit_diff"
    for clean, answer, wrong in zip(task.clean, task.answers[:, 0], task.wrong_answer_sets[:, 0]):
        groups = DOC_PROMPT.fullmatch(doc_tok.decode(clean[1:])).groups()
        params, documented = groups[1:7], (groups[10], groups[13])
        assert documented == params[2:4]
        assert doc_tok.decode([int(answer)]) == f" {params[4]}"
        wrong_names = {doc_tok.decode([int(i)]).strip() for i in wrong}
        assert len(wrong_names) == 13 and params[4] not in wrong_names and set(params) - {params[4]} <= wrong_names


def test_docstring_corruption_replaces_the_documented_names_and_their_signature_slots(doc_tok):
    task = docstring(doc_tok)
    for clean, corrupted in zip(task.clean, task.corrupted):
        c = DOC_PROMPT.fullmatch(doc_tok.decode(clean[1:])).groups()
        k = DOC_PROMPT.fullmatch(doc_tok.decode(corrupted[1:])).groups()
        fresh = {*k[3:6], k[10], k[13]}
        assert k[:3] == c[:3] and k[6] == c[6] and len(fresh) == 5 and not fresh & set(c[:7])
        assert k[7:10] == c[7:10] and (k[11:13], k[14:16]) == (c[11:13], c[14:16])


def test_docstring_fails_naming_a_variable_name_the_tokenizer_splits(doc_tok):
    with pytest.raises(AcdcError, match=r"task\.variable_names.*'qqzx'"):
        docstring(doc_tok, variable_names=VARIABLES + ["qqzx"])


# --- metrics, TaskData --------------------------------------------------------------------------


def set_task(answer_sets, wrong_answer_sets):
    clean = torch.zeros(len(answer_sets), 3, dtype=torch.long)
    return TaskData("sets", clean, clean, answer_sets=answer_sets, wrong_answer_sets=wrong_answer_sets)


def test_set_prob_diff_is_minus_the_answer_mass_less_the_wrong_mass():
    logits = torch.randn(2, 2, 1, 6, dtype=torch.float64)  # [C, n, P, V]
    task = set_task([[[1, 2, -1]], [[5, -1, -1]]], [[[0, -1, -1]], [[3, 4, 0]]])
    p = logits.softmax(-1)[:, :, 0]
    expected = -((p[:, 0, 1] + p[:, 0, 2] - p[:, 0, 0]) + (p[:, 1, 5] - p[:, 1, 3] - p[:, 1, 4] - p[:, 1, 0])) / 2
    assert torch.allclose(make_metric("set_prob_diff", task, logits[0])(logits), expected)


def test_max_logit_diff_is_minus_the_answer_logit_less_the_best_wrong_logit():
    logits = torch.randn(3, 2, 1, 6, dtype=torch.float64)
    task = set_task([[[1]], [[5]]], [[[0, 2, 3]], [[4, -1, -1]]])
    x = logits[:, :, 0]
    best_wrong = torch.stack([x[:, 0, [0, 2, 3]].amax(-1), x[:, 1, 4]], 1)
    expected = -(torch.stack([x[:, 0, 1], x[:, 1, 5]], 1) - best_wrong).mean(1)
    assert torch.allclose(make_metric("max_logit_diff", task, logits[0])(logits), expected)


def test_set_metrics_need_a_task_with_answer_sets():
    task = TaskData("plain", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(AcdcError, match="answer_sets"):
        make_metric("set_prob_diff", task, torch.zeros(2, 1, 5))


@pytest.mark.parametrize(
    "sets, complaint",
    [([[[-1, -1]], [[1, 2]]], "empty set"), ([[[1, -2]], [[1, 2]]], "negative"), ([[1, 2, 3]], "shape")],
)
def test_task_data_rejects_malformed_answer_sets(sets, complaint):
    with pytest.raises(AcdcError, match=complaint):
        set_task(sets, [[[0]], [[0]]])


# --- running them ------------------------------------------------------------------------------

TASK_PARAMS = {
    "ioi": ({"n_prompts": 6, "names": NAMES, "places": PLACES, "objects": OBJECTS}, ioi_corpus),
    "greater-than": ({"n_prompts": 6, "nouns": NOUNS}, greater_than_corpus),
    "docstring": ({"n_prompts": 4, "variable_names": VARIABLES, "description_words": DESCRIPTION}, docstring_corpus),
}


@pytest.mark.parametrize("name", TASK_PARAMS)
def test_discover_runs_each_task_on_a_model_with_a_tokenizer_under_its_default_metric(name):
    params, corpus = TASK_PARAMS[name]
    tokenizer = bpe_tokenizer(corpus())
    model = small_model(attn_only=True, d_vocab=len(tokenizer), n_ctx=64)
    model.tokenizer = tokenizer
    circuit = discover(model, name, task_params=params, threshold=0.01, progress=False)
    assert circuit.metric["name"] == TASKS[name].build(model, **params).default_metric
    assert all(math.isfinite(circuit.metric[key]) for key in ("full", "circuit", "empty"))


@pytest.mark.parametrize("name", TASK_PARAMS)
def test_a_model_without_a_tokenizer_is_refused_with_the_reason(name):
    model = small_model(attn_only=True)
    model.tokenizer = None
    with pytest.raises(AcdcError, match="no tokenizer"):
        discover(model, name, progress=False)


@pytest.mark.parametrize("name, make", [("ioi", make_ioi), ("greater-than", make_greater_than), ("docstring", make_docstring)])
def test_task_yaml_composes_against_its_schema_with_the_python_defaults(name, make):
    from acdc_engine.commands.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        task = OmegaConf.to_container(compose("config", overrides=[f"task={name}"]).task)
    defaults = {k: p.default for k, p in inspect.signature(make).parameters.items() if k != "tokenizer"}
    assert task.pop("name") == name
    assert task == {k: list(v) if isinstance(v, (tuple, range)) else v for k, v in defaults.items()}


# --- published circuits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_published_circuits", ROOT / "experiments" / "make_published_circuits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped():
    """The shipped circuit files, each read once (a GPT-2-sized file takes seconds to validate)."""
    circuits = {}

    def read(name):
        if name not in circuits:
            circuits[name] = reference_circuit(name)
        return circuits[name]

    return read


@pytest.mark.parametrize("name", ["ioi", "greater-than", "docstring"])
def test_shipped_published_circuit_is_what_the_generator_script_writes(generator, shipped, name):
    made, read = generator.CIRCUITS[name](), shipped(name)
    for key in ("kept.edges", "in_graph.edges", "kept.head_inputs", "in_graph.head_inputs"):
        assert torch.equal(attrgetter(key)(made), attrgetter(key)(read)), key
    assert (made.model, made.task, made.method, made.extra) == (read.model, read.task, read.method, read.extra)


def test_ioi_circuit_holds_the_26_heads_and_their_class_connections(shipped):
    circuit = shipped("ioi")
    heads = {node for node in circuit.nodes() if node.startswith("a")}
    assert len(heads) == 26 and {"a9.h9", "a10.h7", "a2.h2", "a0.h1"} <= heads
    edges = set(circuit.edges())
    assert {"a2.h2->a5.h5<k>", "a7.h3->a9.h9<q>", "a9.h9->logits", "input->a0.h1<q>"} <= edges
    assert not {"a2.h2->a5.h5<q>", "a5.h5->logits", "input->a9.h9<q>", "a7.h3->a9.h9<k>"} & edges


def test_greater_than_circuit_runs_from_the_year_heads_through_the_amid_heads_to_the_late_mlps(shipped):
    edges = set(shipped("greater-than").edges())
    assert {"input->a0.h5<v>", "a0.h1->m0", "a0.h3->a5.h5<k>", "m3->a9.h1<q>", "a8.h11->m8", "m11->logits"} <= edges
    assert not {"a0.h3->m1", "a9.h1->m8", "input->a5.h5<q>"} & edges


def test_docstring_circuit_is_the_37_edges_of_the_published_graph_on_attn_only_4l(shipped):
    circuit = shipped("docstring")
    assert (circuit.graph.shape.n_layers, circuit.graph.shape.n_heads) == (4, 8)
    assert circuit.n_edges + int(circuit.in_graph.head_inputs.sum()) == 37
    assert set(circuit.nodes()) == {"input", "a0.h5", "a1.h2", "a1.h4", "a2.h0", "a3.h0", "a3.h6", "logits"}
