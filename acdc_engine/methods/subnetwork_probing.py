"""Subnetwork probing (SP; Cao et al. 2021, as the ACDC paper, Conmy et al. 2023, adapted and ran it),
method ``subnetwork-probing``: hard-concrete masks over nodes.

Followed: ArthurConmy/Automatic-Circuit-Discovery, ``subnetwork_probing/train.py`` (``train_induction``,
``regularizer``, ``visualize_mask``, ``correspondence_from_mask``) and its TransformerLens fork's
``MaskedHookPoint`` (``subnetwork_probing/transformer_lens/transformer_lens/hook_points.py``) on
``hook_q``, ``hook_k``, ``hook_v`` ([n_heads] masks per layer) and ``hook_mlp_out`` (one per layer).

**Masks.** Every head's q, k and v and every MLP's output has a hard-concrete mask (Louizos et al.;
l = -0.1, r = 1.1, beta = ``temperature`` 2/3), one sample per step shared by all prompts:

    u ~ U(0, 1) clamped to [1e-4, 1 - 1e-4]   (a torch.Generator seeded with ``mask_seed``)
    z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) * (r - l) + l, 0, 1)

initially log_alpha = ``init_log_alpha`` = log 5 (``MaskedHookPoint.init_weights``, mask_p = 0.9).
A masked activation is z * a + (1 - z) * a*, a* its ablated value (the corrupted run's; 0 under
zero ablation, where SP multiplies by z). On the engine's graph this is the float-mask pass
(``float_mask_logits``) with
  - head inputs = the q, k, v masks (q = h * q(in) + (1 - h) * q*, exactly SP's masked hook_q);
  - every edge out of MLP m{L} = m{L}'s mask, broadcast over receivers (in_v = A_v +
    sum_u z_u (out_u - out*_u): the residual stream carries z * out + (1 - z) * out*);
  - every other edge 1 (SP masks neither the embeddings nor heads' outputs: a head whose q, k, v
    are all ablated outputs its ablated output).

**Loss**, minimised by Adam (``lr`` 0.001, betas (0.9, 0.999)) for ``steps`` steps:

    loss = metric(masked model) + sparsity_weight * R,
    R = mean over hook points of (mean over the hook point's masks of P(z != 0)),
    P(z != 0) = sigmoid(log_alpha - beta log(-l / r)),

the hook points being each layer's hook_q, hook_k, hook_v (H masks each) and hook_mlp_out (one
mask). The fork gives every block a masked hook_mlp_out, attention-only models too: there the MLP
masks exist, count in R and are trained by R alone (they mask nothing). ``sparsity_weight`` is
train.py's ``lambda_reg`` (default 50; the paper sweeps it, e.g. 0.01 to 250 for KL on IOI);
``steps`` is train.py's ``epochs`` (default 3000; the paper's runs, ``launch_grid_fill.py``, 10000).
The metric is the engine's (the task's default, lower = better), as train.py's validation metric.

**Circuit.** A node is kept when its deterministic mask >= 0.5, i.e. sigmoid(log_alpha) >= 0.5.
(``visualize_mask`` keeps it when one further hard-concrete sample is >= 0.5, which happens with
probability sigmoid(log_alpha): the rule here is that draw's most likely outcome.) As
``correspondence_from_mask``: a head is kept when any of its q, k, v is; the input and logits
always are; the edge circuit is every edge from a kept sender (input, kept head, kept MLP) to a
kept receiver (q/k/v with a kept mask, kept MLP, logits); the head inputs are the q/k/v masks kept.

**Scores** (``Scores`` layout): a node's score is sigmoid(log_alpha) in (0, 1), a head sender's the
max of its q, k, v scores, the input's and logits' 1; an edge's score is the min of its sender's
and its receiver's (0 where no edge), head inputs score their mask. So score >= 0.5 is exactly the
edge circuit above, and MIB's importances rank edges by their weaker end. Edges share their
node's score: all edges out of one MLP into kept receivers tie, and top_n breaks ties in graph
order (``select_edges``). Selection: neither ``top_n`` nor ``score_threshold``: score >= 0.5;
``score_threshold``: score >= it, edges and head inputs; ``top_n``: the top_n edges by score and the
head inputs scoring at least the lowest of them.
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
from acdc_engine.core.nodes import NodeKind, mlp_name, parse_node
from acdc_engine.measure.metrics import Metric
from acdc_engine.methods.eap import check_selection, select_edges
from acdc_engine.methods.mask_training import (
    LEFT, RIGHT, MaskTraining, MaskTrainingState, StepOutcome, TrainingLog, check_int, check_number, hard_concrete,
    probability_nonzero, train_masks,
)
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import Checkpointing, CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.patching.float_pass import float_mask_logits

NOISE_CLAMP = 1e-4
"""SP's uniform noise is clamped to [1e-4, 1 - 1e-4]."""


