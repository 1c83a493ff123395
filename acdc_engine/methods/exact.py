"""Exact per-edge scores (method ``exact``): every edge patched alone, measured.

EAP-IG's ``exact`` (hannamw/EAP-IG, ``eap/attribute.py::get_scores_exact``): for each edge, the
full model with exactly that edge removed is evaluated, and

    score(u->v) = metric(full model without u->v) - metric(full model)

(its ``intervened_performance - baseline``; the metric the prompt mean, as ``evaluate`` gives it:
EAP-IG takes the mean of its per-prompt metric). Positive = removing the edge raises the metric,
the sign of EAP's scores, which estimate these to first order. A removed edge carries the
ablated value of its sender (resample: the corrupted run; zero; mean), as in every patched pass
(docs/design.md, "Patching semantics"). Each head input is also scored alone (EAP-IG's graph has
none; its removal replaces the head's q, k or v by the ablated one); the circuit keeps every head
input, as the other score methods do.

The circuits are evaluated in batches through the patcher (``MethodInput.evaluate``): C circuits
per pass, each the full mask less one candidate, grouped by the layer their receiver reads in, and
each batch resumed at that layer (``start_layer``: every receiver below it is intact, so the pass
takes everything before it from the clean run). A circuit's metric is the same bits alone and in
any batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.patcher import Evaluate
from acdc_engine.core.progress import progress_bar
from acdc_engine.methods.eap import EapParams, score_outcome, score_selection, selection_block
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec


def resume_layer(graph: Graph, read_point: int) -> int:
    """The last layer a pass may resume at when only receivers reading at ``read_point`` (or later)
    are patched: the last layer whose q/k/v receivers do not read after it."""
    shape = graph.shape
    return max([0] + [layer for layer in range(shape.n_layers) if shape.attention_reads(layer) <= read_point])


@dataclass
class ExactResult:
    """scores: metric(full less the candidate) - metric(full) for every edge (0 where no edge
    exists) and every head input; full: metric(full); passes: the patched passes run."""

    scores: Scores
    full: float
    passes: int


def exact_scores(graph: Graph, evaluate: Evaluate, batch_size: int, progress: bool = False) -> ExactResult:
    """Every edge and every head input removed alone from the full circuit, measured (module
    docstring). ``batch_size`` circuits per patched pass."""
    if batch_size < 1:
        raise AcdcError(f"batch_size must be at least 1, got {batch_size}")
    shape = graph.shape
    full_mask = graph.full_mask()
    last = shape.n_layers - 1
    full = float(evaluate(CircuitMask.stack([full_mask]), last)[0])
    # candidates: ("edge", sender, receiver) or ("head", layer, head, q/k/v), by the layer to resume at
    by_layer: dict[int, list[tuple]] = {}
    for sender, receiver in graph.edge_exists.nonzero().tolist():
        by_layer.setdefault(resume_layer(graph, graph.receiver_layer[receiver]), []).append(("edge", sender, receiver))
    for layer, head, x in torch.ones(tuple(full_mask.head_inputs.shape), dtype=torch.bool).nonzero().tolist():
        by_layer.setdefault(layer, []).append(("head", layer, head, x))
    edge_scores = torch.zeros(graph.edge_exists.shape, dtype=torch.float64)
    head_scores = torch.zeros(tuple(full_mask.head_inputs.shape), dtype=torch.float64)
    batches = [
        (layer, candidates[i : i + batch_size])
        for layer, candidates in sorted(by_layer.items())
        for i in range(0, len(candidates), batch_size)
    ]
    for layer, batch in progress_bar(batches, progress=progress, desc="exact scores", unit="pass"):
        edges = full_mask.edges[None].repeat(len(batch), 1, 1)
        heads = full_mask.head_inputs[None].repeat(len(batch), 1, 1, 1)
        for c, candidate in enumerate(batch):
            if candidate[0] == "edge":
                edges[c, candidate[1], candidate[2]] = False
            else:
                heads[(c, *candidate[1:])] = False
        values = evaluate(CircuitMask(edges, heads), layer).double().cpu() - full
        for value, candidate in zip(values.tolist(), batch):
            if candidate[0] == "edge":
                edge_scores[candidate[1], candidate[2]] = value
            else:
                head_scores[candidate[1:]] = value
    return ExactResult(Scores(edge_scores, head_scores), full, len(batches) + 1)


# ----- the method, for discover -----------------------------------------------------------------------


def check_optional_batch_size(batch_size: int | None) -> None:
    """AcdcError unless ``batch_size`` (circuits per patched pass) is None or a positive integer."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise AcdcError(f"batch_size must be a positive integer, got {batch_size!r}")


@dataclass
class ExactParams(EapParams):
    """exact's parameters: the selection (``top_n`` or ``score_threshold``, by |score|) and
    ``batch_size``, circuits per patched pass (None: chosen from free memory, at most 32)."""

    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_optional_batch_size(self.batch_size)


@dataclass
class ExactConfig(ExactParams):
    """``conf/method/exact.yaml``."""

    top_n: Optional[int] = 20
    name: str = "exact"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


def _run(inputs: MethodInput, params: ExactParams) -> MethodOutcome:
    batch_size = params.batch_size if params.batch_size is not None else inputs.patcher.auto_batch_size()
    result = exact_scores(inputs.graph, inputs.evaluate, batch_size, inputs.progress)
    description = selection_block(inputs, "exact", params)
    description.update(
        score="metric(full model without the edge) - metric(full model), each edge (and head input) removed alone",
        sign="positive = removing the edge raises the metric (EAP-IG's sign)",
        scaling="the metric's own (the prompt mean)",
    )
    outcome = score_outcome(inputs, params, result.scores, description, result.passes, 0)
    outcome.run_block["batch_size"] = batch_size
    return outcome


SPEC = MethodSpec(
    name="exact", params=ExactParams, config=ExactConfig, run=_run, selection=score_selection,
    circuits=CircuitSelection.SCORES,
)
