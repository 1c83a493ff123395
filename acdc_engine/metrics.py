"""Metrics ACDC minimises: every metric maps circuit logits to one number per circuit, lower = better.

All take logits at the task's positions, [C, n_prompts, P, d_vocab], and return [C], averaged over
prompts and positions:
  kl          KL(clean model || circuit) = sum_v p_clean(v) (log p_clean(v) - log p_circuit(v)), nats.
  logit_diff  -(logit[answer] - logit[wrong_answer])  (the negated logit difference).
  prob_diff   -(p[answer] - p[wrong_answer])           (the negated probability difference).
  nll         -log p[answer], nats.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from acdc_engine.errors import AcdcError
from acdc_engine.tasks.task_data import TaskData

Metric = Callable[[Tensor], Tensor]
METRICS = ("kl", "logit_diff", "prob_diff", "nll")


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


def make_metric(name: str, task: TaskData, clean_logits: Tensor) -> Metric:
    """The metric ``name`` for ``task``; ``clean_logits`` [n_prompts, P, d_vocab] from the full model."""
    if name == "kl":
        return kl_divergence(clean_logits)
    if name not in METRICS:
        raise AcdcError(f"unknown metric '{name}'; choose one of {', '.join(METRICS)}")
    if task.answers is None:
        raise AcdcError(f"metric '{name}' needs answer tokens, and task '{task.name}' has none")
    if name == "nll":
        return negative_log_likelihood(task.answers)
    if task.wrong_answers is None:
        raise AcdcError(f"metric '{name}' needs wrong-answer tokens, and task '{task.name}' has none")
    if name == "logit_diff":
        return negative_logit_diff(task.answers, task.wrong_answers)
    return negative_prob_diff(task.answers, task.wrong_answers)
