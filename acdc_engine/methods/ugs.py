"""Uniform gradient sampling (UGS; Li and Janson 2024, "Optimal ablation for interpretability"), method
``ugs``, as MIB's circuit track runs it.

MIB (hannamw/MIB-circuit-track, README "Uniform Gradient Sampling") trains UGS with the Optimal
Ablation authors' ``edge_pruning_unif_mib.py`` (alestolfo/optimalablation, ``reg_lamb`` 0.001) and
turns the trained parameters into edge scores with its ``convert_mask_to_graph.py``. What follows is
that code's definition (``mask_samplers/EdgeMaskSampler.py``: ``EdgeMaskUnifSampler``,
``EdgeMaskJointSampler``; ``mask_samplers/MaskSampler.py``: ``sample_mask``; ``pruners/Pruner.py``:
``forward``; ``utils/MaskConfig.py``: ``EdgeInferenceConfig``), on this engine's graph.

**Masks.** Every edge u->v has a logit log_alpha (no head-input masks: every head input is kept),
p = sigmoid(log_alpha), initially ``init_log_alpha`` = 1 (``EdgeInferenceConfig(init_param=1)``).
A mask is drawn uniformly around p in a window of width w = p (1 - p) (``sample_modified_unif``,
window scale 1, no dynamic window):

    u ~ U[0, 1)   (a torch.Generator seeded with ``mask_seed``)
    z = 1 - clamp((u - p) / w + 1/2, 0, 1)

so z = 1 with probability p - w/2, 0 with probability 1 - p - w/2, and in between uniformly
(E[z] = p). Gradients: dz/dlog_alpha = p (1 - p) where the clamp is inactive, 0 elsewhere (MIB's
``probs = w * probs - (w - 1) * probs.detach()`` with w detached), and each edge's gradient is
multiplied by k / n, n the number of its k samples with z in (1e-3, 1 - 1e-3), 0 if none
(``normalize_empirical_mask``): the mean over the samples in the window. The value of z is exactly
the formula above (MIB's reweighting ``g * z + (1 - g) * z.detach()`` reproduces it up to rounding).

**Loss**, minimised by Adam (MIB's AdamW with weight decay 0, betas (0.9, 0.995)):

    loss = mean over the k samples of metric(masked model)
           + sparsity_weight * sum over edges of p
           + node_weight * sum over heads h of tanh(2 x_h / (L H)) * L H / 2

x_h the sum of p over the edges into h's q, k, v and out of h (``EdgeMaskJointSampler.node_reg_loss``;
L layers, H heads). ``sparsity_weight`` is MIB's ``reg_lamb`` (0.001), ``node_weight`` its
``node_reg`` = min(reg_lamb / 2, 2e-4) unless given. Before each update the gradient is clipped
to norm 5 in each of the four edge groups (head -> q/k/v, input or MLP -> q/k/v, head -> MLP or
logits, input or MLP -> MLP or logits; ``EdgeMaskUnifSampler.clip_grad(5)``). ``lr`` unless given
is MIB's: 0.15 if sparsity_weight <= 1e-4, 0.1 if <= 5e-4, else 0.05, divided by 5 under resample
ablation (MIB's counterfactual ablation, ``cf``).

**Scores and circuit.** An edge's score is p = sigmoid(log_alpha) of the trained logits, in (0, 1)
(``convert_mask_to_graph.py``: MIB's importances, from which its evaluator takes the top edges), 0
where no edge exists; head inputs are unscored (NaN) and kept. ``CircuitSelection.SCORES``: one run
gives circuits of every size. Default circuit: score >= 0.5, i.e. log_alpha >= 0 (the Optimal
Ablation code discretizes log_alpha > tau, tau = 0); ``top_n``: the top_n edges by score.

**Differences from MIB's run** (the engine's setting, not options):
  - MIB trains on its dataset in batches of 5 prompts for one pass (1900 steps on IOI), each prompt
    repeated 12 times with its own mask (60 masks per step). Here each step runs the task's prompts
    together under ``samples`` masks (each mask applies to every prompt; default 12, MIB's copies
    per prompt), for ``steps`` steps. The in-window reweighting counts among the step's masks (MIB:
    among 60): an edge gets a metric gradient in a step with probability 1 - (1 - w)^samples, so
    fewer samples weaken the metric against the penalty, and sparsity_weight means what it means in
    MIB only with samples near 60.
  - The metric is the engine's (KL to the full model by default, as MIB's ``Pruner.forward``).
  - MIB zeroes the masks of edges on no input-to-logits path of each sample's nonzero masks
    (``prune_dangling_edges``). Under resample ablation that changes neither the loss nor its
    gradient (a node fed only ablated inputs outputs its ablated output; a node with no live
    out-edge does not reach the logits), so it is left out; under zero or mean ablation a node fed
    only ablated inputs still writes here.
  - MIB's hooks never patch position 0 (its prompts start with BOS in clean and counterfactual
    alike, where patching changes nothing); here every position is patched.
  - MIB replaces non-finite gradients by 0 and repairs NaN parameters; here a non-finite loss stops
    the run (AcdcError). The logits and the noise are float64 (MIB's float32), so that p stays
    off 0 and 1, where the window's width p (1 - p) would vanish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.nodes import QKV, NodeKind, head_name, head_receiver_name, parse_node
from acdc_engine.measure.metrics import Metric
from acdc_engine.methods.eap import check_selection, selected, unscored_head_inputs
from acdc_engine.methods.mask_training import (
    MaskTraining, MaskTrainingState, StepOutcome, TrainingLog, check_int, check_number, train_masks,
)
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import Checkpointing, CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.patching.float_pass import float_mask_logits

ADAM_BETAS = (0.9, 0.995)
"""MIB's AdamW betas (weight decay 0, so Adam)."""
GRAD_CLIP = 5.0
"""The gradient norm each edge group is clipped to."""
IN_WINDOW = 1e-3
"""A sample counts as inside the window when 1e-3 < z < 1 - 1e-3."""


