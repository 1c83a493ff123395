"""Gradient passes a chunk of prompts at a time (``acdc_engine.patching.gradients``) give the scores and
gradients of one pass over every prompt, for every built-in metric (each a mean of per-prompt terms)."""

import pytest
import torch

from acdc_engine import build_graph
from acdc_engine.measure.metrics import make_metric
from acdc_engine.methods.attribution import ig_activations_scores
from acdc_engine.methods.eap import eap_ig_scores, eap_scores
from acdc_engine.patching import EdgePatcher
from acdc_engine.patching.gradients import prompt_chunks
from factories import random_task, small_model


def patcher_and_metric(metric: str, lengths=None):
    model = small_model(attn_only=False, seed=3)
    task = random_task(seed=3, n_prompts=7, positions=[4, 6])
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, lengths=lengths)
    return patcher, make_metric(metric, task, patcher.logits(build_graph(model.cfg).full_mask()))


def in_chunks(patcher, size, fn):
    patcher.prompts_per_gradient_pass = size
    try:
        return fn()
    finally:
        patcher.prompts_per_gradient_pass = None


@pytest.mark.parametrize("metric", ["kl", "logit_diff", "prob_diff", "nll", "l2"])
def test_eap_ig_scores_in_chunks_equal_one_pass(metric):
    patcher, metric_fn = patcher_and_metric(metric)
    whole = eap_ig_scores(patcher, metric_fn, steps=3)
    assert whole.abs().max() > 0
    for size in (1, 3):
        chunked = in_chunks(patcher, size, lambda: eap_ig_scores(patcher, metric_fn, steps=3))
        assert torch.allclose(chunked, whole, rtol=1e-9, atol=1e-12 * float(whole.abs().max()))


def test_eap_and_ig_activations_scores_in_chunks_equal_one_pass():
    patcher, metric_fn = patcher_and_metric("logit_diff")
    for score in (lambda: eap_scores(patcher, metric_fn), lambda: ig_activations_scores(patcher, metric_fn, steps=2)):
        whole = score()
        assert torch.allclose(in_chunks(patcher, 2, score), whole, rtol=1e-9, atol=1e-12 * float(whole.abs().max()))


def test_receiver_gradients_and_the_metric_value_in_chunks_equal_one_pass():
    patcher, metric_fn = patcher_and_metric("kl")
    n_in = len(patcher.graph.input_senders)
    embeddings = torch.lerp(patcher.ablated_sender_out[:, :, :n_in], patcher.clean_sender_out[:, :, :n_in], 0.5)
    whole, value = patcher.receiver_gradients(metric_fn, input_embeddings=embeddings)
    chunked, chunked_value = in_chunks(patcher, 2, lambda: patcher.receiver_gradients(metric_fn, input_embeddings=embeddings))
    assert torch.allclose(chunked, whole, rtol=1e-9, atol=1e-13)
    assert chunked_value == pytest.approx(value, rel=1e-12)


def test_chunks_cover_every_prompt_once_in_order():
    patcher, _ = patcher_and_metric("kl")
    patcher.prompts_per_gradient_pass = 3
    assert prompt_chunks(patcher) == [slice(0, 3), slice(3, 6), slice(6, 7)]


def test_chunks_are_as_large_as_the_memory_allows(monkeypatch):
    patcher, _ = patcher_and_metric("kl")
    monkeypatch.setattr("acdc_engine.patching.gradients.available_memory", lambda device: 1)
    assert len(prompt_chunks(patcher)) == 7  # one prompt per pass at the least
    monkeypatch.setattr("acdc_engine.patching.gradients.available_memory", lambda device: 2**40)
    assert prompt_chunks(patcher) == [slice(0, 7)]


def test_prompts_of_many_lengths_read_at_their_own_positions_in_chunks_equal_one_pass():
    from test_variable_length import ragged_task

    task = ragged_task([5, 8, 3, 8, 6])
    model = small_model(attn_only=False, seed=3)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.read_positions(), lengths=task.lengths,
                          corrupted_lengths=task.corrupted_lengths)
    metric_fn = make_metric("logit_diff", task, patcher.logits(build_graph(model.cfg).full_mask()))
    whole = eap_ig_scores(patcher, metric_fn, steps=2)
    assert patcher.positions.dim() == 2 and whole.abs().max() > 0
    chunked = in_chunks(patcher, 2, lambda: eap_ig_scores(patcher, metric_fn, steps=2))
    assert torch.allclose(chunked, whole, rtol=1e-9, atol=1e-12 * float(whole.abs().max()))