@dataclass
class SubnetworkProbingParams:
    """subnetwork-probing's parameters (``discover(method="subnetwork-probing", ...)``):

    sparsity_weight: the regulariser's weight (train.py's lambda_reg), >= 0;
    steps: Adam steps (one float-masked forward and backward pass each);
    lr: Adam's learning rate;
    init_log_alpha: every mask's initial log_alpha (log 5: SP's mask_p 0.9);
    temperature: the hard concrete's beta;
    mask_seed: seeds the mask noise (``discover``'s own ``seed`` is only recorded);
    top_n, score_threshold: the selection (module docstring); both None: score >= 0.5.
    """

    sparsity_weight: float = 50.0
    steps: int = 3000
    lr: float = 1e-3
    init_log_alpha: float = math.log(5.0)
    temperature: float = 2.0 / 3.0
    mask_seed: int = 0
    top_n: Optional[int] = None
    score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        check_number("sparsity_weight", self.sparsity_weight, 0.0, math.inf)
        check_int("steps", self.steps, 1)
        check_number("lr", self.lr, 0.0, math.inf, closed_low=False)
        check_number("init_log_alpha", self.init_log_alpha, -math.inf, math.inf)
        check_number("temperature", self.temperature, 0.0, math.inf, closed_low=False)
        check_int("mask_seed", self.mask_seed, 0)
        if self.top_n is not None or self.score_threshold is not None:
            check_selection(None, self.top_n, self.score_threshold)


@dataclass
class SubnetworkProbingConfig(SubnetworkProbingParams):
    """``conf/method/subnetwork-probing.yaml``: exactly one of top_n and score_threshold (0.5 by default)."""

    score_threshold: Optional[float] = 0.5  # set it to null to give top_n
    name: str = "subnetwork-probing"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


# ----- masks and loss ------------------------------------------------------------------------------


@dataclass
class NodeLogits:
    """SP's mask parameters: ``qkv`` [L, H, 3] (each head's q, k, v) and ``mlp`` [L] (each layer's
    MLP output; on attention-only models masks that mask nothing, see the module docstring)."""

    qkv: Tensor
    mlp: Tensor


def mlp_senders(graph: Graph) -> Tensor:
    """The sender indices of the MLPs m0 .. m{L-1} (empty without MLPs)."""
    if not graph.shape.has_mlp:
        return torch.zeros(0, dtype=torch.long)
    return torch.tensor([graph.sender_index[mlp_name(layer)] for layer in range(graph.shape.n_layers)])


def node_masks_to_circuit(graph: Graph, qkv: Tensor, mlp: Tensor) -> CircuitMask:
    """The float circuit of node masks ``qkv`` [L, H, 3] and ``mlp`` [L] in [0, 1]: head inputs =
    ``qkv``, every edge out of MLP m{L} = ``mlp[L]``, every other edge 1 (differentiable in both)."""
    per_sender = torch.ones(len(graph.senders), dtype=qkv.dtype)
    rows = mlp_senders(graph)
    per_sender = per_sender.index_put((rows,), mlp[: len(rows)])
    return CircuitMask(per_sender[:, None] * graph.edge_exists.to(qkv.dtype), qkv)


