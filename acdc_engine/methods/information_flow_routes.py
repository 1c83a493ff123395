"""Information flow routes (Ferrando and Voita 2024) as EAP-IG computes it, with MIB's greedy circuits.

The definitions are EAP-IG's (hannamw/EAP-IG, ``eap/attribute.py::get_scores_information_flow_routes``,
reached through ``attribute(..., method='information-flow-routes')``) and MIB's
(hannamw/MIB-circuit-track, ``run_evaluation.py``: ``apply_greedy`` for this method).

**Score.** Only the clean prompts run, once, unpatched: no metric, no corrupted prompts, no
gradient. At prompt i and position p, receiver v reads x (its input: the residual stream where it
reads, before any norm; EAP-IG's ``blocks.L.hook_q_input`` / ``hook_k_input`` / ``hook_v_input``,
``hook_mlp_in``, and the last ``hook_resid_post`` for ``logits``), and every sender u with an edge
to v has an output y_u (below). With L1 norms over d_model,

    proximity(u, v) = max(0, ||x||_1 - ||x - y_u||_1)
    importance(u, v) = proximity(u, v) / sum over the senders u' of v of proximity(u', v)
    score(u->v) = 1/n sum_i 1/len_i sum_{p < len_i} importance_{i,p}(u, v)

len_i is prompt i's number of real tokens (``TaskData.lengths``; EAP-IG's ``input_lengths``): every
real position counts, not only the read positions, and the right padding never does. EAP-IG masks
the padding out of the sum over positions, divides by ``input_lengths``, sums over the batch, and
divides the total by the number of prompts after its last batch: the same mean over prompts
whatever the batches. The senders normalised over are exactly those with an edge to v (EAP-IG's
``prev_index``: everything written before v reads; in a parallel block not the MLP's own layer's
heads). Scores lie in [0, 1], and a receiver's scores sum to 1 over its senders; there is no sign
(EAP-IG's ``aggregation='sum'``, MIB's, leaves them as they are). The ablation plays no part in the
scores; it only decides how the chosen circuit is measured.

**Receivers.** Every q, k and v receiver of layer L reads the same residual stream (EAP-IG hooks a
copy per query head, ungrouped under grouped-query attention), so their scores are equal; EAP-IG
computes them 3 x n_heads times, here once per read point. An MLP reads its block's residual
(beside its layer's heads in a parallel block); ``logits`` the final residual, before the final norm.

**Sender outputs** (``sender_outputs``):

    eap-ig     (default) the values EAP-IG hooks: ``input`` is the token embedding alone
               (``hook_embed``; an absolute positional embedding is part of x but of no y_u),
               a head its result z_h W_O[h] before any attention post-norm (``attn.hook_result``),
               an MLP its output (``hook_mlp_out``, post-norm included). With ``split_input``,
               ``tok_embed`` and ``pos_embed`` are the token and the positional embedding.
    residual   what each sender adds to the residual stream (``EdgePatcher.clean_sender_out``):
               ``input`` with its positional embedding, a head its share of a post-normed
               attention output (docs/design.md).

Both agree on models with rotary positions and no attention post-norm (Llama, Qwen, Mistral).

**Differences from EAP-IG, by name.** Where every sender's proximity to a receiver is 0 at a real
position, EAP-IG's importance is 0 / 0 = NaN and the receiver's scores become NaN; here that
position adds 0. EAP-IG's padding positions enter its sums as importance x 0 (NaN there too would
spread); here they are never computed. EAP-IG accumulates in the model's dtype (bfloat16 for MIB's
large models); here in at least float32 (float64 for float64 models).

**Circuits** (``selection``): ``greedy`` (the default, MIB's rule for this method) grows a circuit of
``top_n`` edges from the logits (``methods.eap.greedy_edges``: EAP-IG's ``Graph.apply_greedy``);
``top`` keeps the top_n edges by score, or those with score >= ``score_threshold``
(``methods.eap.select_edges``, as every other score method). Every head input is kept, and
``discover`` prunes the edges to input-to-logits paths (EAP-IG's ``prune=True``), so a greedy
circuit may have fewer than top_n edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.nodes import head_name
from acdc_engine.methods.eap import EapParams, greedy_edges, score_dtype, select_edges, selection_block, unscored_head_inputs
from acdc_engine.methods.method import CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.patching import EdgePatcher

SENDER_OUTPUTS = ("eap-ig", "residual")
SELECTIONS = ("greedy", "top")
_CHUNK_ELEMENTS = 2**26  # bound on the [tokens, senders, d_model] difference x - y_u


# ----- scores -----------------------------------------------------------------------------------


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """AcdcError naming parameter ``name`` and its choices when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise AcdcError(f"unknown {name} '{value}'; choose one of {', '.join(allowed)}")


