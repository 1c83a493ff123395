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

EAP takes g_v at the clean model. EAP-IG ("EAP-IG-inputs" as in Hanna et al. 2024 and MIB) averages
g_v over ``steps`` points on the straight line between the baseline and the clean input embeddings,

    emb(alpha) = baseline + alpha * (clean - baseline),   alpha = k / steps, k = 1 .. steps

(the right Riemann sum, as in most versions of the EAP-IG reference code, some of which use
k = 0 .. steps - 1 instead; it ends at the clean model). ``rule="midpoint"`` takes
alpha = (k - 1/2) / steps, whose error falls as 1/steps^2 instead of 1/steps. Only the
input senders' outputs are interpolated; every other sender keeps its actual clean - ablated
difference in the score. The baseline is the ablated embedding output, ``patcher.ablated_sender_out`` at the
input senders: the corrupted prompts' embeddings under resample ablation, zero under zero ablation,
the per-position mean of the corrupted embeddings under mean ablation. That is the value a patched
``input`` edge carries, so the path integral runs between exactly the two states the scores
compare. With steps = 1 EAP-IG is EAP. Under zero ablation the path starts at a zero embedding,
where LayerNorm's 1 / sqrt(var + eps) makes the gradient spike in a sliver alpha ~ sqrt(eps) / |emb|:
a few steps miss it (on a small test model the input edges' sum was 47% off at 32 midpoint steps
and 1% off at 256), so zero-ablation EAP-IG needs many more steps than resample or mean ablation.

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
"""

from __future__ import annotations

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
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.measure.metrics import Metric, at_least_float32
from acdc_engine.core.nodes import edge_name

VARIANTS = ("eap", "eap-ig")  # what run_eap computes
RULES = ("right", "midpoint")
NEGLIGIBLE = 1e-6  # scores all below this times |metric(empty) - metric(full)| count as zero
_CHUNK_ELEMENTS = 2**26  # bound on the [tokens, senders, receivers] intermediate of the score einsum


class ZeroGradientWarning(UserWarning):
    """Every EAP score is (close to) zero: the metric's gradient vanishes at the clean model."""


# ----- scores -----------------------------------------------------------------------------------


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums over prompts, positions and d_model in at least float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _at_least_float32(metric: Metric) -> Metric:
    def wrapped(logits: Tensor) -> Tensor:
        return metric(at_least_float32(logits))

    return wrapped


