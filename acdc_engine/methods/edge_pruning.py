"""Edge pruning (Bhaskar et al. 2024, "Finding Transformer Circuits with Edge Pruning"), method ``edge-pruning``.

Every edge and every head input (the reference implementation's ``q_input -> q`` edges) gets a
hard-concrete mask (Louizos et al. 2018) with a learned location log_alpha, temperature beta and
stretch interval (l, r) = (-0.1, 1.1):

    u ~ U(0, 1)                      (a torch.Generator seeded with ``mask_seed``: runs repeat exactly)
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    z = clamp(s * (r - l) + l, 0, 1)

The masks z go through the differentiable patched pass (``patching.float_pass.float_mask_logits``:
in_v = A_v + sum_u z_uv (out_u - out*_u), a head input mixing q/k/v with the ablated ones), and
Adam minimises

    loss = metric(masked model) + lambda_1 * (t - s) + lambda_2 * (t - s)^2

metric: the engine's (lower = better; KL to the full model by default, l2 for tracr); s the
expected sparsity 1 - E[L0] / N over the N edges and head inputs, E[L0] = sum of
P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)); t the target sparsity, raised linearly from 0
to ``target_sparsity`` over the first ``warmup`` fraction of the steps. The Lagrange multipliers
lambda_1, lambda_2 (starting at 0) take gradient *ascent* steps with Adam at ``lagrangian_lr``
(CoFiPruning's and Edge Pruning's constrained optimisation: they grow while the masks are denser
than the target). ``samples`` mask samples per step (one float pass), their metrics averaged.

The circuit: each mask's deterministic value clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1) >= 0.5,
which (l and r symmetric about 1/2) is sigmoid(log_alpha) >= 0.5. Scores (``Scores`` layout) are
sigmoid(log_alpha) of the final masks, in (0, 1), so ``CircuitSelection.SCORES`` holds: the top
edges by score give circuits of any size from one run, and a circuit at the default selection is
the paper's. A run learns masks for one target sparsity; ``target_sparsity`` is no threshold that
sweeps could vary cheaply (one full training per value), so the method is no THRESHOLD method.
Selection: neither ``top_n`` nor ``score_threshold`` (the default): score >= 0.5, edges and head
inputs alike; ``score_threshold``: score >= it, edges and head inputs; ``top_n``: the top_n edges by
score, the head inputs at >= 0.5.

The hard concrete (``hard_concrete``, ``deterministic_masks``, ``probability_nonzero``) and the
training loop are ``mask_training``'s, shared with ``ugs`` and ``subnetwork-probing``; so are the
checkpoints (the log_alphas, the multipliers, both optimizers' moments and step counts, the noise
generator, the log) and the stop on a non-finite loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.measure.metrics import Metric
from acdc_engine.methods.eap import check_selection, select_edges
from acdc_engine.methods.mask_training import (
    LEFT, RIGHT, MaskTraining, MaskTrainingState, StepOutcome, check_int, check_number, deterministic_masks, hard_concrete,
    probability_nonzero, train_masks,
)
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import Checkpointing, CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.patching.float_pass import float_mask_logits

__all__ = [
    "EdgePruningConfig", "EdgePruningParams", "EdgePruningResult", "SPEC", "deterministic_masks", "probability_nonzero",
    "sample_masks", "selected", "target_sparsity_at", "train_edge_masks",
]

EPS = 1e-6
"""The uniform noise is drawn from [EPS, 1 - EPS] (log u and log(1 - u) stay finite)."""


@dataclass
class EdgePruningParams:
    """edge-pruning's parameters (``discover(method="edge-pruning", ...)``):

    target_sparsity: the fraction of edges and head inputs to remove, in [0, 1);
    steps: Adam steps (one float-masked forward and backward pass each);
    lr: Adam's learning rate for the log_alphas;
    lagrangian_lr: Adam's learning rate for the Lagrange multipliers (ascent);
    warmup: the fraction of the steps over which the target rises from 0 to target_sparsity;
    init_log_alpha: every log_alpha's initial value (3: masks almost surely 1, the full model);
    temperature: the hard concrete's beta (2/3: Louizos et al.'s);
    mask_seed: seeds the mask noise (``discover``'s own ``seed`` is only recorded);
    samples: mask samples per step (circuits of one float pass; the metric averaged over them);
    top_n, score_threshold: the selection (module docstring); both None: score >= 0.5.
    """

    target_sparsity: float = 0.9
    steps: int = 400
    lr: float = 0.1
    lagrangian_lr: float = 0.1
    warmup: float = 0.5
    init_log_alpha: float = 3.0
    temperature: float = 2.0 / 3.0
    mask_seed: int = 0
    samples: int = 1
    top_n: Optional[int] = None
    score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        check_number("target_sparsity", self.target_sparsity, 0.0, 1.0, closed_high=False)
        check_int("steps", self.steps, 1)
        check_number("lr", self.lr, 0.0, math.inf, closed_low=False)
        check_number("lagrangian_lr", self.lagrangian_lr, 0.0, math.inf)
        check_number("warmup", self.warmup, 0.0, 1.0)
        check_number("init_log_alpha", self.init_log_alpha, -math.inf, math.inf)
        check_number("temperature", self.temperature, 0.0, math.inf, closed_low=False)
        check_int("mask_seed", self.mask_seed, 0)
        check_int("samples", self.samples, 1)
        if self.top_n is not None or self.score_threshold is not None:
            check_selection(None, self.top_n, self.score_threshold)


@dataclass
class EdgePruningConfig(EdgePruningParams):
    """``conf/method/edge-pruning.yaml``: exactly one of top_n and score_threshold, as the other score
    methods' configs (score_threshold 0.5 by default: the deterministic mask >= 0.5)."""

    score_threshold: Optional[float] = 0.5  # the paper's circuit; set it to null to give top_n
    name: str = "edge-pruning"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


# ----- the hard concrete ---------------------------------------------------------------------------


def sample_masks(log_alpha: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """One stretched-and-clamped hard-concrete sample per entry of ``log_alpha`` (differentiable in
    it), its noise u drawn from ``generator`` in [EPS, 1 - EPS]."""
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype) * (1 - 2 * EPS) + EPS
    return hard_concrete(log_alpha, u, temperature)


# ----- training ------------------------------------------------------------------------------------


@dataclass
class EdgePruningResult:
    """The trained masks' log_alphas (edges [S, R], head inputs [L, H, 3], float64) and, per step,
    the metric of the sampled masks, the expected sparsity, the target and the total loss."""

    edge_log_alpha: Tensor
    head_log_alpha: Tensor
    metric: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    target: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)

    def scores(self) -> Scores:
        """sigmoid(log_alpha): >= 0.5 exactly where the deterministic mask is >= 0.5."""
        return Scores(torch.sigmoid(self.edge_log_alpha), torch.sigmoid(self.head_log_alpha))


