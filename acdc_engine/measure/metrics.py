"""Metrics ACDC minimises: every metric maps circuit logits to one number per circuit, lower = better.

All take logits at the task's positions, [C, n_prompts, P, d_vocab], and return [C], averaged over
prompts and positions:
  kl          KL(clean model || circuit) = sum_v p_clean(v) (log p_clean(v) - log p_circuit(v)), nats.
  logit_diff  -(logit[answer] - logit[wrong_answer])  (the negated logit difference).
  prob_diff   -(p[answer] - p[wrong_answer])           (the negated probability difference).
  nll         -log p[answer], nats.
  l2          mean over prompts, positions and output dimensions of (circuit output - full model
              output)^2: the reference ACDC's "l2" for its tracr tasks, where the "logits" are a
              compiled program's output values (a squared distance, averaged per entry).
  set_prob_diff   -(sum p[answer set] - sum p[wrong-answer set])  (greater-than's probability difference).
  max_logit_diff  -(max logit over the answer set - max logit over the wrong-answer set)  (docstring's).
The set metrics read the task's ``answer_sets`` and ``wrong_answer_sets`` ([n_prompts, P, K], -1 = padding).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData

Metric = Callable[[Tensor], Tensor]
METRICS = ("kl", "logit_diff", "prob_diff", "nll", "l2")
SET_METRICS = ("set_prob_diff", "max_logit_diff")


def at_least_float32(logits: Tensor) -> Tensor:
    """Half-precision logits in float32: metrics take a softmax over the whole vocabulary."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def kl_divergence(clean_logits: Tensor) -> Metric:
    """KL(clean || circuit); ``clean_logits`` [n_prompts, P, d_vocab] are the full model's."""
    clean_logprobs = clean_logits.log_softmax(-1)
    clean_probs = clean_logprobs.exp()

    def metric(logits: Tensor) -> Tensor:
        kl = (clean_probs * (clean_logprobs - logits.log_softmax(-1))).sum(-1)
        return kl.mean((-2, -1))

    return metric


def l2_distance(clean_logits: Tensor) -> Metric:
    """Mean squared difference from the full model's outputs ``clean_logits`` [n_prompts, P, d_vocab]."""

    def metric(logits: Tensor) -> Tensor:
        return (logits - clean_logits).pow(2).mean((-3, -2, -1))

    return metric


def _gather(values: Tensor, tokens: Tensor) -> Tensor:
    """values [C, n, P, V], tokens [n, P] -> [C, n, P]."""
    index = tokens.to(values.device)[None, :, :, None].expand(values.shape[0], -1, -1, 1)
    return values.gather(-1, index)[..., 0]


def negative_logit_diff(answers: Tensor, wrong_answers: Tensor) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        return -(_gather(logits, answers) - _gather(logits, wrong_answers)).mean((-2, -1))

    return metric


def negative_prob_diff(answers: Tensor, wrong_answers: Tensor) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        probs = logits.softmax(-1)
        return -(_gather(probs, answers) - _gather(probs, wrong_answers)).mean((-2, -1))

    return metric


def negative_log_likelihood(answers: Tensor) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        return -_gather(logits.log_softmax(-1), answers).mean((-2, -1))

    return metric


def _gather_sets(values: Tensor, sets: Tensor) -> tuple[Tensor, Tensor]:
    """values [C, n, P, V], sets [n, P, K] (-1 = padding) -> (values at the set tokens [C, n, P, K],
    bool mask of the real entries [n, P, K])."""
    sets = sets.to(values.device)
    index = sets.clamp(min=0)[None].expand(values.shape[0], -1, -1, -1)
    return values.gather(-1, index), sets >= 0


def negative_set_prob_diff(answer_sets: Tensor, wrong_answer_sets: Tensor) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        probs = logits.softmax(-1)
        right, right_mask = _gather_sets(probs, answer_sets)
        wrong, wrong_mask = _gather_sets(probs, wrong_answer_sets)
        return -((right * right_mask).sum(-1) - (wrong * wrong_mask).sum(-1)).mean((-2, -1))

    return metric


def negative_max_logit_diff(answer_sets: Tensor, wrong_answer_sets: Tensor) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        right, right_mask = _gather_sets(logits, answer_sets)
        wrong, wrong_mask = _gather_sets(logits, wrong_answer_sets)
        best_right = right.masked_fill(~right_mask, float("-inf")).amax(-1)
        best_wrong = wrong.masked_fill(~wrong_mask, float("-inf")).amax(-1)
        return -(best_right - best_wrong).mean((-2, -1))

    return metric


def make_metric(name: str, task: TaskData, clean_logits: Tensor) -> Metric:
    """The metric ``name`` for ``task``; ``clean_logits`` [n_prompts, P, d_vocab] from the full model."""
    if name == "kl":
        if clean_logits.shape[-1] < 2:
            raise AcdcError(f"metric 'kl' needs at least two outputs to compare distributions; task '{task.name}' has one (use l2)")
        return kl_divergence(clean_logits)
    if name == "l2":
        return l2_distance(clean_logits)
    if name in SET_METRICS:
        if task.answer_sets is None or task.wrong_answer_sets is None:
            raise AcdcError(f"metric '{name}' needs answer_sets and wrong_answer_sets, and task '{task.name}' lacks them")
        make = negative_set_prob_diff if name == "set_prob_diff" else negative_max_logit_diff
        return make(task.answer_sets, task.wrong_answer_sets)
    if name not in METRICS:
        raise AcdcError(f"unknown metric '{name}'; choose one of {', '.join(METRICS + SET_METRICS)}")
    if task.answers is None:
        raise AcdcError(f"metric '{name}' needs answer tokens, and task '{task.name}' has none")
    if name == "nll":
        return negative_log_likelihood(task.answers)
    if task.wrong_answers is None:
        raise AcdcError(f"metric '{name}' needs wrong-answer tokens, and task '{task.name}' has none")
    if name == "logit_diff":
        return negative_logit_diff(task.answers, task.wrong_answers)
    return negative_prob_diff(task.answers, task.wrong_answers)
