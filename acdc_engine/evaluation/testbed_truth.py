"""Ground-truth circuits of the trained testbeds, read off the models' own attention patterns.

The shipped testbeds (``toy-induction-2l``, ``toy-induction-mlp-2l``, ``toy-predecessor-2l``) were
trained, not compiled, so no weight structure fixes their circuit. Their mechanisms are known,
though (see ``acdc_engine.tasks.induction`` and ``acdc_engine.tasks.predecessor``), and each step of a
mechanism shows in where some head attends. Per model, ``MECHANISMS`` fixes one rule, independent of
any circuit-discovery method:

  roles    each role is a layer and a per-head attention score on the task's clean prompts (offset o
           = mean attention from position i to i - o); a head plays the role when its score is > 0.5.
           An empty role is an error (a half-trained model must not silently give a truth).
  edges    templates over roles, e.g. ``prev_token->induction<k>`` is every edge from a head of role
           ``prev_token`` into the key input of a head of role ``induction``; ``<qkv>`` stands for
           each of ``<q>``, ``<k>``, ``<v>``.
  MLP relay (models with MLPs) attention patterns cannot say what an MLP does, so the truth keeps the
           MLPs as relays: ``u->m0`` for every layer-0 sender of the mechanism (``input`` and the
           layer-0 role heads), ``m0->r`` for every later receiver ``r`` of the mechanism (its
           layer-1 receivers and ``m1``), ``l->m1`` for every layer-1 role head ``l``, and
           ``m1->logits``. The truth's MLP edges are therefore an upper bound, not a finding.

How much of a model's behaviour its truth explains is measured, not assumed: the normalised
faithfulness of the truth circuit (``experiments/auc_table.py`` prints it beside every AUC). For
``toy-induction-2l`` and ``toy-predecessor-2l`` it is above 0.9 under resample ablation; for
``toy-induction-mlp-2l`` only about 0.3: its attention patterns show the Q-composition mechanism,
but the model also routes part of the answer through heads and MLP paths no attention role names
(for example a layer-1 head looking one token back). Its truth is the identified part only.

The truth's head inputs are the receivers of its edges; every edge lies on an input-to-logits path.
Its metric block is measured with the task's default metric under resample ablation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from acdc_engine.core.mask import CircuitMask
from acdc_engine.api import model_description
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.evaluation.faithfulness import CircuitEvaluator
from acdc_engine.core.graph import build_graph
from acdc_engine.core.nodes import LOGITS, NodeKind, edge_name, head_name, head_receiver_name, mlp_name, parse_node
from acdc_engine.tasks import TaskData

ROLE_THRESHOLD = 0.5
MLP_RELAY = (
    "MLP relay (attention patterns cannot identify MLP roles; these edges are an upper bound): "
    "u->m0 for every layer-0 sender u of the mechanism (input and the layer-0 role heads), "
    "m0->r for every later receiver r of the mechanism (its layer-1 receivers and m1), l->m1 for every "
    "layer-1 role head l, m1->logits"
)
_TEMPLATE = re.compile(r"^(\w+)->(\w+)(?:<(q?k?v?)>)?$")


def attention_patterns(model: Any, tokens: Tensor) -> list[Tensor]:
    """Per layer, ``model``'s attention pattern on ``tokens``, [batch, head, query, key]."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]


def offset_scores(pattern: Tensor, offset: int, queries: Tensor | None = None) -> Tensor:
    """Mean attention from position i to i - offset, per head [head], over ``queries`` (default:
    every i >= offset) and the batch. pattern: [batch, head, query, key]."""
    queries = torch.arange(offset, pattern.shape[-1]) if queries is None else queries
    return pattern[:, :, queries, queries - offset].mean((0, 2))


def _repeat(task: TaskData) -> Tensor:
    """The induction prompt's repeat positions HALF+1 .. 2*HALF (earlier occurrence: i - HALF)."""
    half = task.params["half_length"]
    return torch.arange(half + 1, 2 * half + 1)


def _after_earlier_occurrence(pattern: Tensor, task: TaskData) -> Tensor:
    """Mean attention from the last position to j + 1, j the earlier occurrence of the last token."""
    tokens = task.clean
    earlier = (tokens[:, 1:-1] == tokens[:, -1:]).int().argmax(1) + 1
    return pattern[torch.arange(len(tokens)), :, -1, earlier + 1].mean(0)


@dataclass(frozen=True)
class Role:
    """Heads of ``layer`` whose ``score(pattern of that layer, task)`` [head] exceeds ROLE_THRESHOLD."""

    layer: int
    description: str
    score: Callable[[Tensor, TaskData], Tensor]