def regularizer(logits: NodeLogits, temperature: float) -> Tensor:
    """R = mean over hook points (per layer hook_q, hook_k, hook_v, hook_mlp_out) of the mean
    P(z != 0) of the hook point's masks."""
    per_hook = torch.cat([probability_nonzero(logits.qkv, temperature).mean(1).flatten(), probability_nonzero(logits.mlp, temperature)])
    return per_hook.mean()


def sp_loss(patcher, metric: Metric, logits: NodeLogits, u: NodeLogits, params: SubnetworkProbingParams) -> tuple[Tensor, Tensor]:
    """(loss, metric) of one step with noise ``u`` (the shapes of ``logits``, entries in (0, 1))."""
    qkv = hard_concrete(logits.qkv, u.qkv, params.temperature)
    mlp = hard_concrete(logits.mlp, u.mlp, params.temperature)
    circuit = node_masks_to_circuit(patcher.graph, qkv, mlp).map(lambda t: t[None])  # one circuit
    value = metric(float_mask_logits(patcher, circuit)).float().mean()
    return value + params.sparsity_weight * regularizer(logits, params.temperature), value


def _expected_sparsity(graph: Graph, logits: NodeLogits, temperature: float) -> float:
    """1 - mean P(z != 0) over the masks that mask something."""
    probabilities = [probability_nonzero(logits.qkv, temperature).flatten()]
    if graph.shape.has_mlp:
        probabilities.append(probability_nonzero(logits.mlp, temperature))
    return 1 - float(torch.cat(probabilities).detach().mean())


@dataclass
class SpResult:
    """The trained log_alphas (float64) and the training log."""

    logits: NodeLogits
    log: TrainingLog


def train_subnetwork_probing(
    patcher, metric: Metric, params: SubnetworkProbingParams, progress: bool = False,
    resume: Optional[MaskTrainingState] = None, checkpointer: Optional[Checkpointing] = None,
) -> SpResult:
    """SP's training loop (module docstring) on ``patcher``'s graph, from the start or from
    ``resume`` (a saved ``MaskTrainingState``), saving through ``checkpointer``: ``train_masks``,
    whose ``NonFiniteLoss`` (an AcdcError) stops it at a non-finite loss."""
    shape = patcher.graph.shape
    logits = NodeLogits(
        torch.full((shape.n_layers, shape.n_heads, 3), float(params.init_log_alpha), requires_grad=True),
        torch.full((shape.n_layers,), float(params.init_log_alpha), requires_grad=True),
    )
    optimizer = torch.optim.Adam([logits.qkv, logits.mlp], lr=params.lr)
    generator = torch.Generator().manual_seed(params.mask_seed)

    def noise(like: Tensor) -> Tensor:
        return torch.rand(like.shape, generator=generator).clamp(NOISE_CLAMP, 1 - NOISE_CLAMP)

    def step(i: int) -> StepOutcome:
        loss, value = sp_loss(patcher, metric, logits, NodeLogits(noise(logits.qkv), noise(logits.mlp)), params)
        return StepOutcome(loss, value, _expected_sparsity(patcher.graph, logits, params.temperature))

    parameters = {"qkv": logits.qkv, "mlp": logits.mlp}
    training = MaskTraining("subnetwork-probing", params.steps, step, parameters, [optimizer], generator)
    log = train_masks(training, progress, resume, checkpointer)
    return SpResult(NodeLogits(logits.qkv.detach().double(), logits.mlp.detach().double()), log)


# ----- scores and the circuit ------------------------------------------------------------------------


