"""Node-level attribution: EAP, EAP-IG-inputs, EAP-IG-activations and exact scores of whole nodes,
as EAP-IG's ``attribute_node`` computes them (hannamw/EAP-IG ``src/eap/attribute_node.py``; MIB's
node track runs it through ``run_attribution.py --level node`` and reads ``nodes_scores``).

Nodes are the graph's senders (``acdc_engine.methods.node_circuits``). Each method is its own
registry entry (``eap-nodes``, ``eap-ig-nodes``, ``eap-ig-activations-nodes``, ``exact-nodes``), a
``CircuitSelection.SCORES`` method whose circuit is the top_n nodes by |score| (or those with
|score| >= ``score_threshold``) and the edges between them.

**Gradient methods** score node u, per output dimension d (a "neuron", EAP-IG's ``neuron=True``)
and in sum (the node score, its default ``einsum(..., '... hidden -> ...')``):

    neuron(u, d) = sum over prompts, positions of (out*_u - out_u)[d] * G_u[d],   node(u) = sum_d neuron(u, d)

with out*_u - out_u the clean run's difference (the ablated output: resample, zero or mean) and
G_u the mean over the method's runs of the metric's gradient where EAP-IG's backward hook for u
reads it (``make_hooks_and_matrices``):

  * the input and the heads: at their output (``hook_embed``, ``attn.hook_result``), i.e.
    d metric / d out_u = sum over u's receivers v of g_v, the gradient at v's input;
  * an MLP: at its **input** (``hook_mlp_in``: EAP-IG registers the MLP's backward hook on its
    ``in_hook``), i.e. g at the MLP's own receiver. ``mlp_gradient: input`` (the default) computes
    this; ``mlp_gradient: output`` takes an MLP's gradient at its output like every other node's,
    the first-order estimate of removing it (what ``exact-nodes`` measures).

So the input's and a head's node score is the sum of its edges' EAP scores from the same runs.
The runs are EAP-IG's: ``eap-nodes`` the clean model; ``eap-ig-nodes`` the input embeddings at
out* + alpha (out - out*), alpha = k / steps for **k = 1 .. steps** (``attribute_node.py``'s
``range(1, steps + 1)``: the right Riemann sum, not the k = 0 .. steps - 1 of its edge-level
``attribute.py``; ``interpolation`` names the points as ``eap-ig`` does, default
``right-riemann``); ``eap-ig-activations-nodes`` the runs of edge-level EAP-IG-activations (each
sender group held at out* + k / steps (out - out*), k = 1 .. steps; G averaged over all groups x
steps runs). Sign and scale as the edge methods (``acdc_engine.methods.eap``): positive = patching
the node raises the metric, on the metric's scale (EAP-IG divides by the number of prompts once
more). Ablations: out* throughout, as for edges (EAP-IG allows only resample ablation for
EAP-IG-inputs and interpolates EAP-IG-activations from 0 under mean ablation).

**exact-nodes** (``get_scores_exact``): node(u) = metric(full model without every edge out of u)
- metric(full model), every node removed alone, batched through the patcher by the layer its
earliest reader reads in (``node_circuits.start_layer``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.nodes import NodeKind, parse_node
from acdc_engine.core.patcher import Evaluate
from acdc_engine.core.progress import progress_bar
from acdc_engine.measure.metrics import Metric
from acdc_engine.methods.acdc import check_batch_size
from acdc_engine.methods.attribution import ig_activations_gradients, ig_activations_passes
from acdc_engine.methods.eap import (
    POINTS, SCALING, SIGN, ZeroGradientWarning, check_interpolation_parameter, check_steps, eap_ig_gradients, ig_alphas,
    metric_in_float32, score_dtype, score_selection, warn_if_negligible,
)
from acdc_engine.methods.exact import check_optional_batch_size
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.methods.node_circuits import (
    check_node_selection, node_circuit, node_edge_scores, node_score_block, select_nodes, start_layer, without_senders,
)

MLP_GRADIENTS = ("input", "output")
"""Where an MLP node's gradient is taken: ``input`` (EAP-IG's hook_mlp_in) or ``output``."""


# ----- scores -----------------------------------------------------------------------------------


def check_mlp_gradient(mlp_gradient: str) -> str:
    if mlp_gradient not in MLP_GRADIENTS:
        raise AcdcError(f"unknown mlp_gradient '{mlp_gradient}'; choose one of {', '.join(MLP_GRADIENTS)}")
    return mlp_gradient


def neuron_scores_from_gradients(patcher, gradients: Tensor, mlp_gradient: str = "input") -> Tensor:
    """Every node's neuron scores (module docstring) from the mean receiver gradients
    [n_prompts, pos, n_receivers, d_model]: float64 [n_senders, d_model] on the CPU.

    Senders that write at one point share their readers, so G at their output is one sum over
    those receivers' gradients per write point; an MLP's ``input`` gradient is its receiver's."""
    check_mlp_gradient(mlp_gradient)
    graph = patcher.graph
    dtype = score_dtype(gradients.dtype)
    gradients = gradients.to(dtype)
    diff = (patcher.ablated_sender_out - patcher.clean_sender_out).to(dtype)  # [n, pos, S, d]
    scores = torch.zeros(len(graph.senders), diff.shape[-1], dtype=dtype, device=diff.device)
    for write in sorted(set(graph.sender_layer)):
        group = [s for s, layer in enumerate(graph.sender_layer) if layer == write]
        readers = graph.edge_exists[group[0]].nonzero().flatten().to(gradients.device)
        at_output = gradients[:, :, readers].sum(2)  # [n, pos, d]
        scores[group] = torch.einsum("npsd,npd->sd", diff[:, :, group], at_output)
    if mlp_gradient == "input":
        for s, name in enumerate(graph.senders):
            if parse_node(name).kind is NodeKind.MLP:
                scores[s] = torch.einsum("npd,npd->d", diff[:, :, s], gradients[:, :, graph.receiver_index[name]])
    return scores.double().cpu()