@dataclass(frozen=True)
class Mechanism:
    """A testbed's mechanism: its task, roles by name, and edge templates over role names."""

    task: str
    roles: dict[str, Role]
    edges: tuple[str, ...]


_HALF = "HALF = task.half_length"
MECHANISMS: dict[str, Mechanism] = {
    "toy-induction-2l": Mechanism(  # K-composition induction, attention only
        task="induction",
        roles={
            "prev_token": Role(0, "offset 1", lambda p, t: offset_scores(p, 1)),
            "current_token": Role(0, "offset 0", lambda p, t: offset_scores(p, 0)),
            "induction": Role(1, f"offset HALF-1 over the repeat queries HALF+1..2*HALF ({_HALF})",
                              lambda p, t: offset_scores(p, t.params["half_length"] - 1, _repeat(t))),
        },
        edges=("input->prev_token<qkv>", "input->current_token<qkv>", "prev_token->induction<k>",
               "input->induction<qv>", "current_token->induction<qv>", "induction->logits"),
    ),
    "toy-induction-mlp-2l": Mechanism(  # Q-composition: a position pointer as query, positional keys
        task="induction",
        roles={
            "duplicate_token": Role(0, f"offset HALF over the repeat queries ({_HALF})",
                                    lambda p, t: offset_scores(p, t.params["half_length"], _repeat(t))),
            "look_back": Role(0, "offset 1 + offset 2", lambda p, t: offset_scores(p, 1) + offset_scores(p, 2)),
            "lookup": Role(1, "offsets HALF-1 + HALF-2 + HALF-3 over the repeat queries HALF+1..2*HALF",
                           lambda p, t: sum(offset_scores(p, t.params["half_length"] - d, _repeat(t)) for d in (1, 2, 3))),
        },
        edges=("input->duplicate_token<qkv>", "input->look_back<qkv>", "duplicate_token->lookup<q>",
               "input->lookup<k>", "look_back->lookup<v>", "lookup->logits"),
    ),
    "toy-predecessor-2l": Mechanism(  # K-composition finds j+1, V-composition reads t_{j-1}
        task="predecessor",
        roles={
            "prev_token": Role(0, "offset 1", lambda p, t: offset_scores(p, 1)),
            "two_back": Role(0, "offset 2", lambda p, t: offset_scores(p, 2)),
            "lookup": Role(1, "attention from the last position to j+1, j the earlier occurrence of its token",
                           _after_earlier_occurrence),
        },
        edges=("input->prev_token<qkv>", "input->two_back<qkv>", "prev_token->lookup<k>",
               "input->lookup<q>", "two_back->lookup<v>", "lookup->logits"),
    ),
}


def mechanism(model_name: str) -> Mechanism:
    """The mechanism rule of testbed ``model_name``; AcdcError listing the known testbeds otherwise."""
    if model_name not in MECHANISMS:
        raise AcdcError(f"no attention-role ground truth for model '{model_name}'; known: {', '.join(MECHANISMS)}")
    return MECHANISMS[model_name]


def rule_text(model_name: str, has_mlp: bool) -> str:
    """The rule of ``model_name``'s truth in words (roles, edge templates, MLP relay if ``has_mlp``)."""
    mech = mechanism(model_name)
    roles = "; ".join(f"{name} = layer-{r.layer} heads, {r.description}" for name, r in mech.roles.items())
    text = (f"roles (heads whose score on the task's clean prompts is > {ROLE_THRESHOLD}; offset o = mean attention "
            f"from position i to i-o): {roles}. Edges: {', '.join(mech.edges)} (<qkv>: each of <q>, <k>, <v>)")
    return f"{text}. {MLP_RELAY}" if has_mlp else text


def role_scores(model: Any, model_name: str, task: TaskData) -> dict[str, Tensor]:
    """Per role of ``model_name``'s mechanism, every head's score [n_heads] in the role's layer."""
    mech = mechanism(model_name)
    if task.name != mech.task:
        raise AcdcError(f"the truth of '{model_name}' is read on task '{mech.task}', got task '{task.name}'")
    if model.cfg.n_layers != 2:
        raise AcdcError(f"the truth of '{model_name}' is for a 2-layer model; this one has {model.cfg.n_layers} layers")
    with torch.no_grad():
        patterns = attention_patterns(model, task.clean.to(model.cfg.device))
    return {name: role.score(patterns[role.layer], task).double().cpu() for name, role in mech.roles.items()}


