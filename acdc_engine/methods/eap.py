"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

Both score every edge u -> v at once with a first-order estimate of how much the metric changes
when that edge alone is patched (the patching rule of docs/design.md: in_v loses out_u - out*_u):

    score(u->v) = sum over prompts, positions, d_model of (out*_u - out_u) * g_v

out_u is sender u's clean output (``patcher.clean_sender_out``), out*_u its ablated one (``patcher.ablated_sender_out``:
the corrupted run, 0, or the corrupted mean), and g_v the gradient of the metric with respect to
receiver v's input (``EdgePatcher.receiver_gradients``: the total derivative, through every later
receiver). The metric is already a mean over prompts, so the plain sum is the estimate of the mean
effect. Same sign convention as ACDC's scores (``m - cur``): positive = patching the edge makes the
metric worse (higher). Entries of the score matrix where no edge exists are 0.

EAP takes g_v at the clean model. EAP-IG ("EAP-IG-inputs" in Hanna et al. 2024, MIB and the
EAP-IG reference code) averages g_v over ``steps`` points on the straight line between the
baseline and the clean input embeddings,

    emb(alpha) = baseline + alpha * (clean - baseline)

at the points the ``interpolation`` option names (``ig_alphas``):

    eap-ig         alpha = k / steps, k = 0 .. steps - 1: EAP-IG's own points
                   (hannamw/EAP-IG, ``eap/attribute.py::get_scores_eap_ig``: ``range(0, steps)``,
                   the left Riemann sum, starting at the corrupted input and never reaching the clean
                   one); the method's default
    right-riemann  alpha = k / steps, k = 1 .. steps: the right Riemann sum, ending at the clean
                   model; this engine's convention before it followed EAP-IG
    midpoint       alpha = (k - 1/2) / steps: error falling as 1/steps^2 instead of 1/steps

The library functions (``ig_alphas``, ``eap_ig_scores``, ``run_eap``) default to right-riemann
(``rule="right"``), which they always took; the registered method ``eap-ig`` defaults to EAP-IG's
points and records its choice in the circuit file's method block. Only the
input senders' outputs are interpolated; every other sender keeps its actual clean - ablated
difference in the score. The baseline is the ablated embedding output, ``patcher.ablated_sender_out`` at the
input senders: the corrupted prompts' embeddings under resample ablation, zero under zero ablation,
the per-position mean of the corrupted embeddings under mean ablation (EAP-IG allows only its
'patching', i.e. resample, here). That is the value a patched
``input`` edge carries, so the path integral runs between exactly the two states the scores
compare. With steps = 1 right-riemann EAP-IG is EAP; eap-ig's one point is the corrupted input. Under zero ablation the path starts at a zero embedding,
where LayerNorm's 1 / sqrt(var + eps) makes the gradient spike in a sliver alpha ~ sqrt(eps) / |emb|:
a few steps miss it (on a small test model the input edges' sum was 47% off at 32 midpoint steps
and 1% off at 256), so zero-ablation EAP-IG needs many more steps than resample or mean ablation.

Scaling and sign, against EAP-IG's code: both score (ablated - clean) . gradient, so positive =
patching the edge raises the metric (``eap/utils.py::make_hooks_and_matrices``: the difference is
corrupted minus clean). EAP-IG averages over its points as here, but then also divides by the
number of prompts although its metric (MIB: ``mean=True``) is already a mean, so its scores are
ours divided by the number of prompts (by batch size times prompts over several batches). Here
the scores are on the metric's own scale: to first order, what ``exact`` measures.

Completeness (the integrated-gradients identity): every receiver reads the embedding directly, so
d metric / d emb = sum_v g_v, and the EAP-IG scores of the input senders' edges sum to
metric(baseline embeddings) - metric(clean) as steps grows. The sum over *all* edges does not
(tests/test_eap.py checks both): in a model linear in the residual stream it would count each
input-to-logits path once per receiver on it, where the input edges count it once, by its first
edge; on a small random model it converged to 0.610 where the metric difference is 0.228.

KL divergence and EAP: KL(clean || circuit) has its minimum, 0, at the clean model, so its gradient
there is exactly 0 and EAP scores under ``kl`` are rounding noise. ``run_eap`` warns
(``ZeroGradientWarning``) when EAP is asked for with ``kl``, and whenever every score is negligible
next to the metric's range (full model vs empty circuit). EAP-IG's gradients are taken away from
the clean model (alpha < 1), so it does not have this problem; use it, or a metric such as
``logit_diff``, with EAP.