def eap_node_gradients(patcher, metric: Metric) -> Tensor:
    """EAP's runs: the receiver gradients at the clean model."""
    gradients, _ = patcher.receiver_gradients(metric_in_float32(metric))
    return gradients


@dataclass
class NodeScoresResult:
    """scores: float64 [n_senders]; passes: the patched passes run (exact-nodes: forward only)."""

    scores: Tensor
    passes: int


def exact_node_scores(graph: Graph, evaluate: Evaluate, batch_size: int, progress: bool = False) -> NodeScoresResult:
    """metric(full model without every edge out of u) - metric(full model) for every node u:
    float64 [n_senders]; ``batch_size`` circuits per patched pass, each batch resumed at its
    nodes' ``start_layer``."""
    check_batch_size(batch_size)
    full_mask = graph.full_mask()
    full = float(evaluate(CircuitMask.stack([full_mask]), graph.shape.n_layers)[0])
    by_layer: dict[int, list[int]] = {}
    for s in range(len(graph.senders)):
        by_layer.setdefault(start_layer(graph, s), []).append(s)
    batches = [(layer, nodes[i : i + batch_size]) for layer, nodes in sorted(by_layer.items()) for i in range(0, len(nodes), batch_size)]
    scores = torch.zeros(len(graph.senders), dtype=torch.float64)
    for layer, batch in progress_bar(batches, progress=progress, desc="exact node scores", unit="pass"):
        masks = []
        for s in batch:
            kept = torch.ones(len(graph.senders), dtype=torch.bool)
            kept[s] = False
            masks.append(without_senders(graph, kept))
        scores[batch] = evaluate(CircuitMask.stack(masks), layer).double().cpu() - full
    return NodeScoresResult(scores, len(batches) + 1)


# ----- the methods, for discover ------------------------------------------------------------------