def _scores_from_gradients(patcher, gradients: Tensor) -> Tensor:
    """sum_{n,p,d} (out*_u - out_u) g_v for every (u, v): [S, R] float64, 0 where no edge exists.

    One einsum batched over tokens (a [S, d] x [d, R] product per token), then a sum over tokens:
    6x faster on CPU than contracting n, p, d in one go, which makes torch permute both operands
    into [S, n*p*d] and [n*p*d, R] copies. Tokens go in chunks so the [tokens, S, R] intermediate
    stays under ``_CHUNK_ELEMENTS``.
    """
    dtype = _score_dtype(gradients.dtype)
    diff = (patcher.ablated_sender_out - patcher.clean_sender_out).to(dtype)  # [n, pos, S, d]
    n_senders, n_receivers, d_model = diff.shape[2], gradients.shape[2], diff.shape[3]
    diff, gradients = diff.reshape(-1, n_senders, d_model), gradients.to(dtype).reshape(-1, n_receivers, d_model)
    chunk = max(1, _CHUNK_ELEMENTS // (n_senders * n_receivers))
    scores = sum(
        torch.einsum("tsd,trd->tsr", diff[i : i + chunk], gradients[i : i + chunk]).sum(0)
        for i in range(0, diff.shape[0], chunk)
    )
    edge_exists = patcher.graph.edge_exists.to(scores.device)
    return torch.where(edge_exists, scores, torch.zeros((), dtype=dtype, device=scores.device)).double().cpu()


def eap_scores(patcher, metric: Metric) -> Tensor:
    """EAP: the first-order estimate of each edge's effect, gradients at the clean model.

    Args:
        patcher: an ``EdgePatcher`` (its clean run, ablated run and ``receiver_gradients``).
        metric: circuit logits [1, n_prompts, P, d_vocab] -> [1], lower is better.
    Returns:
        float64 [n_senders, n_receivers]: score(u->v) ~ metric(edge u->v patched) - metric(full);
        0 where no edge exists.
    """
    gradients, _ = patcher.receiver_gradients(_at_least_float32(metric))
    return _scores_from_gradients(patcher, gradients)


def check_steps(steps: int) -> int:
    try:
        value = operator.index(steps)
    except TypeError:
        raise AcdcError(f"steps must be a positive integer, got {steps!r}") from None
    if isinstance(steps, bool) or value < 1:
        raise AcdcError(f"steps must be a positive integer, got {steps!r}")
    return value


def ig_alphas(steps: int, rule: str = "right") -> list[float]:
    """The interpolation points: k / steps (k = 1..steps) or, for ``midpoint``, (k - 1/2) / steps."""
    steps = check_steps(steps)
    if rule not in RULES:
        raise AcdcError(f"unknown integration rule '{rule}'; choose one of {', '.join(RULES)}")
    shift = 0.0 if rule == "right" else 0.5
    return [(k - shift) / steps for k in range(1, steps + 1)]


def eap_ig_scores(patcher, metric: Metric, steps: int = 5, rule: str = "right", progress: bool = False) -> Tensor:
    """EAP-IG (inputs): EAP with g_v averaged over ``steps`` interpolated input embeddings.

    The input embeddings run from the ablated ones (alpha = 0, see the module docstring) to the
    clean ones (alpha = 1); ``rule`` picks the points (``ig_alphas``). One forward and one backward
    pass per step, counted by a progress bar (``acdc_engine.core.progress``). Returns the same
    layout as ``eap_scores``.
    """
    alphas = ig_alphas(steps, rule)
    n_in = len(patcher.graph.input_senders)
    clean_in = patcher.clean_sender_out[:, :, :n_in]
    baseline_in = patcher.ablated_sender_out[:, :, :n_in]
    metric = _at_least_float32(metric)
    total = None
    for alpha in progress_bar(alphas, progress=progress, desc="EAP-IG steps", unit="step"):
        # lerp is exact at both ends: alpha = 1 gives the clean embeddings bit for bit
        embeddings = torch.lerp(baseline_in, clean_in, alpha)
        gradients, _ = patcher.receiver_gradients(metric, input_embeddings=embeddings)
        gradients = gradients.to(_score_dtype(gradients.dtype))
        total = gradients if total is None else total.add_(gradients)
        del gradients
    return _scores_from_gradients(patcher, total / len(alphas))


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


def select_edges(graph: Graph, scores: Tensor, top_n: int | None = None, threshold: float | None = None) -> Tensor:
    """The edges with the top_n largest |score|, or with |score| >= threshold: bool [S, R].

    Ties in |score| go to the edge that comes first in ``graph.edges()`` (receivers in forward
    order, then senders in forward order), so the selection is a function of the scores alone.
    """
    top_n, threshold = check_selection(graph, top_n, threshold)
    if tuple(scores.shape) != tuple(graph.edge_exists.shape):
        expected = tuple(graph.edge_exists.shape)
        raise AcdcError(f"scores must have shape {expected} (senders x receivers), got {tuple(scores.shape)}")
    receivers, senders = graph.edge_exists.T.nonzero().unbind(1)  # edge order
    magnitude = scores.detach().to("cpu", torch.float64)[senders, receivers].abs()
    if not torch.isfinite(magnitude).all():
        bad = int((~torch.isfinite(magnitude)).nonzero()[0])
        raise AcdcError(f"the score of edge '{edge_name(graph.senders[senders[bad]], graph.receivers[receivers[bad]])}' is not finite")
    if top_n is not None:
        chosen = torch.sort(magnitude, descending=True, stable=True).indices[:top_n]
    else:
        chosen = (magnitude >= threshold).nonzero().flatten()
    mask = torch.zeros_like(graph.edge_exists)
    mask[senders[chosen], receivers[chosen]] = True
    return mask


# ----- the scoring run ------------------------------------------------------------------------------


@dataclass
class EapResult:
    """Scores and the selected edges; ``discover`` prunes them to input-to-logits paths and
    measures the circuit, as for every method.

    edge_kept [S, R]: the selected edges; edge_scores: float64 EAP(-IG) scores (0 where no edge
    exists); forward_passes / backward_passes: the gradient passes this method ran.
    """

    edge_kept: Tensor
    edge_scores: Tensor
    forward_passes: int
    backward_passes: int


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
        steps, rule: EAP-IG's interpolation points (ignored by "eap").
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
        scores, passes = eap_scores(patcher, metric), 1
    else:
        scores, passes = eap_ig_scores(patcher, metric, steps, rule, progress), len(ig_alphas(steps, rule))
    return EapResult(select_edges(patcher.graph, scores, top_n, score_threshold), scores, passes, passes)


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


@dataclass
class EapIgParams(EapParams):
    """EAP-IG's parameters: EAP's, and ``steps``, the interpolation steps (one forward and one
    backward pass each)."""

    steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.steps)


@dataclass
class EapIgConfig(EapIgParams):
    """``conf/method/eap-ig.yaml``."""

    top_n: Optional[int] = 20
    name: str = "eap-ig"
    metric: choices.Metric = choices.Metric.logit_diff
    ablation: choices.Ablation = choices.Ablation.resample


def _outcome(inputs: MethodInput, method: str, params: EapParams, steps: int = 1) -> MethodOutcome:
    scored = run_eap(
        inputs.patcher, inputs.metric, method=method, steps=steps, top_n=params.top_n,
        score_threshold=params.score_threshold, metric_name=inputs.metric_name, progress=inputs.progress,
    )
    description = {"name": method, "ablation": inputs.ablation, "top_n": params.top_n, "score_threshold": params.score_threshold}
    if method == "eap-ig":
        description.update(steps=steps, integration="right Riemann, from the ablated input embeddings")
    return MethodOutcome(
        kept=CircuitMask(scored.edge_kept, inputs.graph.full_head_input_mask()),
        scores=Scores(scored.edge_scores, torch.full((inputs.graph.shape.n_layers, inputs.graph.shape.n_heads, 3), math.nan, dtype=torch.float64)),
        description=description,
        threshold=params.score_threshold,
        forward_passes=scored.forward_passes,
        backward_passes=scored.backward_passes,
    )


def _selection(params: EapParams) -> str:
    return f"top_n {params.top_n}" if params.top_n is not None else f"score_threshold {params.score_threshold}"


def _review(outcome: MethodOutcome, inputs: MethodInput, metric: Mapping[str, Any]) -> None:
    warn_if_negligible(outcome.description["name"], inputs.metric_name, outcome.scores.edges, metric["full"], metric["empty"])


SPECS = (
    MethodSpec(
        name="eap", params=EapParams, config=EapConfig, run=lambda inputs, params: _outcome(inputs, "eap", params),
        selection=_selection, circuits=CircuitSelection.SCORES, review=_review,
    ),
    MethodSpec(
        name="eap-ig", params=EapIgParams, config=EapIgConfig,
        run=lambda inputs, params: _outcome(inputs, "eap-ig", params, params.steps), selection=_selection,
        circuits=CircuitSelection.SCORES, review=_review,
    ),
)