def target_sparsity_at(params: EdgePruningParams, i: int) -> float:
    """Step i's (0-based) target sparsity t: ``target_sparsity`` reached linearly over the warmup."""
    warmup_steps = params.warmup * params.steps
    return params.target_sparsity * (min(1.0, (i + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def train_edge_masks(
    patcher, metric: Metric, params: EdgePruningParams, progress: bool = False,
    resume: Optional[MaskTrainingState] = None, checkpointer: Optional[Checkpointing] = None,
) -> EdgePruningResult:
    """Edge pruning's training loop (module docstring) on ``patcher``'s graph, from the start or from
    ``resume`` (a saved ``MaskTrainingState``), saving through ``checkpointer``: ``train_masks``,
    whose ``NonFiniteLoss`` (an AcdcError) stops it at a non-finite loss."""
    graph = patcher.graph
    exists = graph.edge_exists.to(torch.float32)
    n_masks = int(exists.sum()) + graph.full_head_input_mask().numel()
    edge_log_alpha = torch.full(tuple(exists.shape), float(params.init_log_alpha), requires_grad=True)
    head_log_alpha = torch.full(tuple(graph.full_head_input_mask().shape), float(params.init_log_alpha), requires_grad=True)
    lambdas = torch.zeros(2, requires_grad=True)
    mask_optimizer = torch.optim.Adam([edge_log_alpha, head_log_alpha], lr=params.lr)
    lagrangian_optimizer = torch.optim.Adam([lambdas], lr=params.lagrangian_lr, maximize=True)
    generator = torch.Generator().manual_seed(params.mask_seed)

    def step(i: int) -> StepOutcome:
        edges = sample_masks(edge_log_alpha.expand(params.samples, -1, -1), params.temperature, generator) * exists
        heads = sample_masks(head_log_alpha.expand(params.samples, -1, -1, -1), params.temperature, generator)
        value = metric(float_mask_logits(patcher, CircuitMask(edges, heads))).float().mean()
        expected_l0 = (probability_nonzero(edge_log_alpha, params.temperature) * exists).sum() + probability_nonzero(
            head_log_alpha, params.temperature
        ).sum()
        gap = target_sparsity_at(params, i) - (1 - expected_l0 / n_masks)
        loss = value + lambdas[0] * gap + lambdas[1] * gap**2
        sparsity = 1 - float(expected_l0.detach()) / n_masks
        return StepOutcome(loss, value, sparsity, f"lambdas {lambdas.detach().tolist()}")

    parameters = {"edge_log_alpha": edge_log_alpha, "head_log_alpha": head_log_alpha, "lambdas": lambdas}
    training = MaskTraining("edge-pruning", params.steps, step, parameters, [mask_optimizer, lagrangian_optimizer], generator)
    log = train_masks(training, progress, resume, checkpointer)
    return EdgePruningResult(
        edge_log_alpha.detach().double() * graph.edge_exists, head_log_alpha.detach().double(),
        log.metric, log.sparsity, [target_sparsity_at(params, i) for i in range(params.steps)], log.loss,
    )


# ----- the method, for discover ----------------------------------------------------------------------


def selected(graph, scores: Scores, params: EdgePruningParams) -> CircuitMask:
    """The circuit the selection picks (module docstring)."""
    heads_at = 0.5 if params.score_threshold is None else params.score_threshold
    heads = scores.head_inputs >= heads_at
    if params.top_n is not None:
        return CircuitMask(select_edges(graph, scores.edges, top_n=params.top_n), heads)
    edges_at = 0.5 if params.score_threshold is None else params.score_threshold
    return CircuitMask((scores.edges >= edges_at) & graph.edge_exists, heads)


def _run(inputs: MethodInput, params: EdgePruningParams) -> MethodOutcome:
    trained = train_edge_masks(inputs.patcher, inputs.metric, params, inputs.progress, inputs.resume, inputs.checkpointer)
    scores = trained.scores()
    description = {
        "name": "edge-pruning", "ablation": inputs.ablation, "top_n": params.top_n, "score_threshold": params.score_threshold,
        "target_sparsity": params.target_sparsity, "steps": params.steps, "lr": params.lr,
        "lagrangian_lr": params.lagrangian_lr, "warmup": params.warmup, "init_log_alpha": params.init_log_alpha,
        "temperature": params.temperature, "mask_seed": params.mask_seed, "samples": params.samples,
        "masks": f"hard concrete, l = {LEFT}, r = {RIGHT}, on every edge and head input",
        "loss": "metric + lambda_1 (t - s) + lambda_2 (t - s)^2, s the expected sparsity over edges and head inputs",
        "score": "sigmoid(log_alpha) of the trained masks: >= 0.5 where the deterministic mask is >= 0.5",
    }
    return MethodOutcome(
        kept=selected(inputs.graph, scores, params),
        scores=scores,
        description=description,
        threshold=(0.5 if params.score_threshold is None else params.score_threshold) if params.top_n is None else None,
        forward_passes=params.steps * params.samples,
        backward_passes=params.steps,
        run_block={
            "final_metric_sampled": trained.metric[-1], "final_expected_sparsity": trained.sparsity[-1],
            "final_target_sparsity": trained.target[-1],
        },
    )


def _selection(params: EdgePruningParams) -> str:
    if params.top_n is not None:
        return f"top_n {params.top_n}"
    return f"score_threshold {0.5 if params.score_threshold is None else params.score_threshold} (target_sparsity {params.target_sparsity})"


SPEC = MethodSpec(
    name="edge-pruning", params=EdgePruningParams, config=EdgePruningConfig, run=_run, selection=_selection,
    circuits=CircuitSelection.SCORES, checkpoints=True, memory=MemoryProfile.LEARNED_MASKS,
)