@dataclass
class NodeScoreParams:
    """A node score method's selection, exactly one of

    top_n: keep the top_n nodes by |score| (every node when top_n exceeds them), or
    score_threshold: keep the nodes with |score| >= it;
    the circuit is the edges between the kept nodes.
    """

    top_n: Optional[int] = None
    score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        check_node_selection(self.top_n, self.score_threshold)


@dataclass
class NodeGradientParams(NodeScoreParams):
    """A node gradient method's parameters: the selection and ``mlp_gradient`` ("input": at the
    MLP's input, EAP-IG's hook; "output": at its output, as every other node's)."""

    mlp_gradient: str = "input"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_mlp_gradient(self.mlp_gradient)


@dataclass
class EapIgNodesParams(NodeGradientParams):
    """eap-ig-nodes' parameters: the gradient method's, ``steps`` and ``interpolation``
    ("right-riemann": k / steps, k = 1 .. steps, EAP-IG's attribute_node points; "eap-ig":
    k = 0 .. steps - 1, its edge-level points; "midpoint")."""

    steps: int = 5
    interpolation: str = "right-riemann"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)
        check_interpolation_parameter(self.interpolation)


@dataclass
class IgActivationsNodesParams(NodeGradientParams):
    """eap-ig-activations-nodes' parameters: the gradient method's and ``steps`` per sender group."""

    steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)


@dataclass
class ExactNodesParams(NodeScoreParams):
    """exact-nodes' parameters: the selection and ``batch_size``, circuits per patched pass (None:
    chosen from free memory, at most 32)."""

    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_optional_batch_size(self.batch_size)


@dataclass
class EapNodesConfig(NodeGradientParams):
    """``conf/method/eap-nodes.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-nodes"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class EapIgNodesConfig(EapIgNodesParams):
    """``conf/method/eap-ig-nodes.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-ig-nodes"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class IgActivationsNodesConfig(IgActivationsNodesParams):
    """``conf/method/eap-ig-activations-nodes.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-ig-activations-nodes"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class ExactNodesConfig(ExactNodesParams):
    """``conf/method/exact-nodes.yaml``."""

    top_n: Optional[int] = 20
    name: str = "exact-nodes"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


MLP_GRADIENT_TEXT = {
    "input": "at the MLP's input (EAP-IG's hook_mlp_in backward hook)",
    "output": "at the MLP's output, as every other node's",
}


def node_outcome(
    inputs: MethodInput, params: NodeScoreParams, name: str, scores: Tensor, description: dict[str, Any], passes: tuple[int, int]
) -> MethodOutcome:
    """A node score method's outcome: the edges between the nodes ``params`` select, the node
    scores on their edges and (``node_scores``) in the method block after ``description``."""
    graph = inputs.graph
    kept = select_nodes(graph, scores, params.top_n, params.score_threshold)
    block = {"name": name, "ablation": inputs.ablation, "level": "node", "top_n": params.top_n, "score_threshold": params.score_threshold}
    return MethodOutcome(
        kept=node_circuit(graph, kept), scores=node_edge_scores(graph, scores),
        description={**block, **description, "node_scores": node_score_block(graph, scores)},
        threshold=params.score_threshold, forward_passes=passes[0], backward_passes=passes[1],
    )


def _gradient_outcome(inputs: MethodInput, params: NodeGradientParams, name: str, gradients: Tensor, passes: int, runs: dict[str, Any]) -> MethodOutcome:
    scores = neuron_scores_from_gradients(inputs.patcher, gradients, params.mlp_gradient).sum(-1)
    description = {
        **runs,
        "gradient": f"the input's and heads' at their output; an MLP's {MLP_GRADIENT_TEXT[params.mlp_gradient]}",
        "mlp_gradient": params.mlp_gradient, "sign": SIGN, "scaling": SCALING,
    }
    return node_outcome(inputs, params, name, scores, description, (passes, passes))


def warn_if_kl(metric_name: str) -> None:
    """EAP's warning (``eap.run_eap``): under KL every gradient at the clean model is 0."""
    if metric_name == "kl":
        warnings.warn(
            "EAP with the KL metric: KL(clean || circuit) is minimal at the clean model, so its gradient "
            "there is exactly 0 and every EAP score is rounding noise; use an EAP-IG method or metric logit_diff",
            ZeroGradientWarning, stacklevel=3,
        )