Circuits: ``select_edges`` keeps the top-n edges by |score| (ties: earlier edge in
``Graph.edges()`` order first) or the edges with |score| >= a threshold; the method keeps every
head input, and ``discover`` prunes to the edges on input-to-logits paths, as for every method.
``greedy_edges`` grows a circuit from the logits instead (MIB's rule for information flow routes,
``acdc_engine.methods.information_flow_routes``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.progress import progress_bar
from acdc_engine.core.graph import Graph
from acdc_engine.patching.memory import MemoryProfile
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.measure.metrics import Metric, at_least_float32
from acdc_engine.core.nodes import LOGITS, component_of, edge_name

VARIANTS = ("eap", "eap-ig")  # what run_eap computes
INTERPOLATIONS = ("eap-ig", "right-riemann", "midpoint")  # the method's ``interpolation`` choices
RULES = (*INTERPOLATIONS, "right")  # "right": the library's old name of right-riemann
NEGLIGIBLE = 1e-6  # scores all below this times |metric(empty) - metric(full)| count as zero


class ZeroGradientWarning(UserWarning):
    """Every EAP score is (close to) zero: the metric's gradient vanishes at the clean model."""


# ----- scores -----------------------------------------------------------------------------------


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums over prompts, positions and d_model in at least float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def metric_in_float32(metric: Metric) -> Metric:
    """``metric`` applied to the logits in at least float32."""
    def wrapped(logits: Tensor) -> Tensor:
        return metric(at_least_float32(logits))

    return wrapped


def edge_scores(patcher, metric: Metric, **gradient_run: Any) -> Tensor:
    """sum_{n,p,d} (out*_u - out_u) g_v for every (u, v) of one gradient pass
    (``EdgePatcher.edge_scores``; ``gradient_run``: its ``input_embeddings`` / ``fixed``), the
    metric in at least float32: [S, R] in ``score_dtype`` on the patcher's device, 0 where no edge
    exists."""
    scores, _ = patcher.edge_scores(metric_in_float32(metric), **gradient_run)
    return scores


def mean_edge_scores(patcher, metric: Metric, runs: list[dict[str, Any]], progress: bool = False, desc: str = "") -> Tensor:
    """The mean of ``edge_scores`` over gradient passes ``runs`` (each one's ``input_embeddings`` /
    ``fixed``), counted by a progress bar: float64 [S, R] on the CPU. Scores are linear in g_v, so
    this is the score of the mean gradient."""
    total = None
    for run in progress_bar(runs, progress=progress, desc=desc, unit="run"):
        scores = edge_scores(patcher, metric, **run)
        total = scores if total is None else total.add_(scores)
    return (total / len(runs)).double().cpu()


def eap_scores(patcher, metric: Metric) -> Tensor:
    """EAP: the first-order estimate of each edge's effect, gradients at the clean model.

    Args:
        patcher: an ``EdgePatcher`` (its clean run, ablated run and ``receiver_gradients``).
        metric: circuit logits [1, n_prompts, P, d_vocab] -> [1], lower is better.
    Returns:
        float64 [n_senders, n_receivers]: score(u->v) ~ metric(edge u->v patched) - metric(full);
        0 where no edge exists.
    """
    return edge_scores(patcher, metric).double().cpu()


def check_interpolation_parameter(interpolation: str) -> None:
    """AcdcError unless ``interpolation`` (a method's parameter) names one of ``INTERPOLATIONS``."""
    if interpolation not in INTERPOLATIONS:
        raise AcdcError(f"unknown interpolation '{interpolation}'; choose one of {', '.join(INTERPOLATIONS)}")


def check_steps(steps: int) -> int:
    try:
        value = operator.index(steps)
    except TypeError:
        raise AcdcError(f"steps must be a positive integer, got {steps!r}") from None
    if isinstance(steps, bool) or value < 1:
        raise AcdcError(f"steps must be a positive integer, got {steps!r}")
    return value


def check_interpolation(rule: str) -> str:
    if rule not in RULES:
        raise AcdcError(f"unknown integration rule '{rule}'; choose one of {', '.join(INTERPOLATIONS)}")
    return "right-riemann" if rule == "right" else rule


def ig_alphas(steps: int, rule: str = "right") -> list[float]:
    """The interpolation points (module docstring): ``eap-ig`` k / steps for k = 0 .. steps - 1;
    ``right`` / ``right-riemann`` k / steps for k = 1 .. steps; ``midpoint`` (k - 1/2) / steps."""
    steps = check_steps(steps)
    rule = check_interpolation(rule)
    if rule == "eap-ig":
        return [k / steps for k in range(steps)]
    shift = 0.0 if rule == "right-riemann" else 0.5
    return [(k - shift) / steps for k in range(1, steps + 1)]


def eap_ig_scores(patcher, metric: Metric, steps: int = 5, rule: str = "right", progress: bool = False) -> Tensor:
    """EAP-IG (inputs): EAP with g_v averaged over ``steps`` interpolated input embeddings.

    The input embeddings run from the ablated ones (alpha = 0, see the module docstring) to the
    clean ones (alpha = 1); ``rule`` picks the points (``ig_alphas``: "eap-ig", "right" /
    "right-riemann" or "midpoint"). One forward and one backward pass per step, counted by a
    progress bar (``acdc_engine.core.progress``). Returns the same
    layout as ``eap_scores``.
    """
    runs = [{"input_embeddings": embeddings} for embeddings in interpolated_inputs(patcher, steps, rule)]
    return mean_edge_scores(patcher, metric, runs, progress, "EAP-IG steps")


def interpolated_inputs(patcher, steps: int, rule: str) -> list[Tensor]:
    """The input senders' outputs at EAP-IG's points (``ig_alphas``), [n_prompts, pos, n_input_senders,
    d_model] each: ``torch.lerp`` from the ablated to the clean ones, exact at both ends (alpha = 1
    gives the clean embeddings bit for bit)."""
    n_in = len(patcher.graph.input_senders)
    clean_in = patcher.clean_sender_out[:, :, :n_in]
    baseline_in = patcher.ablated_sender_out[:, :, :n_in]
    return [torch.lerp(baseline_in, clean_in, alpha) for alpha in ig_alphas(steps, rule)]


def eap_ig_gradients(patcher, metric: Metric, steps: int = 5, rule: str = "right", progress: bool = False) -> Tensor:
    """EAP-IG-inputs' g_v (``eap_ig_scores``): every receiver's gradient averaged over the
    interpolated input embeddings, [n_prompts, pos, n_receivers, d_model] in ``score_dtype``
    (for the node and neuron methods, which need the gradients themselves)."""
    runs = [{"input_embeddings": embeddings} for embeddings in interpolated_inputs(patcher, steps, rule)]
    return mean_receiver_gradients(patcher, metric, runs, progress, "EAP-IG steps", "step")


def mean_receiver_gradients(
    patcher, metric: Metric, runs: list[dict[str, Any]], progress: bool = False, desc: str = "", unit: str = "run"
) -> Tensor:
    """The mean of ``EdgePatcher.receiver_gradients`` over gradient passes ``runs`` (each one's
    ``input_embeddings`` / ``fixed``), the metric in at least float32, counted by a progress bar:
    [n_prompts, pos, n_receivers, d_model] in ``score_dtype``."""
    metric = metric_in_float32(metric)
    total = None
    for run in progress_bar(runs, progress=progress, desc=desc, unit=unit):
        gradients, _ = patcher.receiver_gradients(metric, **run)
        gradients = gradients.to(score_dtype(gradients.dtype))
        total = gradients if total is None else total.add_(gradients)
        del gradients
    return total / len(runs)


# ----- circuits from scores ---------------------------------------------------------------------


def check_selection(graph: Graph | None, top_n: int | None, threshold: float | None) -> tuple[int | None, float | None]:
    """Validate (top_n, threshold): exactly one given, top_n an integer in [0, n_edges] (the range
    once there is a graph), threshold finite >= 0."""
    if (top_n is None) == (threshold is None):
        raise AcdcError(
            "give exactly one of top_n and score_threshold "
            "(top_n keeps the n highest-|score| edges, score_threshold those with |score| >= it)"
        )
    if top_n is not None:
        try:
            n = operator.index(top_n)
        except TypeError:
            raise AcdcError(f"top_n must be an integer, got {top_n!r}") from None
        if graph is not None and (isinstance(top_n, bool) or not 0 <= n <= graph.n_edges):
            raise AcdcError(f"top_n must be between 0 and the graph's {graph.n_edges} edges, got {top_n!r}")
        return n, None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise AcdcError(f"score_threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value) or value < 0:
        raise AcdcError(f"score_threshold must be a finite number >= 0, got {threshold!r}")
    return None, value


def edge_magnitudes(graph: Graph, scores: Tensor) -> Tensor:
    """|score| of every edge: float64 [S, R] on the CPU, 0 where no edge exists. AcdcError when
    ``scores`` is not [S, R] or an edge's score is not finite (naming the first such edge in
    ``graph.edges()`` order)."""
    if tuple(scores.shape) != tuple(graph.edge_exists.shape):
        expected = tuple(graph.edge_exists.shape)
        raise AcdcError(f"scores must have shape {expected} (senders x receivers), got {tuple(scores.shape)}")
    receivers, senders = graph.edge_exists.T.nonzero().unbind(1)  # edge order
    magnitude = scores.detach().to("cpu", torch.float64).abs()
    finite = torch.isfinite(magnitude[senders, receivers])
    if not finite.all():
        bad = int((~finite).nonzero()[0])
        raise AcdcError(f"the score of edge '{edge_name(graph.senders[senders[bad]], graph.receivers[receivers[bad]])}' is not finite")
    return torch.where(graph.edge_exists, magnitude, torch.zeros((), dtype=torch.float64))


def select_edges(graph: Graph, scores: Tensor, top_n: int | None = None, threshold: float | None = None) -> Tensor:
    """The edges with the top_n largest |score|, or with |score| >= threshold: bool [S, R].

    Ties in |score| go to the edge that comes first in ``graph.edges()`` (receivers in forward
    order, then senders in forward order), so the selection is a function of the scores alone.
    """
    top_n, threshold = check_selection(graph, top_n, threshold)
    receivers, senders = graph.edge_exists.T.nonzero().unbind(1)  # edge order
    magnitude = edge_magnitudes(graph, scores)[senders, receivers]
    if top_n is not None:
        chosen = torch.sort(magnitude, descending=True, stable=True).indices[:top_n]
    else:
        chosen = (magnitude >= threshold).nonzero().flatten()
    mask = torch.zeros_like(graph.edge_exists)
    mask[senders[chosen], receivers[chosen]] = True
    return mask


def greedy_order(graph: Graph, scores: Tensor) -> Tensor:
    """Every edge of ``graph`` in the order MIB's greedy rule adds them, grown from the logits:
    long [n_edges, 2] of (sender, receiver).

    EAP-IG's ``Graph.apply_greedy`` (hannamw/EAP-IG, ``eap/graph.py``), which MIB's
    ``run_evaluation.py`` uses instead of the top-n rule for information flow routes: the circuit
    starts as the ``logits`` node; the candidates are the edges into the circuit's nodes, best
    |score| first. The best candidate joins the circuit; when its sender's node (a head, an MLP, an
    input sender) is new, that node joins and the edges into it (a head's q, k and v edges, an MLP's
    input edges) become candidates. The circuit of n edges is the first n of this order (it does
    not depend on n). Ranking by |score| is EAP-IG's ``absolute=True``; for scores >= 0 it is also
    its ``absolute=False``.

    Ties in |score| go to the edge that became a candidate first (EAP-IG merges each new node's
    candidates after the older ones with ``heapq.merge``, which keeps earlier streams first), then
    to the earlier edge in ``graph.edges()`` order (EAP-IG sorts the logits' edges stably in sender
    order; a new node's edges come from a Python set, in no fixed order).
    """
    magnitude = edge_magnitudes(graph, scores).tolist()
    into: dict[str, list[int]] = {}
    for r, name in enumerate(graph.receivers):
        into.setdefault(component_of(name), []).append(r)
    candidates: list[tuple[float, int, int, int]] = []
    arrival = itertools.count()

    def add_candidates(node: str) -> None:
        for r in into.get(node, []):
            for s in graph.edge_exists[:, r].nonzero().flatten().tolist():
                heapq.heappush(candidates, (-magnitude[s][r], next(arrival), s, r))

    in_circuit = {LOGITS}
    add_candidates(LOGITS)
    order = []
    while candidates:
        _, _, s, r = heapq.heappop(candidates)
        order.append((s, r))
        if graph.senders[s] not in in_circuit:
            in_circuit.add(graph.senders[s])
            add_candidates(graph.senders[s])
    return torch.tensor(order, dtype=torch.long).reshape(-1, 2)


def greedy_edges(graph: Graph, scores: Tensor, top_n: int) -> Tensor:
    """MIB's greedy circuit of ``top_n`` edges (``greedy_order``'s first top_n): bool [S, R]. The
    edges are not pruned here; ``discover`` prunes them to input-to-logits paths, as EAP-IG's
    ``prune=True`` does."""
    top_n, _ = check_selection(graph, top_n, None)
    first = greedy_order(graph, scores)[:top_n]
    mask = torch.zeros_like(graph.edge_exists)
    mask[first[:, 0], first[:, 1]] = True
    return mask


# ----- the scoring run ------------------------------------------------------------------------------


@dataclass
class EapResult:
    """Scores and the selected edges; ``discover`` prunes them to input-to-logits paths and
    measures the circuit, as for every method.

    kept: the selected edges and every head input; scores: float64 EAP(-IG) edge scores (0 where
    no edge exists; head inputs NaN, not scored); forward_passes / backward_passes: the gradient
    passes this method ran.
    """

    kept: CircuitMask
    scores: Scores
    forward_passes: int
    backward_passes: int


def unscored_head_inputs(graph: Graph) -> Tensor:
    """NaN for every head input [L, H, 3]: the gradient methods score edges only."""
    return torch.full(tuple(graph.full_head_input_mask().shape), math.nan, dtype=torch.float64)


def selected(graph: Graph, scores: Scores, top_n: int | None, score_threshold: float | None) -> CircuitMask:
    """The circuit a score method keeps: the edges ``select_edges`` picks and every head input."""
    return CircuitMask(select_edges(graph, scores.edges, top_n, score_threshold), graph.full_head_input_mask())


def run_eap(
    patcher,
    metric: Metric,
    *,
    method: str = "eap",
    steps: int = 5,
    top_n: int | None = None,
    score_threshold: float | None = None,
    rule: str = "right",
    metric_name: str | None = None,
    progress: bool = False,
) -> EapResult:
    """Score every edge with EAP or EAP-IG and select the circuit's edges.

    Args:
        patcher: an ``EdgePatcher`` on the task's clean and corrupted prompts.
        metric: circuit logits [C, n_prompts, P, d_vocab] -> [C], lower is better.
        method: "eap" or "eap-ig".
        steps, rule: EAP-IG's interpolation points (``ig_alphas``; ignored by "eap").
        top_n, score_threshold: exactly one; see ``select_edges``.
        metric_name: the metric's name, for the KL warning (module docstring).
        progress: EAP-IG's progress bar over its steps (``acdc_engine.core.progress``).
    """
    if method not in VARIANTS:
        raise AcdcError(f"unknown gradient method '{method}'; choose one of {', '.join(VARIANTS)}")
    top_n, score_threshold = check_selection(patcher.graph, top_n, score_threshold)
    if method == "eap-ig":
        ig_alphas(steps, rule)  # validate before any work
    if method == "eap" and metric_name == "kl":
        warnings.warn(
            "EAP with the KL metric: KL(clean || circuit) is minimal at the clean model, so its gradient "
            "there is exactly 0 and every EAP score is rounding noise; use method eap-ig or metric logit_diff",
            ZeroGradientWarning,
            stacklevel=2,
        )
    if method == "eap":
        edge_scores, passes = eap_scores(patcher, metric), 1
    else:
        edge_scores, passes = eap_ig_scores(patcher, metric, steps, rule, progress), len(ig_alphas(steps, rule))
    scores = Scores(edge_scores, unscored_head_inputs(patcher.graph))
    return EapResult(selected(patcher.graph, scores, top_n, score_threshold), scores, passes, passes)


def warn_if_negligible(method: str, metric_name: str, scores: Tensor, metric_full: float, metric_empty: float) -> None:
    """Warn when every score is negligible next to the metric's range (full model vs empty circuit)."""
    if method == "eap" and metric_name == "kl":
        return  # run_eap has already said why
    scale = abs(metric_empty - metric_full)
    largest = float(scores.abs().max()) if scores.numel() else 0.0
    if scale > 0 and largest < NEGLIGIBLE * scale:
        warnings.warn(
            f"every {method} score is negligible (largest |score| {largest:.3g}, metric range "
            f"{scale:.3g}): the metric's gradient vanishes where it was taken, and the circuit is "
            "chosen by rounding noise",
            ZeroGradientWarning,
            stacklevel=2,
        )


# ----- the methods, for discover ----------------------------------------------------------------------


@dataclass
class EapParams:
    """EAP's parameters (``discover(method="eap", ...)``): exactly one of

    top_n: keep the top_n edges by |score| (0 .. the graph's edges), or
    score_threshold: keep the edges with |score| >= it.
    """

    top_n: Optional[int] = None
    score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        check_selection(None, self.top_n, self.score_threshold)


@dataclass
class EapConfig(EapParams):
    """``conf/method/eap.yaml``: logit_diff by default (KL's gradient vanishes at the clean model),
    the top 20 edges by default."""

    top_n: Optional[int] = 20
    name: str = "eap"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


SIGN = "(ablated - clean) . gradient: positive = patching the edge raises the metric (EAP-IG's sign)"
SCALING = (
    "summed over prompts, positions and d_model with the gradient of the prompt-mean metric, averaged "
    "over the gradient points: on the metric's scale (EAP-IG's code further divides by the number of prompts)"
)


@dataclass
class EapIgParams(EapParams):
    """EAP-IG's parameters: EAP's, and

    steps: the interpolation steps (one forward and one backward pass each);
    interpolation: the points (module docstring): "eap-ig" (k / steps, k = 0 .. steps - 1, EAP-IG's
        own), "right-riemann" (k = 1 .. steps, this engine's earlier convention) or "midpoint".
    """

    steps: int = 5
    interpolation: str = "eap-ig"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)
        check_interpolation_parameter(self.interpolation)


@dataclass
class EapIgConfig(EapIgParams):
    """``conf/method/eap-ig.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-ig"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


POINTS = {
    "eap-ig": "alpha = k / steps, k = 0 .. steps - 1 (EAP-IG's points)",
    "right-riemann": "alpha = k / steps, k = 1 .. steps",
    "midpoint": "alpha = (k - 1/2) / steps, k = 1 .. steps",
}


def selection_block(inputs: MethodInput, name: str, params: EapParams) -> dict[str, Any]:
    """The start of a score method's circuit-file method block: name, ablation, the selection."""
    return {"name": name, "ablation": inputs.ablation, "top_n": params.top_n, "score_threshold": params.score_threshold}


def score_outcome(
    inputs: MethodInput, params: EapParams, scores: Scores, description: dict[str, Any], forward_passes: int, backward_passes: int
) -> MethodOutcome:
    """A score method's outcome: the edges ``params`` select by |score|, every head input."""
    return MethodOutcome(
        kept=selected(inputs.graph, scores, params.top_n, params.score_threshold),
        scores=scores,
        description=description,
        threshold=params.score_threshold,
        forward_passes=forward_passes,
        backward_passes=backward_passes,
    )


def _outcome(inputs: MethodInput, method: str, params: EapParams) -> MethodOutcome:
    steps, rule = (params.steps, params.interpolation) if method == "eap-ig" else (1, "right")
    scored = run_eap(
        inputs.patcher, inputs.metric, method=method, steps=steps, rule=rule, top_n=params.top_n,
        score_threshold=params.score_threshold, metric_name=inputs.metric_name, progress=inputs.progress,
    )
    description = selection_block(inputs, method, params)
    if method == "eap-ig":
        description.update(
            steps=steps, interpolation=rule, points=POINTS[rule],
            interpolated="the input senders' outputs, from their ablated values to the clean ones",
        )
    else:
        description.update(gradient="at the clean model")
    description.update(sign=SIGN, scaling=SCALING)
    return score_outcome(inputs, params, scored.scores, description, scored.forward_passes, scored.backward_passes)


def score_selection(params: EapParams) -> str:
    return f"top_n {params.top_n}" if params.top_n is not None else f"score_threshold {params.score_threshold}"


def review_scores(outcome: MethodOutcome, inputs: MethodInput, metric: Mapping[str, Any]) -> None:
    """Warn when every score is negligible next to the metric's range (``warn_if_negligible``)."""
    warn_if_negligible(outcome.description["name"], inputs.metric_name, outcome.scores.edges, metric["full"], metric["empty"])


SPECS = (
    MethodSpec(
        name="eap", params=EapParams, config=EapConfig, run=lambda inputs, params: _outcome(inputs, "eap", params),
        selection=score_selection, circuits=CircuitSelection.SCORES, review=review_scores,
        memory=MemoryProfile.GRADIENT_SCORES,
    ),
    MethodSpec(
        name="eap-ig", params=EapIgParams, config=EapIgConfig,
        run=lambda inputs, params: _outcome(inputs, "eap-ig", params), selection=score_selection,
        circuits=CircuitSelection.SCORES, review=review_scores, memory=MemoryProfile.GRADIENT_SCORES,
    ),
)