@dataclass
class UgsParams:
    """ugs's parameters (``discover(method="ugs", ...)``); the module docstring defines them:

    sparsity_weight: the weight of sum(p) over edges (MIB's reg_lamb), >= 0;
    node_weight: the weight of the per-head penalty; None: min(sparsity_weight / 2, 2e-4);
    steps: Adam steps (one float-masked forward pass of ``samples`` circuits and one backward each);
    lr: Adam's learning rate; None: MIB's, from sparsity_weight and the ablation;
    init_log_alpha: every edge's initial logit (1, MIB's init_param: p = 0.73);
    samples: masks drawn per step, each applied to every prompt, their metrics averaged;
    mask_seed: seeds the mask noise (``discover``'s own ``seed`` is only recorded);
    top_n, score_threshold: the selection; both None: score >= 0.5.
    """

    sparsity_weight: float = 1e-3
    node_weight: Optional[float] = None
    steps: int = 1000
    lr: Optional[float] = None
    init_log_alpha: float = 1.0
    samples: int = 12
    mask_seed: int = 0
    top_n: Optional[int] = None
    score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        check_number("sparsity_weight", self.sparsity_weight, 0.0, math.inf)
        if self.node_weight is not None:
            check_number("node_weight", self.node_weight, 0.0, math.inf)
        check_int("steps", self.steps, 1)
        if self.lr is not None:
            check_number("lr", self.lr, 0.0, math.inf, closed_low=False)
        check_number("init_log_alpha", self.init_log_alpha, -math.inf, math.inf)
        check_int("samples", self.samples, 1)
        check_int("mask_seed", self.mask_seed, 0)
        if self.top_n is not None or self.score_threshold is not None:
            check_selection(None, self.top_n, self.score_threshold)


@dataclass
class UgsConfig(UgsParams):
    """``conf/method/ugs.yaml``: exactly one of top_n and score_threshold (0.5 by default)."""

    score_threshold: Optional[float] = 0.5  # set it to null to give top_n
    name: str = "ugs"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


def mib_lr(sparsity_weight: float, ablation: str) -> float:
    """MIB's learning rate for ``sparsity_weight`` (reg_lamb) under ``ablation``."""
    base = 0.15 if sparsity_weight <= 1e-4 else 0.1 if sparsity_weight <= 5e-4 else 0.05
    return base / 5 if ablation == choices.Ablation.resample.value else base


def resolved_node_weight(params: UgsParams) -> float:
    """``node_weight``, or MIB's min(sparsity_weight / 2, 2e-4)."""
    return min(0.5 * params.sparsity_weight, 2e-4) if params.node_weight is None else params.node_weight


