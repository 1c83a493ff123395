"""Text tasks whose prompts have many lengths (IOI over templates of several lengths, a jsonl file
of ragged prompts) run for every method and ablation; exact ACDC equals the naive reference."""

import json

import pytest
import torch
from factories import quick_params, small_model
from naive_reference import naive_acdc
from offline_tokenizers import NAMES, OBJECTS, PLACES, family_tokenizer, ioi_corpus

from acdc_engine import discover
from acdc_engine.formats.circuit_file import circuit_to_dict
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.tasks import make_task
from acdc_engine.tasks.ioi import BABA_TEMPLATES

TEMPLATES = [BABA_TEMPLATES[0], BABA_TEMPLATES[4], BABA_TEMPLATES[10]]  # three lengths
ABLATIONS = ("resample", "zero", "mean")


@pytest.fixture(scope="module")
def text_model():
    """A small random model (float64) reading a GPT-2-style BPE tokenizer's vocabulary."""
    tokenizer = family_tokenizer("gpt2", ioi_corpus())
    model = small_model(False, seed=11, d_vocab=len(tokenizer), n_ctx=40)
    model.tokenizer = tokenizer
    return model


def ioi_task(model):
    return make_task("ioi", model, n_prompts=9, templates=TEMPLATES, names=NAMES, places=PLACES, objects=OBJECTS)


def jsonl_task(model, tmp_path):
    """IOI prompts as a jsonl file whose corrupted prompts are cut short by a few words sometimes."""
    ioi = ioi_task(model)
    decode = model.tokenizer.decode
    lines = []
    for i in range(len(ioi.clean)):
        n = int(ioi.lengths[i])
        cut = n - 2 * (i % 2)  # every other corruption loses its last two tokens
        lines.append({"clean": decode(ioi.clean[i, :n]), "corrupted": decode(ioi.corrupted[i, :cut]),
                      "answer": int(ioi.answers[i, 0]), "wrong_answer": int(ioi.wrong_answers[i, 0])})
    path = tmp_path / "ragged.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return make_task("jsonl", model, path=str(path), prepend_bos=False)


TASKS = {"ioi": lambda model, tmp_path: ioi_task(model), "jsonl": jsonl_task}


def per_prompt_logit_diff(task):
    lengths = task.lengths.tolist()

    def metric(logits):
        diffs = [logits[i, n - 1, task.answers[i, 0]] - logits[i, n - 1, task.wrong_answers[i, 0]] for i, n in enumerate(lengths)]
        return -float(sum(diffs)) / len(lengths)
    return metric


@pytest.mark.parametrize("task_name", TASKS)
def test_the_text_tasks_have_prompts_of_several_lengths(task_name, text_model, tmp_path):
    task = TASKS[task_name](text_model, tmp_path)
    assert len(set(task.lengths.tolist())) == 3 and task.padded
    assert task.positions.tolist() == [[n - 1] for n in task.lengths.tolist()]


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("task_name", TASKS)
def test_exact_acdc_on_a_variable_length_text_task_equals_the_naive_reference(task_name, ablation, text_model, tmp_path):
    task = TASKS[task_name](text_model, tmp_path)
    circuit = discover(text_model, task, metric="logit_diff", threshold=0.02, ablation=ablation, progress=False)
    reference = naive_acdc(text_model, task.clean, task.corrupted, per_prompt_logit_diff(task), 0.02, ablation,
                           corrupted_lengths=task.corrupted_lengths.tolist())
    data = circuit_to_dict(circuit)
    assert 0 < sum(e["kept"] for e in data["edges"].values()) < len(data["edges"])
    assert {n: e["kept"] for n, e in data["edges"].items()} == reference["edges"]
    assert {n: e["kept"] for n, e in data["head_inputs"].items()} == reference["head_inputs"]


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("task_name", TASKS)
def test_every_method_runs_on_a_variable_length_text_task(task_name, ablation, text_model, tmp_path):
    task = TASKS[task_name](text_model, tmp_path)
    for method, spec in METHODS.items():
        size = {"top_n": 20} if spec.circuits is CircuitSelection.SCORES else {"threshold": 0.02}
        circuit = discover(text_model, task, method=method, ablation=ablation, progress=False, **size, **quick_params(method))
        assert circuit.task["lengths"] == task.lengths.tolist()
        assert all(torch.isfinite(torch.tensor(float(circuit.metric[k]))) for k in ("full", "circuit", "empty"))
