"""Neuron-level attribution: EAP, EAP-IG-inputs and EAP-IG-activations scores of every output
dimension of every node, as EAP-IG's ``attribute_node(..., neuron=True)`` computes them (MIB's
neuron track: ``run_attribution.py --level neuron``, which reads ``neurons_scores``).

A neuron is one of the d_model output dimensions of a node (a sender: the input, a head's result,
an MLP's output). Its score is the node score's summand before the sum over d_model
(``acdc_engine.methods.node_attribution``, where the runs, the MLP's gradient and the sign are
documented): neuron(u, d) = sum over prompts, positions of (out*_u - out_u)[d] * G_u[d].
EAP-IG has no exact neuron scores (its ``get_scores_exact`` ignores ``neuron``), so there is no
``exact-neurons``.

**Circuit**: this engine's masks have no neuron level (docs/design.md, "The graph": a new level is
a new field of ``CircuitMask``), so a neuron circuit cannot be measured here. The method's circuit
is the nodes that hold one of the top_n neurons by |score| (or a neuron with |score| >=
``score_threshold``), **whole**, and the edges between them: the nodes EAP-IG's
``apply_topn(level="neuron")`` keeps, without patching their other neurons as MIB's neuron-track
evaluation does. The neuron scores go to the circuit file's method block (``neuron_scores``:
{node: [d_model scores]}) and to the EAP-IG / MIB export (``neurons_scores``), where MIB's
evaluator selects and patches neurons itself. On the edges (``Scores``) each node carries its
neuron of largest |score| (signed), so ranking edges by |score| adds the nodes in the order the
top-n neuron rule does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.methods.attribution import ig_activations_gradients, ig_activations_passes
from acdc_engine.methods.eap import POINTS, SCALING, SIGN, check_interpolation_parameter, check_selection, check_steps, eap_ig_gradients, ig_alphas, score_selection
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.methods.node_attribution import (
    MLP_GRADIENT_TEXT, check_mlp_gradient, eap_node_gradients, neuron_scores_from_gradients, review_node_scores, warn_if_kl,
)
from acdc_engine.methods.node_circuits import node_circuit, node_edge_scores, node_score_block


def select_neurons(node_neurons: Tensor, top_n: int | None = None, threshold: float | None = None) -> Tensor:
    """The neurons (float64 [n_senders, d_model] scores) with the top_n largest |score| (all when
    top_n exceeds them; ties: the earlier node, then the earlier dimension), or with |score| >=
    threshold: bool [n_senders, d_model]. AcdcError on a non-finite score."""
    top_n, threshold = check_neuron_selection(top_n, threshold)
    if not bool(torch.isfinite(node_neurons).all()):
        raise AcdcError("a neuron score is not finite")
    magnitude = node_neurons.abs().flatten()
    kept = torch.zeros_like(magnitude, dtype=torch.bool)
    if top_n is not None:
        kept[torch.sort(magnitude, descending=True, stable=True).indices[:top_n]] = True
    else:
        kept = magnitude >= threshold
    return kept.reshape(node_neurons.shape)


def check_neuron_selection(top_n: int | None, threshold: float | None) -> tuple[int | None, float | None]:
    """Validate (top_n, threshold) as ``eap.check_selection`` does, top_n a count of neurons >= 0."""
    top_n, threshold = check_selection(None, top_n, threshold)
    if top_n is not None and (isinstance(top_n, bool) or top_n < 0):
        raise AcdcError(f"top_n must be a number of neurons >= 0, got {top_n!r}")
    return top_n, threshold


def largest_neuron(node_neurons: Tensor) -> Tensor:
    """Each node's neuron of largest |score|, signed: float64 [n_senders] (ties: the earlier dimension)."""
    return node_neurons.gather(1, node_neurons.abs().argmax(1, keepdim=True)).squeeze(1)


def neuron_score_block(graph: Graph, node_neurons: Tensor) -> dict[str, list[float]]:
    """{node: [its d_model neuron scores]} in forward order, for the circuit file's method block."""
    node_score_block(graph, node_neurons.sum(1))  # every node's neurons finite
    return dict(zip(graph.senders, node_neurons.double().tolist()))


# ----- the methods, for discover ------------------------------------------------------------------


@dataclass
class NeuronParams:
    """A neuron method's parameters: exactly one of top_n (keep the nodes holding one of the top_n
    neurons by |score|) and score_threshold (the nodes holding a neuron with |score| >= it), and
    ``mlp_gradient`` ("input": an MLP's gradient at its input, EAP-IG's hook; "output")."""

    top_n: Optional[int] = None
    score_threshold: Optional[float] = None
    mlp_gradient: str = "input"

    def __post_init__(self) -> None:
        check_neuron_selection(self.top_n, self.score_threshold)
        check_mlp_gradient(self.mlp_gradient)