# ----- masks and loss ------------------------------------------------------------------------------


def window_masks(log_alpha: Tensor, u: Tensor) -> Tensor:
    """UGS masks [k, *log_alpha.shape] for noise ``u`` of that shape (entries in [0, 1)): the value
    1 - clamp((u - p) / w + 1/2, 0, 1), p = sigmoid(log_alpha), w = p (1 - p); the gradient
    p (1 - p) inside the window, times k / (the samples inside the window) (module docstring)."""
    p = torch.sigmoid(log_alpha)
    fixed = p.detach()
    position = (u - fixed) / (fixed * (1 - fixed)) + 0.5
    value = 1 - position.clamp(0.0, 1.0)
    inside = ((position >= 0) & (position <= 1)).to(p.dtype)
    in_window = ((value > IN_WINDOW) & (value < 1 - IN_WINDOW)).sum(0)
    weight = torch.where(in_window > 0, u.shape[0] / in_window.clamp(min=1), torch.zeros((), dtype=p.dtype))
    return value + weight * inside * (p - fixed)


def head_degree_index(graph: Graph) -> tuple[Tensor, Tensor]:
    """For every head (layer-major): its sender index [L * H] and its q, k, v receivers' indices [L * H, 3]."""
    shape = graph.shape
    heads = [(layer, head) for layer in range(shape.n_layers) for head in range(shape.n_heads)]
    senders = torch.tensor([graph.sender_index[head_name(layer, head)] for layer, head in heads])
    receivers = torch.tensor([[graph.receiver_index[head_receiver_name(layer, head, x)] for x in QKV] for layer, head in heads])
    return senders, receivers


def node_penalty(graph: Graph, p: Tensor) -> Tensor:
    """sum over heads of tanh(2 x_h / (L H)) * L H / 2, x_h the sum of ``p`` [S, R] (0 where no
    edge) over the edges into the head's q, k, v and out of the head."""
    senders, receivers = head_degree_index(graph)
    degree = p.sum(1)[senders] + p.sum(0)[receivers].sum(1)
    n_heads = graph.shape.n_layers * graph.shape.n_heads
    return (torch.tanh(2 * degree / n_heads) * n_heads / 2).sum()


def ugs_loss(patcher, metric: Metric, log_alpha: Tensor, u: Tensor, sparsity_weight: float, node_weight: float) -> tuple[Tensor, Tensor]:
    """(loss, metric) of one step: masks ``window_masks(log_alpha, u)`` ([S, R] logits, [k, S, R]
    noise) on every edge, every head input kept; the metric averaged over the k masks."""
    graph = patcher.graph
    exists = graph.edge_exists.to(log_alpha.dtype)
    edges = window_masks(log_alpha, u) * exists
    heads = graph.full_head_input_mask().to(log_alpha.dtype).expand(u.shape[0], -1, -1, -1)
    value = metric(float_mask_logits(patcher, CircuitMask(edges, heads))).float().mean()
    p = torch.sigmoid(log_alpha) * exists
    return value + sparsity_weight * p.sum() + node_weight * node_penalty(graph, p), value


def edge_groups(graph: Graph) -> list[Tensor]:
    """The four edge groups whose gradients are clipped apart, bool [S, R] each: head -> q/k/v,
    input or MLP -> q/k/v, head -> MLP or logits, input or MLP -> MLP or logits."""
    from_head = torch.tensor([parse_node(name).kind is NodeKind.HEAD for name in graph.senders])[:, None]
    to_head = torch.tensor([parse_node(name).kind is NodeKind.HEAD_RECEIVER for name in graph.receivers])[None, :]
    return [graph.edge_exists & a & b for b in (to_head, ~to_head) for a in (from_head, ~from_head)]


def clip_group_gradients(grad: Tensor, groups: list[Tensor], max_norm: float) -> None:
    """Scale ``grad`` in place, each group to norm <= max_norm (torch's clip_grad_norm_ per group)."""
    for group in groups:
        norm = grad[group].norm()
        grad.mul_(torch.where(group, (max_norm / (norm + 1e-6)).clamp(max=1.0), torch.ones((), dtype=grad.dtype)))


# ----- training ------------------------------------------------------------------------------------


