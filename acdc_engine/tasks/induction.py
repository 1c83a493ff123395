"""Task ``induction``: random token sequences whose second half repeats the first.

Clean prompt:     BOS x_1 .. x_n x_1 .. x_n       (x drawn without replacement: each token once per half)
Corrupted prompt: BOS y_1 .. y_2n                 (2n fresh tokens, drawn without replacement)

The corrupted prompt has the same length and token distribution but contains no repeated token, so
under resample ablation a patched edge carries no information that could drive induction; what the
circuit must keep is exactly what makes the second half predictable. The metric reads positions
n+1 .. 2n-1 (holding x_1 .. x_{n-1} of the repeat), where the correct next token is x_2 .. x_n; the
competing ("wrong") answer is the corrupted prompt's next token at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec, ordinary_tokens


@dataclass
class InductionTaskConfig:
    name: str = "induction"
    n_prompts: int = 32
    half_length: int = 8
    bos_token: int = 0
    seed: int = 0


def make_induction(
    d_vocab: int, n_prompts: int = 32, half_length: int = 8, bos_token: int = 0, seed: int = 0
) -> TaskData:
    """Induction prompts over ordinary tokens (every id in [0, d_vocab) except ``bos_token``)."""
    if half_length < 2:
        raise AcdcError(f"task.half_length must be at least 2, got {half_length}")
    if n_prompts < 1:
        raise AcdcError(f"task.n_prompts must be at least 1, got {n_prompts}")
    ordinary = ordinary_tokens("induction", d_vocab, bos_token, 2 * half_length)
    generator = torch.Generator().manual_seed(seed)

    def draw(k: int) -> torch.Tensor:
        return torch.stack([ordinary[torch.randperm(len(ordinary), generator=generator)[:k]] for _ in range(n_prompts)])

    bos = torch.full((n_prompts, 1), bos_token)
    first_half = draw(half_length)
    clean = torch.cat([bos, first_half, first_half], dim=1)
    corrupted = torch.cat([bos, draw(2 * half_length)], dim=1)
    positions = torch.arange(half_length + 1, 2 * half_length)
    return TaskData(
        name="induction",
        clean=clean,
        corrupted=corrupted,
        positions=positions,
        answers=clean[:, positions + 1],
        wrong_answers=corrupted[:, positions + 1],
        params={"n_prompts": n_prompts, "half_length": half_length, "bos_token": bos_token, "seed": seed},
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_induction(model.cfg.d_vocab, **params)


SPEC = TaskSpec(name="induction", config=InductionTaskConfig, build=build)
