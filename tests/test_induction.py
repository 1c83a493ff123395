"""The built-in default: task `induction` and the shipped model `toy-induction-2l`."""

import pytest
import torch

from acdc_engine import discover
from acdc_engine.evaluation.testbed_truth import attention_patterns, offset_scores
from acdc_engine.tasks import make_induction

HALF = 8


@pytest.fixture(scope="module")
def task():
    return make_induction(d_vocab=64, n_prompts=32, half_length=HALF, seed=0)


def test_second_half_of_a_clean_prompt_repeats_the_first(task):
    clean = task.clean
    assert (clean[:, 0] == 0).all()
    assert torch.equal(clean[:, 1 : HALF + 1], clean[:, HALF + 1 :])


def test_corrupted_prompts_hold_no_repeated_token(task):
    for prompt in task.corrupted[:, 1:]:
        assert len(set(prompt.tolist())) == len(prompt)


def test_metric_reads_the_predictable_positions_of_the_repeat(task):
    assert task.positions.tolist() == list(range(HALF + 1, 2 * HALF))
    assert torch.equal(task.answers, task.clean[:, task.positions + 1])
    assert torch.equal(task.answers, task.clean[:, task.positions - HALF + 1])


def test_shipped_model_does_induction(toy_induction_model, task):
    logits = toy_induction_model(task.clean)[:, task.positions]
    accuracy = (logits.argmax(-1) == task.answers).float().mean().item()
    assert accuracy > 0.9  # chance is 1/63


def test_circuit_has_a_previous_token_head_feeding_an_induction_heads_key(toy_induction_model, task):
    layer0, layer1 = attention_patterns(toy_induction_model, task.clean)
    # previous token: offset 1; induction: from a repeated token to the one after its first occurrence
    prev_scores, ind_scores = offset_scores(layer0, 1), offset_scores(layer1, HALF - 1, torch.arange(HALF + 1, 2 * HALF + 1))
    prev_head, induction_head = int(prev_scores.argmax()), int(ind_scores.argmax())
    assert prev_scores[prev_head] > 0.5 and ind_scores[induction_head] > 0.5

    circuit = discover(toy_induction_model, task, threshold=0.05, progress=False)
    assert f"a0.h{prev_head}->a1.h{induction_head}<k>" in circuit.edges()