@dataclass
class UgsResult:
    """The trained edge logits log_alpha [S, R] (float64, 0 where no edge) and the training log."""

    log_alpha: Tensor
    log: TrainingLog

    def scores(self, graph: Graph) -> Scores:
        """p = sigmoid(log_alpha) per edge (0 where no edge), head inputs unscored."""
        return Scores(torch.sigmoid(self.log_alpha) * graph.edge_exists, unscored_head_inputs(graph))


def train_ugs(
    patcher, metric: Metric, params: UgsParams, lr: float, progress: bool = False,
    resume: Optional[MaskTrainingState] = None, checkpointer: Optional[Checkpointing] = None,
) -> UgsResult:
    """UGS's training loop (module docstring) on ``patcher``'s graph, from the start or from
    ``resume`` (a saved ``MaskTrainingState``), saving through ``checkpointer``: ``train_masks``,
    whose ``NonFiniteLoss`` (an AcdcError) stops it at a non-finite loss."""
    graph = patcher.graph
    log_alpha = torch.full(tuple(graph.edge_exists.shape), float(params.init_log_alpha), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_alpha], lr=lr, betas=ADAM_BETAS)
    generator = torch.Generator().manual_seed(params.mask_seed)
    groups = edge_groups(graph)
    node_weight = resolved_node_weight(params)

    def step(i: int) -> StepOutcome:
        u = torch.rand((params.samples, *log_alpha.shape), generator=generator, dtype=torch.float64)
        loss, value = ugs_loss(patcher, metric, log_alpha, u, params.sparsity_weight, node_weight)
        kept = float((torch.sigmoid(log_alpha.detach()) * graph.edge_exists).sum()) / graph.n_edges
        return StepOutcome(loss, value, 1 - kept)

    training = MaskTraining(
        "ugs", params.steps, step, {"log_alpha": log_alpha}, [optimizer], generator,
        before_update=lambda: clip_group_gradients(log_alpha.grad, groups, GRAD_CLIP),
    )
    log = train_masks(training, progress, resume, checkpointer)
    return UgsResult(log_alpha.detach() * graph.edge_exists, log)


# ----- the method, for discover ----------------------------------------------------------------------


def _threshold(params: UgsParams) -> Optional[float]:
    if params.top_n is not None:
        return None
    return 0.5 if params.score_threshold is None else params.score_threshold


def _run(inputs: MethodInput, params: UgsParams) -> MethodOutcome:
    lr = mib_lr(params.sparsity_weight, inputs.ablation) if params.lr is None else params.lr
    trained = train_ugs(inputs.patcher, inputs.metric, params, lr, inputs.progress, inputs.resume, inputs.checkpointer)
    scores = trained.scores(inputs.graph)
    description = {
        "name": "ugs", "ablation": inputs.ablation, "top_n": params.top_n, "score_threshold": params.score_threshold,
        "sparsity_weight": params.sparsity_weight, "node_weight": resolved_node_weight(params), "steps": params.steps,
        "lr": lr, "init_log_alpha": params.init_log_alpha, "samples": params.samples, "mask_seed": params.mask_seed,
        "masks": "uniform in a window of width p(1 - p) around p = sigmoid(log_alpha), on every edge",
        "loss": "metric + sparsity_weight * sum(p) + node_weight * sum over heads of tanh(2 x / (L H)) L H / 2",
        "score": "p = sigmoid(log_alpha) of the trained edges (MIB's convert_mask_to_graph)",
    }
    return MethodOutcome(
        kept=selected(inputs.graph, scores, params.top_n, _threshold(params)),
        scores=scores,
        description=description,
        threshold=_threshold(params),
        forward_passes=params.steps * params.samples,
        backward_passes=params.steps,
        run_block={"final_metric_sampled": trained.log.metric[-1], "final_expected_sparsity": trained.log.sparsity[-1]},
    )


def _selection(params: UgsParams) -> str:
    if params.top_n is not None:
        return f"top_n {params.top_n}"
    return f"score_threshold {_threshold(params)} (sparsity_weight {params.sparsity_weight:g})"


SPEC = MethodSpec(
    name="ugs", params=UgsParams, config=UgsConfig, run=_run, selection=_selection, circuits=CircuitSelection.SCORES,
    checkpoints=True, memory=MemoryProfile.LEARNED_MASKS,
)