def identify_roles(model: Any, model_name: str, task: TaskData) -> dict[str, list[str]]:
    """Per role, the names of the heads whose score is > 0.5; AcdcError naming the model and role
    when a role has none."""
    roles = {}
    for name, scores in role_scores(model, model_name, task).items():
        layer = MECHANISMS[model_name].roles[name].layer
        roles[name] = [head_name(layer, h) for h in (scores > ROLE_THRESHOLD).nonzero().flatten().tolist()]
        if not roles[name]:
            raise AcdcError(
                f"model '{model_name}': no head plays role '{name}' (best score {float(scores.max()):.3f}, "
                f"needs > {ROLE_THRESHOLD}); a model that does not show the mechanism has no attention-role truth"
            )
    return roles


def truth_edges(model_name: str, roles: dict[str, list[str]], has_mlp: bool) -> list[str]:
    """Edge names of the truth: the mechanism's templates over ``roles``, plus the MLP relay if ``has_mlp``."""
    pairs: list[tuple[str, str]] = []  # (sender, receiver)
    for template in mechanism(model_name).edges:
        sender, receiver, inputs = _TEMPLATE.match(template).groups()
        senders = roles.get(sender, [sender])  # "input" is no role
        if receiver == LOGITS:
            receivers = [LOGITS]
        else:
            receivers = [_head_receiver(head, x) for head in roles[receiver] for x in inputs]
        pairs += [(s, r) for s in senders for r in receivers if (s, r) not in pairs]
    if has_mlp:
        layer0 = [s for s in dict.fromkeys(s for s, _ in pairs) if _layer_of(s) != 1]
        layer1 = [r for r in dict.fromkeys(r for _, r in pairs) if _layer_of(r) == 1]
        layer1_heads = [h for name, heads in roles.items() if MECHANISMS[model_name].roles[name].layer == 1 for h in heads]
        pairs += [(u, mlp_name(0)) for u in layer0] + [(mlp_name(0), r) for r in layer1] + [(mlp_name(0), mlp_name(1))]
        pairs += [(h, mlp_name(1)) for h in dict.fromkeys(layer1_heads)] + [(mlp_name(1), LOGITS)]
    return [edge_name(s, r) for s, r in pairs]


def _head_receiver(head: str, qkv: str) -> str:
    """The ``qkv`` input of the head named ``head`` (``a1.h2``, "k" -> ``a1.h2<k>``)."""
    node = parse_node(head)
    return head_receiver_name(node.layer, node.head, qkv)


def _layer_of(name: str) -> int | None:
    """The layer of a head, head receiver or MLP; None for the input and logits."""
    node = parse_node(name)
    return node.layer


def testbed_truth(model: Any, model_name: str, task: TaskData) -> Circuit:
    """The attention-role ground truth of testbed ``model_name`` (``model``, on ``task``) as a Circuit.

    Edge mask: ``truth_edges`` of the roles ``identify_roles`` finds; head inputs: the receivers of
    those edges; scores NaN; ``method`` = {"name": "attention-roles", "rule", "roles"}; ``metric``:
    the task's default metric of the full model, the truth and the empty circuit under resample
    ablation. AcdcError for an unknown model name, a task other than the mechanism's, or an empty role.
    """
    graph = build_graph(model.cfg)
    roles = identify_roles(model, model_name, task)
    edges = torch.zeros_like(graph.edge_exists)
    heads = torch.zeros(graph.shape.n_layers, graph.shape.n_heads, 3, dtype=torch.bool)
    for edge in truth_edges(model_name, roles, graph.shape.has_mlp):
        s, r = graph.parse_edge(edge)
        edges[s, r] = True
        if parse_node(graph.receivers[r]).kind is NodeKind.HEAD_RECEIVER:
            heads[graph.parse_head_input(graph.receivers[r])] = True
    evaluator = CircuitEvaluator(model, task, ablation="resample")
    truth = Circuit.unscored(
        graph, CircuitMask(edges, heads),
        model=model_description(model, model_name, split_input=False),
        task={"name": task.name, **task.params},
        method={"name": "attention-roles", "rule": rule_text(model_name, graph.shape.has_mlp), "roles": roles},
    )
    if not (torch.equal(truth.in_graph.edges, edges) and torch.equal(truth.in_graph.head_inputs, heads)):
        raise RuntimeError(f"{model_name}: the attention-role truth has parts off every input-to-logits path")
    truth.metric = {
        "name": evaluator.metric_name,
        "ablation": "resample",
        "full": evaluator.full,
        "circuit": float(evaluator.metrics(CircuitMask.stack([truth.in_graph]))[0]),
        "empty": evaluator.empty,
    }
    return truth


__all__ = ["MECHANISMS", "attention_patterns", "identify_roles", "offset_scores", "role_scores", "testbed_truth"]