def node_scores(graph: Graph, logits: NodeLogits) -> tuple[Tensor, Tensor]:
    """(sender scores [S], receiver scores [R]), float64: sigmoid(log_alpha) of the node's mask, a
    head sender the max over its q, k, v, the input senders and logits 1."""
    qkv, mlp = torch.sigmoid(logits.qkv), torch.sigmoid(logits.mlp)

    def score(name: str) -> Tensor:
        node = parse_node(name)
        if node.kind is NodeKind.HEAD:
            return qkv[node.layer, node.head].max()
        if node.kind is NodeKind.HEAD_RECEIVER:
            return qkv[node.layer, node.head, node.qkv_index]
        if node.kind is NodeKind.MLP:
            return mlp[node.layer]
        return torch.ones((), dtype=qkv.dtype)

    return torch.stack([score(name) for name in graph.senders]), torch.stack([score(name) for name in graph.receivers])


def sp_scores(graph: Graph, logits: NodeLogits) -> Scores:
    """Edge scores min(sender score, receiver score) (0 where no edge), head inputs sigmoid(log_alpha)."""
    senders, receivers = node_scores(graph, logits)
    edges = torch.minimum(senders[:, None], receivers[None, :]) * graph.edge_exists
    return Scores(edges, torch.sigmoid(logits.qkv))


def sp_selected(graph: Graph, scores: Scores, params: SubnetworkProbingParams) -> CircuitMask:
    """The circuit the selection picks (module docstring)."""
    if params.top_n is None:
        cut = 0.5 if params.score_threshold is None else params.score_threshold
        return CircuitMask((scores.edges >= cut) & graph.edge_exists, scores.head_inputs >= cut)
    edges = select_edges(graph, scores.edges, top_n=params.top_n)
    cut = float(scores.edges[edges].min()) if params.top_n > 0 else math.inf
    return CircuitMask(edges, scores.head_inputs >= cut)


def _threshold(params: SubnetworkProbingParams) -> Optional[float]:
    if params.top_n is not None:
        return None
    return 0.5 if params.score_threshold is None else params.score_threshold


def _run(inputs: MethodInput, params: SubnetworkProbingParams) -> MethodOutcome:
    trained = train_subnetwork_probing(inputs.patcher, inputs.metric, params, inputs.progress, inputs.resume, inputs.checkpointer)
    scores = sp_scores(inputs.graph, trained.logits)
    description = {
        "name": "subnetwork-probing", "ablation": inputs.ablation, "top_n": params.top_n,
        "score_threshold": params.score_threshold, "sparsity_weight": params.sparsity_weight, "steps": params.steps,
        "lr": params.lr, "init_log_alpha": params.init_log_alpha, "temperature": params.temperature,
        "mask_seed": params.mask_seed,
        "masks": f"hard concrete, l = {LEFT}, r = {RIGHT}, on every head's q, k, v and every MLP's output",
        "loss": "metric + sparsity_weight * mean over hook points (q, k, v, mlp_out per layer) of mean P(z != 0)",
        "score": "edge: min of its sender's and receiver's node scores; node: sigmoid(log_alpha), a head the max of its q, k, v",
    }
    return MethodOutcome(
        kept=sp_selected(inputs.graph, scores, params),
        scores=scores,
        description=description,
        threshold=_threshold(params),
        forward_passes=params.steps,
        backward_passes=params.steps,
        run_block={"final_metric_sampled": trained.log.metric[-1], "final_expected_sparsity": trained.log.sparsity[-1]},
    )


def _selection(params: SubnetworkProbingParams) -> str:
    if params.top_n is not None:
        return f"top_n {params.top_n}"
    return f"score_threshold {_threshold(params)} (sparsity_weight {params.sparsity_weight:g})"


SPEC = MethodSpec(
    name="subnetwork-probing", params=SubnetworkProbingParams, config=SubnetworkProbingConfig, run=_run,
    selection=_selection, circuits=CircuitSelection.SCORES, checkpoints=True, memory=MemoryProfile.LEARNED_MASKS,
)