def real_tokens(lengths: Tensor, n_pos: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(real [n_prompts, pos] bool: the first lengths[i] positions of prompt i; weight [T], one per
    real token in ``real``'s order: 1 / (n_prompts * lengths[i]), so that a weighted sum over the
    real tokens is the mean over each prompt's real tokens, then over prompts)."""
    lengths = lengths.to(device)
    real = torch.arange(n_pos, device=device)[None] < lengths[:, None]
    weight = (1.0 / (len(lengths) * lengths.double()))[:, None].expand(real.shape)[real]
    return real, weight


@torch.no_grad()
def sender_outputs(patcher: EdgePatcher, real: Tensor, kind: str = "eap-ig") -> Tensor:
    """Every sender's output y_u on the clean prompts at the tokens ``real`` selects ([n_prompts,
    pos] bool), as ``kind`` defines it (module docstring: "eap-ig" or "residual"): [T, n_senders,
    d_model], in at least float32."""
    check_choice("sender_outputs", kind, SENDER_OUTPUTS)
    run, graph, spec = patcher.clean_run, patcher.graph, patcher.spec
    dtype = score_dtype(run.sender_out.dtype)
    outputs = run.sender_out[real].to(dtype)  # a copy
    if kind == "residual":
        return outputs
    if not graph.shape.split_input:
        outputs[:, graph.sender_index[graph.input_senders[0]]] = spec.embed(patcher.clean)[real].to(dtype)
    if spec.cfg.post_norms:
        n_heads = graph.shape.n_heads
        every_head = torch.arange(n_heads, device=outputs.device)
        for layer, qkv in enumerate(run.qkv):
            first = graph.sender_index[head_name(layer, 0)]
            outputs[:, first : first + n_heads] = spec.heads(layer, *qkv.unbind(2), every_head)[real].to(dtype)
    return outputs


def weighted_importance(x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
    """sum_t weight[t] * importance[t, u] for one read point: x [T, d_model] the receivers' input
    at T tokens, y [T, S, d_model] the outputs of the S senders before it, weight [T]. Returns [S];
    a token where every proximity is 0 adds 0. Tokens go in chunks so that x - y stays under
    ``_CHUNK_ELEMENTS``."""
    n_tokens, n_senders, d_model = y.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_senders * d_model))
    total = torch.zeros(n_senders, dtype=y.dtype, device=y.device)
    for start in range(0, n_tokens, chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        proximity = (xs.abs().sum(-1, keepdim=True) - (xs[:, None] - ys).abs().sum(-1)).clamp(min=0)
        norm = proximity.sum(-1, keepdim=True)
        importance = torch.where(norm > 0, proximity / torch.where(norm > 0, norm, 1), 0)
        total += weight[start : start + chunk] @ importance
    return total


def flow_scores(graph: Graph, outputs: Tensor, inputs: dict[int, Tensor], weight: Tensor) -> Tensor:
    """Information flow routes' edge scores (module docstring): float64 [n_senders, n_receivers]
    on the CPU, 0 where no edge exists.

    outputs: the senders' outputs y_u at T tokens, [T, n_senders, d_model] (``sender_outputs``);
    inputs: {read point: [T, d_model]}, the residual stream where the receivers read (receivers
    reading at one point share it); weight: [T], each token's weight in the mean (``real_tokens``).
    """
    sender_layer, receiver_layer = torch.tensor(graph.sender_layer), torch.tensor(graph.receiver_layer)
    scores = torch.zeros(graph.edge_exists.shape, dtype=torch.float64)
    for read, x in inputs.items():
        n_before = int((sender_layer < read).sum())  # senders are numbered in forward order
        share = weighted_importance(x.to(outputs.dtype), outputs[:, :n_before], weight.to(outputs.dtype))
        scores[:n_before, receiver_layer == read] = share.double().cpu()[:, None]
    return scores


def information_flow_scores(patcher: EdgePatcher, kind: str = "eap-ig") -> Tensor:
    """Information flow routes' edge scores on the patcher's clean prompts (its clean run, at the
    real tokens its ``lengths`` give), with the senders' outputs ``kind``: float64 [n_senders,
    n_receivers] on the CPU, 0 where no edge exists."""
    run = patcher.clean_run
    real, weight = real_tokens(patcher.lengths, run.sender_out.shape[1], run.sender_out.device)
    inputs = {read: resid[real] for read, resid in run.resid.items()}
    return flow_scores(patcher.graph, sender_outputs(patcher, real, kind), inputs, weight)


# ----- the method, for discover -------------------------------------------------------------------


@dataclass
class InformationFlowRoutesParams(EapParams):
    """The parameters (``discover(method="information-flow-routes", ...)``): exactly one of
    ``top_n`` and ``score_threshold`` (``EapParams``), and

    selection: "greedy" (MIB's: top_n edges grown from the logits; takes top_n only) or "top"
        (the top_n highest scores, or those >= score_threshold);
    sender_outputs: "eap-ig" (the values EAP-IG hooks) or "residual" (module docstring).
    """

    selection: str = "greedy"
    sender_outputs: str = "eap-ig"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("sender_outputs", self.sender_outputs, SENDER_OUTPUTS)
        if self.selection == "greedy" and self.top_n is None:
            raise AcdcError(
                "selection greedy grows a circuit of top_n edges: give top_n, or use selection top with score_threshold"
            )


@dataclass
class InformationFlowRoutesConfig(InformationFlowRoutesParams):
    """``conf/method/information-flow-routes.yaml``: the greedy circuit of 20 edges by default."""

    top_n: Optional[int] = 20
    name: str = "information-flow-routes"
    metric: Optional[choices.Metric] = None  # None: the task's default metric
    ablation: choices.Ablation = choices.Ablation.resample


DEFINITION = {
    "scores": (
        "proximity max(0, |x_v|_1 - |x_v - y_u|_1) of sender output y_u to receiver input x_v, normalised to "
        "sum 1 over v's senders at every token of the clean prompts (no metric, no corrupted run; a token where "
        "all are 0 adds 0), averaged over each prompt's real tokens, then over prompts (EAP-IG's "
        "get_scores_information_flow_routes)"
    ),
    "sign": "none: scores lie in [0, 1]",
}
OUTPUTS = {
    "eap-ig": "EAP-IG's hooks: input the token embedding alone, heads their results before any attention post-norm",
    "residual": "what each sender adds to the residual stream",
}


def _chosen_edges(graph: Graph, scores: Scores, params: InformationFlowRoutesParams) -> CircuitMask:
    if params.selection == "greedy":
        edges = greedy_edges(graph, scores.edges, params.top_n)
    else:
        edges = select_edges(graph, scores.edges, params.top_n, params.score_threshold)
    return CircuitMask(edges, graph.full_head_input_mask())


def _run(inputs: MethodInput, params: InformationFlowRoutesParams) -> MethodOutcome:
    graph = inputs.graph
    scores = Scores(information_flow_scores(inputs.patcher, params.sender_outputs), unscored_head_inputs(graph))
    description: dict[str, Any] = selection_block(inputs, "information-flow-routes", params)
    description.update(
        selection=params.selection, sender_outputs=params.sender_outputs,
        outputs=OUTPUTS[params.sender_outputs], **DEFINITION,
    )
    return MethodOutcome(
        kept=_chosen_edges(graph, scores, params), scores=scores, description=description,
        threshold=params.score_threshold, forward_passes=0,
    )


def _selection(params: InformationFlowRoutesParams) -> str:
    if params.selection == "greedy":
        return f"greedy top_n {params.top_n}"
    return f"top_n {params.top_n}" if params.top_n is not None else f"score_threshold {params.score_threshold}"


SPEC = MethodSpec(
    name="information-flow-routes", params=InformationFlowRoutesParams, config=InformationFlowRoutesConfig,
    run=_run, selection=_selection, circuits=CircuitSelection.SCORES,
)
