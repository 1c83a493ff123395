"""Task ``predecessor``: name the token that came just before the query token's earlier occurrence.

Clean prompt:     BOS t_1 .. t_m q        (t drawn without replacement; q = t_j for a random j in 2..m)
Answer:           t_{j-1}
Corrupted prompt: BOS u_1 .. u_m q'       (a fresh prompt of the same form; its answer is the wrong answer)

The metric reads the last position (the query). Under resample ablation every edge carries the
difference between two unrelated prompts, so the circuit must keep the whole mechanism: finding
the query's earlier occurrence and reading what preceded it.

Why a two-layer model must use V-composition here: the answer t_{j-1} sits at position j-1, whose
residual stream (causally) knows nothing of the later t_j, so no head at the query can find
position j-1 by content. A layer-0 head must first copy t_{j-1} forward to a later position that
the query can find (the simplest: a previous-token head copies it to position j, which holds the
query's own token), and a layer-1 head at the query must attend there and read t_{j-1} through its
value input: an edge (or a path through MLP 0) from a layer-0 head into a layer-1 head's ``<v>``.

The shipped model ``toy-predecessor-2l`` (``experiments/train_toy_predecessor.py``), trained on
these prompts, looks one position further: a layer-0 previous-token head writes "my previous token
is t_j" into position j+1 and a layer-0 head attending two back writes t_{j-1} there; its layer-1
heads attend from the query to position j+1, found by K-composition (their key input reads the
previous-token head), and read t_{j-1} through their value input (V-composition). Position j would
compete with the query itself, which holds the same token; position j+1 is the only one whose
previous token is the query's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec, ordinary_tokens


@dataclass
class PredecessorTaskConfig:
    name: str = "predecessor"
    n_prompts: int = 32
    length: int = 12
    bos_token: int = 0
    seed: int = 0


def predecessor_prompts(
    n_prompts: int, length: int, ordinary: Tensor, bos_token: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``n_prompts`` prompts ``BOS t_1 .. t_length q`` over the token ids ``ordinary``.

    Returns tokens long [n_prompts, length + 2], answers long [n_prompts] (t_{j-1}) and the
    position of the query's earlier occurrence, long [n_prompts] (j, in 2..length).
    """
    body = torch.stack([ordinary[torch.randperm(len(ordinary), generator=generator)[:length]] for _ in range(n_prompts)])
    earlier = torch.randint(2, length + 1, (n_prompts,), generator=generator)
    rows = torch.arange(n_prompts)
    query, answer = body[rows, earlier - 1], body[rows, earlier - 2]
    bos = torch.full((n_prompts, 1), bos_token)
    return torch.cat([bos, body, query[:, None]], dim=1), answer, earlier


def make_predecessor(
    d_vocab: int, n_prompts: int = 32, length: int = 12, bos_token: int = 0, seed: int = 0
) -> TaskData:
    """Predecessor prompts over ordinary tokens (every id in [0, d_vocab) except ``bos_token``)."""
    if length < 2:
        raise AcdcError(f"task.length must be at least 2, got {length}")
    if n_prompts < 1:
        raise AcdcError(f"task.n_prompts must be at least 1, got {n_prompts}")
    ordinary = ordinary_tokens("predecessor", d_vocab, bos_token, length)
    generator = torch.Generator().manual_seed(seed)
    clean, answers, _ = predecessor_prompts(n_prompts, length, ordinary, bos_token, generator)
    corrupted, wrong_answers, _ = predecessor_prompts(n_prompts, length, ordinary, bos_token, generator)
    return TaskData(
        name="predecessor",
        clean=clean,
        corrupted=corrupted,
        positions=torch.tensor([length + 1]),
        answers=answers[:, None],
        wrong_answers=wrong_answers[:, None],
        params={"n_prompts": n_prompts, "length": length, "bos_token": bos_token, "seed": seed},
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_predecessor(model.cfg.d_vocab, **params)


SPEC = TaskSpec(name="predecessor", config=PredecessorTaskConfig, build=build)
