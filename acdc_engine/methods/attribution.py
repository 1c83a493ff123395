"""Gradient attribution methods beside EAP and EAP-IG-inputs: EAP-IG-activations and clean-corrupted.

Both are EAP-IG's (hannamw/EAP-IG, ``eap/attribute.py``) and score an edge u -> v as EAP does
(``acdc_engine.methods.eap``, its module docstring has the sign and the scaling):

    score(u->v) = sum over prompts, positions, d_model of (out*_u - out_u) . mean_runs g_v(run)

out*_u - out_u is always the clean run's difference; the methods differ only in the runs whose
receiver gradients g_v are averaged.

``eap-ig-activations`` (EAP-IG's ``get_scores_ig_activations``). The senders fall into groups by
where they write: the input senders, layer L's heads, layer L's MLP (EAP-IG's node list: ``input``,
``a{L}.h0`` standing for the whole ``attn.hook_result``, ``m{L}``). For each group and each
k = 1 .. steps (alpha = k / steps, EAP-IG's ``range(1, steps + 1)``: the right Riemann sum, ending at
the clean model) one run of the clean prompts has that group's outputs replaced by

    out*_u + alpha * (out_u - out*_u)

held fixed: EAP-IG overwrites the node's output in a forward hook with a tensor built from detached
activations, so no gradient flows through the group (its own receivers get gradient 0, and the
receivers before it only the gradient that bypasses it). EAP-IG's backward hooks add every run's
gradient at every receiver to every edge, and divide by the number of runs; so here every edge's
g_v is the mean over all groups x steps runs, not only over the runs of its own sender's group.
Runs: steps x (1 + n_layers x (2 with MLPs, 1 without)), one forward and one backward pass each.
Ablation: out*_u is the ablated output (resample: the corrupted run; zero; mean). EAP-IG
interpolates from its ``activations_corrupted``, which under its mean ablation stays 0 while its
difference uses the mean; here both use the mean, so the two agree under resample and zero
ablation.

``clean-corrupted`` (EAP-IG's ``get_scores_clean_corrupted``): two runs, the clean model and the
corrupted one (the model on the corrupted prompts, not patched), g_v their mean (EAP-IG divides by
``total_steps = 2``). The corrupted run is taken as the run whose input senders output their
ablated values: under resample ablation exactly the model on the corrupted prompts. EAP-IG allows
only resample ablation ('patching') here; zero and mean ablation take the run from the zero or mean
input embeddings (the start of EAP-IG-inputs' path).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import Scores
from acdc_engine.measure.metrics import Metric
from acdc_engine.methods.eap import (
    SCALING,
    SIGN,
    EapParams,
    mean_edge_scores,
    mean_receiver_gradients,
    check_steps,
    review_scores,
    score_outcome,
    score_selection,
    selection_block,
    unscored_head_inputs,
)
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec


def sender_groups(graph: Graph) -> list[list[int]]:
    """Sender indices grouped by where they write, in forward order: the input senders, each layer's
    heads, each layer's MLP (the nodes EAP-IG-activations interpolates together)."""
    order = range(len(graph.senders))
    return [list(group) for _, group in itertools.groupby(order, key=lambda s: graph.sender_layer[s])]


def activation_alphas(steps: int) -> list[float]:
    """EAP-IG-activations' points: k / steps for k = 1 .. steps."""
    steps = check_steps(steps)
    return [k / steps for k in range(1, steps + 1)]


def ig_activations_scores(patcher, metric: Metric, steps: int = 5, progress: bool = False) -> Tensor:
    """EAP-IG-activations' edge scores (module docstring): [n_senders, n_receivers] float64, 0 where
    no edge exists. One gradient pass per group and step, counted by a progress bar when
    ``acdc_engine.core.progress``."""
    runs = [{"fixed": fixed} for fixed in activation_runs(patcher, steps)]
    return mean_edge_scores(patcher, metric, runs, progress, "EAP-IG-activations runs")


def activation_runs(patcher, steps: int) -> list[dict[int, Tensor]]:
    """EAP-IG-activations' runs, one per sender group and point (``activation_alphas``): the
    group's senders fixed at ``torch.lerp(ablated, clean, alpha)``, {sender index: [n_prompts, pos,
    d_model]} each."""
    clean, ablated = patcher.clean_sender_out, patcher.ablated_sender_out
    return [
        {s: torch.lerp(ablated[:, :, s], clean[:, :, s], alpha) for s in group}
        for group in sender_groups(patcher.graph) for alpha in activation_alphas(steps)
    ]