@dataclass
class EapIgNeuronsParams(NeuronParams):
    """eap-ig-neurons' parameters: the neuron method's, ``steps`` and ``interpolation`` (as
    eap-ig-nodes': default "right-riemann", attribute_node's k = 1 .. steps)."""

    steps: int = 5
    interpolation: str = "right-riemann"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)
        check_interpolation_parameter(self.interpolation)


@dataclass
class IgActivationsNeuronsParams(NeuronParams):
    """eap-ig-activations-neurons' parameters: the neuron method's and ``steps`` per sender group."""

    steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)


@dataclass
class EapNeuronsConfig(NeuronParams):
    """``conf/method/eap-neurons.yaml``."""

    top_n: Optional[int] = 100
    name: str = "eap-neurons"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class EapIgNeuronsConfig(EapIgNeuronsParams):
    """``conf/method/eap-ig-neurons.yaml``."""

    top_n: Optional[int] = 100
    name: str = "eap-ig-neurons"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class IgActivationsNeuronsConfig(IgActivationsNeuronsParams):
    """``conf/method/eap-ig-activations-neurons.yaml``."""

    top_n: Optional[int] = 100
    name: str = "eap-ig-activations-neurons"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


def _outcome(inputs: MethodInput, params: NeuronParams, name: str, gradients: Tensor, passes: int, runs: dict[str, Any]) -> MethodOutcome:
    graph = inputs.graph
    neurons = neuron_scores_from_gradients(inputs.patcher, gradients, params.mlp_gradient)
    kept = select_neurons(neurons, params.top_n, params.score_threshold).any(1)
    description = {
        "name": name, "ablation": inputs.ablation, "level": "neuron", "top_n": params.top_n, "score_threshold": params.score_threshold,
        **runs,
        "gradient": f"the input's and heads' at their output; an MLP's {MLP_GRADIENT_TEXT[params.mlp_gradient]}",
        "mlp_gradient": params.mlp_gradient, "sign": SIGN, "scaling": SCALING,
        "circuit": "the nodes holding a selected neuron, whole (this engine's masks have no neuron level)",
        "neuron_scores": neuron_score_block(graph, neurons),
    }
    return MethodOutcome(
        kept=node_circuit(graph, kept), scores=node_edge_scores(graph, largest_neuron(neurons)), description=description,
        threshold=params.score_threshold, forward_passes=passes, backward_passes=passes,
    )


def _eap_neurons(inputs: MethodInput, params: NeuronParams) -> MethodOutcome:
    warn_if_kl(inputs.metric_name)
    return _outcome(inputs, params, "eap-neurons", eap_node_gradients(inputs.patcher, inputs.metric), 1, {"runs": "the clean model"})


def _eap_ig_neurons(inputs: MethodInput, params: EapIgNeuronsParams) -> MethodOutcome:
    gradients = eap_ig_gradients(inputs.patcher, inputs.metric, params.steps, params.interpolation, inputs.progress)
    runs = {"steps": params.steps, "interpolation": params.interpolation, "points": POINTS[params.interpolation]}
    return _outcome(inputs, params, "eap-ig-neurons", gradients, len(ig_alphas(params.steps, params.interpolation)), runs)


def _ig_activations_neurons(inputs: MethodInput, params: IgActivationsNeuronsParams) -> MethodOutcome:
    gradients = ig_activations_gradients(inputs.patcher, inputs.metric, params.steps, inputs.progress)
    runs = {"steps": params.steps, "points": "alpha = k / steps, k = 1 .. steps (EAP-IG's)"}
    return _outcome(inputs, params, "eap-ig-activations-neurons", gradients, ig_activations_passes(inputs.graph, params.steps), runs)


SPECS = tuple(
    MethodSpec(
        name=name, params=params, config=config, run=run, selection=score_selection, circuits=CircuitSelection.SCORES,
        review=review_node_scores, memory=MemoryProfile.GRADIENTS_HELD,
    )
    for name, params, config, run in (
        ("eap-neurons", NeuronParams, EapNeuronsConfig, _eap_neurons),
        ("eap-ig-neurons", EapIgNeuronsParams, EapIgNeuronsConfig, _eap_ig_neurons),
        ("eap-ig-activations-neurons", IgActivationsNeuronsParams, IgActivationsNeuronsConfig, _ig_activations_neurons),
    )
)
