"""Tasks on tracr-compiled programs (``acdc_engine.tracr``): one task per program, same name as its model.

A well-formed prompt is ``BOS x_1 .. x_n`` over the program's vocabulary; the metric reads every
position after BOS (the program's outputs for x_1 .. x_n). The datasets follow the ACDC paper's:

  tracr-reverse     every permutation of the vocabulary {1, 2, 3} after BOS (6 prompts), as the reference;
  tracr-proportion  ``n_prompts`` distinct random strings of ``length`` tokens (50 of 4, as the reference).
                    ``reference_ids: true`` (default) reproduces the reference's prompts token for token:
                    ids 0..3 with no BOS, read at positions 1..length-1. The reference meant ids 0..3 as
                    w, x, y, z, but tracr's encoding sorts its vocabulary, so ids 0..3 are BOS,
                    compiler_pad, w and x; on these prompts the BOS token appears at random positions and
                    the attention head's always-attend-to-BOS term matters, which is why the paper's
                    circuit keeps it. ``reference_ids: false``: BOS, then strings over {w, x, y, z}.
  tracr-hist        ``n_prompts`` distinct random strings over {a, b, c} after BOS;
  tracr-sort        ``n_prompts`` distinct random sequences of distinct tokens from {1..5} after BOS.

Corrupted prompt i is clean prompt pi(i) for a random permutation pi without fixed points (the
reference's choice for tracr-reverse; its tracr-proportion allowed fixed points), so under resample
ablation every prompt is patched from another; zero ablation ignores them. The default metric is
``l2``, the reference's for these tasks: the mean squared difference between the circuit's and the
full model's outputs (the converted model's "logits" are the program's output space, see
``acdc_engine.tracr.compiler``); ``kl`` also works for the categorical programs (all but
tracr-proportion).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.tracr.programs import PROGRAMS

REFERENCE_PROPORTION_IDS = (0, 1, 2, 3)  # the token ids the reference wrote for w, x, y, z


@dataclass
class TracrReverseTaskConfig:
    name: str = "tracr-reverse"
    seed: int = 0


@dataclass
class SampledTracrTaskConfig:
    """A tracr task on ``n_prompts`` distinct random inputs of ``length`` tokens."""

    name: str = MISSING
    n_prompts: int = 50
    length: int = 4
    seed: int = 0


@dataclass
class TracrProportionTaskConfig(SampledTracrTaskConfig):
    name: str = "tracr-proportion"
    reference_ids: bool = True  # the reference's prompts: ids 0..3, no BOS (see acdc_engine.tasks.tracr)


@dataclass
class TracrHistTaskConfig(SampledTracrTaskConfig):
    name: str = "tracr-hist"


@dataclass
class TracrSortTaskConfig(SampledTracrTaskConfig):
    name: str = "tracr-sort"


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A uniformly random permutation of range(n) with no fixed point (n >= 2), by rejection."""
    while True:
        permutation = torch.randperm(n, generator=generator)
        if not (permutation == torch.arange(n)).any():
            return permutation


def make_tracr_task(name: str, model: Any, clean: Tensor, generator: torch.Generator, params: dict[str, Any]) -> TaskData:
    """The task of tracr program ``name`` on ``clean`` token ids [n_prompts, pos] whose position 0
    is not read; ``generator`` draws the corrupted prompts' order."""
    model_name = getattr(getattr(model, "cfg", None), "model_name", None)
    if model_name != name:
        raise AcdcError(f"task '{name}' runs on the model compiled from its program: set model={name} (got model '{model_name}')")
    if len(clean) < 2:
        raise AcdcError(f"task '{name}' needs at least 2 prompts to patch from one another, got {len(clean)}")
    return TaskData(
        name=name,
        clean=clean,
        corrupted=clean[derangement(len(clean), generator)],
        positions=torch.arange(1, clean.shape[1]),
        params=params,
        default_metric="l2",
    )


def _encode(name: str, inputs: list[tuple[Any, ...]]) -> Tensor:
    from acdc_engine.tracr import compiled_program

    return compiled_program(name).encode(inputs)


def _draw(name: str, candidates: list[Any], n_prompts: int, length: int, generator: torch.Generator) -> list[Any]:
    """``n_prompts`` distinct candidates, uniformly at random."""
    if not 2 <= n_prompts <= len(candidates):
        raise AcdcError(
            f"task.n_prompts must be between 2 and {len(candidates)} (the distinct inputs of length {length}) "
            f"for '{name}', got {n_prompts}"
        )
    return [candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:n_prompts].tolist()]


def _check_length(name: str, length: int) -> None:
    longest = PROGRAMS[name].max_seq_len
    if not 1 <= length <= longest:
        raise AcdcError(f"task.length must be between 1 and {longest} for '{name}', got {length}")


def build_reverse(model: Any, seed: int = 0) -> TaskData:
    """Every permutation of the vocabulary, in lexicographic order."""
    program = PROGRAMS["tracr-reverse"]
    generator = torch.Generator().manual_seed(seed)
    clean = _encode(program.name, list(itertools.permutations(program.vocab)))
    return make_tracr_task(program.name, model, clean, generator, {"seed": seed})


def build_sampled(name: str, model: Any, n_prompts: int = 50, length: int = 4, seed: int = 0) -> TaskData:
    """BOS, then ``n_prompts`` distinct inputs of ``length`` tokens drawn uniformly from all the program accepts."""
    _check_length(name, length)
    generator = torch.Generator().manual_seed(seed)
    inputs = _draw(name, list(PROGRAMS[name].inputs(length)), n_prompts, length, generator)
    params = {"n_prompts": n_prompts, "length": length, "seed": seed}
    return make_tracr_task(name, model, _encode(name, inputs), generator, params)


def build_proportion(model: Any, n_prompts: int = 50, length: int = 4, seed: int = 0, reference_ids: bool = True) -> TaskData:
    """tracr-proportion on the reference's prompts (``reference_ids``) or on well-formed ones."""
    name = "tracr-proportion"
    if not reference_ids:
        task = build_sampled(name, model, n_prompts, length, seed)
        task.params["reference_ids"] = False
        return task
    _check_length(name, length)
    generator = torch.Generator().manual_seed(seed)
    strings = _draw(name, list(itertools.product(REFERENCE_PROPORTION_IDS, repeat=length)), n_prompts, length, generator)
    params = {"n_prompts": n_prompts, "length": length, "seed": seed, "reference_ids": True}
    return make_tracr_task(name, model, torch.tensor(strings), generator, params)


def _sampled_spec(config: type) -> TaskSpec:
    name = config.name

    def build(model: Any, **params: Any) -> TaskData:
        return build_sampled(name, model, **params)

    return TaskSpec(name=name, config=config, build=build)


SPECS = (
    TaskSpec(name="tracr-reverse", config=TracrReverseTaskConfig, build=build_reverse),
    TaskSpec(name="tracr-proportion", config=TracrProportionTaskConfig, build=build_proportion),
    _sampled_spec(TracrHistTaskConfig),
    _sampled_spec(TracrSortTaskConfig),
)