def ig_activations_gradients(patcher, metric: Metric, steps: int = 5, progress: bool = False) -> Tensor:
    """EAP-IG-activations' g_v (``ig_activations_scores``): every receiver's gradient averaged over
    all groups x steps runs, [n_prompts, pos, n_receivers, d_model] in ``score_dtype`` (for the
    node and neuron methods)."""
    runs = [{"fixed": fixed} for fixed in activation_runs(patcher, steps)]
    return mean_receiver_gradients(patcher, metric, runs, progress, "EAP-IG-activations runs")


def ig_activations_passes(graph: Graph, steps: int) -> int:
    """Gradient passes of EAP-IG-activations: one per sender group and step."""
    return len(sender_groups(graph)) * check_steps(steps)


def clean_corrupted_scores(patcher, metric: Metric) -> Tensor:
    """clean-corrupted's edge scores (module docstring): g_v averaged over the clean run and the run
    from the ablated input embeddings. [n_senders, n_receivers] float64, 0 where no edge exists."""
    n_in = len(patcher.graph.input_senders)
    runs = [{}, {"input_embeddings": patcher.ablated_sender_out[:, :, :n_in]}]
    return mean_edge_scores(patcher, metric, runs)


# ----- the methods, for discover ----------------------------------------------------------------------


@dataclass
class IgActivationsParams(EapParams):
    """EAP-IG-activations' parameters: the selection (``top_n`` or ``score_threshold``) and
    ``steps``, the points per sender group (one gradient pass each)."""

    steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)


@dataclass
class IgActivationsConfig(IgActivationsParams):
    """``conf/method/eap-ig-activations.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-ig-activations"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


@dataclass
class CleanCorruptedConfig(EapParams):
    """``conf/method/clean-corrupted.yaml``."""

    top_n: Optional[int] = 20
    name: str = "clean-corrupted"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


def _ig_activations(inputs: MethodInput, params: IgActivationsParams) -> MethodOutcome:
    edges = ig_activations_scores(inputs.patcher, inputs.metric, params.steps, inputs.progress)
    description = selection_block(inputs, "eap-ig-activations", params)
    description.update(
        steps=params.steps,
        points="alpha = k / steps, k = 1 .. steps (EAP-IG's)",
        interpolated=(
            "one sender group at a time (the input senders, a layer's heads, a layer's MLP), its outputs "
            "from their ablated values to the clean ones, held fixed (no gradient through them)"
        ),
        gradient="every edge averages its receiver's gradient over all groups x steps runs (as EAP-IG's code)",
        sign=SIGN, scaling=SCALING,
    )
    passes = ig_activations_passes(inputs.graph, params.steps)
    return score_outcome(inputs, params, Scores(edges, unscored_head_inputs(inputs.graph)), description, passes, passes)


def _clean_corrupted(inputs: MethodInput, params: EapParams) -> MethodOutcome:
    edges = clean_corrupted_scores(inputs.patcher, inputs.metric)
    description = selection_block(inputs, "clean-corrupted", params)
    description.update(
        gradient=(
            "mean of the gradients at the clean run and at the run from the ablated input embeddings "
            "(resample ablation: the corrupted run)"
        ),
        sign=SIGN, scaling=SCALING,
    )
    return score_outcome(inputs, params, Scores(edges, unscored_head_inputs(inputs.graph)), description, 2, 2)


SPECS = (
    MethodSpec(
        name="eap-ig-activations", params=IgActivationsParams, config=IgActivationsConfig, run=_ig_activations,
        selection=score_selection, circuits=CircuitSelection.SCORES, review=review_scores,
        memory=MemoryProfile.GRADIENT_SCORES,
    ),
    MethodSpec(
        name="clean-corrupted", params=EapParams, config=CleanCorruptedConfig, run=_clean_corrupted,
        selection=score_selection, circuits=CircuitSelection.SCORES, review=review_scores,
        memory=MemoryProfile.GRADIENT_SCORES,
    ),
)