def _eap_nodes(inputs: MethodInput, params: NodeGradientParams) -> MethodOutcome:
    warn_if_kl(inputs.metric_name)
    gradients = eap_node_gradients(inputs.patcher, inputs.metric)
    return _gradient_outcome(inputs, params, "eap-nodes", gradients, 1, {"runs": "the clean model"})


def _eap_ig_nodes(inputs: MethodInput, params: EapIgNodesParams) -> MethodOutcome:
    gradients = eap_ig_gradients(inputs.patcher, inputs.metric, params.steps, params.interpolation, inputs.progress)
    runs = {
        "steps": params.steps, "interpolation": params.interpolation, "points": POINTS[params.interpolation],
        "interpolated": "the input senders' outputs, from their ablated values to the clean ones",
    }
    return _gradient_outcome(inputs, params, "eap-ig-nodes", gradients, len(ig_alphas(params.steps, params.interpolation)), runs)


def _ig_activations_nodes(inputs: MethodInput, params: IgActivationsNodesParams) -> MethodOutcome:
    gradients = ig_activations_gradients(inputs.patcher, inputs.metric, params.steps, inputs.progress)
    runs = {
        "steps": params.steps, "points": "alpha = k / steps, k = 1 .. steps (EAP-IG's)",
        "interpolated": "one sender group at a time (the input senders, a layer's heads, a layer's MLP), held fixed",
    }
    return _gradient_outcome(inputs, params, "eap-ig-activations-nodes", gradients, ig_activations_passes(inputs.graph, params.steps), runs)


def _exact_nodes(inputs: MethodInput, params: ExactNodesParams) -> MethodOutcome:
    batch_size = params.batch_size if params.batch_size is not None else inputs.patcher.auto_batch_size()
    result = exact_node_scores(inputs.graph, inputs.evaluate, batch_size, inputs.progress)
    description = {
        "score": "metric(full model without every edge out of the node) - metric(full model), each node removed alone",
        "sign": "positive = removing the node raises the metric (EAP-IG's sign)",
        "scaling": "the metric's own (the prompt mean)",
    }
    outcome = node_outcome(inputs, params, "exact-nodes", result.scores, description, (result.passes, 0))
    outcome.run_block["batch_size"] = batch_size
    return outcome


def review_node_scores(outcome: MethodOutcome, inputs: MethodInput, metric: Mapping[str, Any]) -> None:
    """Warn when every node (or neuron) score is negligible next to the metric's range
    (``warn_if_negligible``; EAP under KL has warned already, ``warn_if_kl``)."""
    name = outcome.description["name"]
    if name in ("eap-nodes", "eap-neurons") and inputs.metric_name == "kl":
        return
    block = outcome.description.get("node_scores") or outcome.description["neuron_scores"]
    scores = torch.tensor(list(block.values()), dtype=torch.float64)
    warn_if_negligible(name, inputs.metric_name, scores, metric["full"], metric["empty"])


def _spec(
    name: str, params: type, config: type, run, review=review_node_scores, memory: MemoryProfile = MemoryProfile.GRADIENTS_HELD
) -> MethodSpec:
    return MethodSpec(
        name=name, params=params, config=config, run=run, selection=score_selection, circuits=CircuitSelection.SCORES,
        review=review, memory=memory,
    )


SPECS = (
    _spec("eap-nodes", NodeGradientParams, EapNodesConfig, _eap_nodes),
    _spec("eap-ig-nodes", EapIgNodesParams, EapIgNodesConfig, _eap_ig_nodes),
    _spec("eap-ig-activations-nodes", IgActivationsNodesParams, IgActivationsNodesConfig, _ig_activations_nodes),
    _spec("exact-nodes", ExactNodesParams, ExactNodesConfig, _exact_nodes, review=None, memory=MemoryProfile.PATCHED_PASS),
)
