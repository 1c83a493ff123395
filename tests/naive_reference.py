"""A deliberately naive, independent reference implementation of edge patching and exact ACDC.

It exists so that the fast engine (``acdc_engine``) can be checked against it.  It therefore imports
nothing from ``acdc_engine`` and uses no engine code: it runs the model's own hooked forward pass
(``ModelSpec.forward``, a TransformerLens ``HookedRootModule`` with TransformerLens's hook names) and
patches receivers' inputs through hooks.  Obviousness beats speed everywhere: every evaluated circuit
costs one plain ``run_with_cache`` on the corrupted input plus one ``run_with_hooks`` on the clean
input; nothing is cached across candidates, nothing is batched.

Conventions follow docs/design.md ("Graph", "Patching semantics", "Exact ACDC").

Senders (write to the residual stream), in forward order:
    input, a0.h0 .. a0.h{n-1}, m0, a1.h0, ..., m{last}        (no m{L} for attention-only models)
Receivers (read from it), in forward order:
    a0.h0<q>, a0.h0<k>, a0.h0<v>, a0.h1<q>, ..., m0, a1.h0<q>, ..., m{last}, logits
Edge ``u->v`` exists when u writes before v reads; in a parallel block (attention and MLP reading the
same residual) ``m{L}`` does not read layer L's heads.  Key/value receivers are per query head (the
model's ``hook_k_input`` has one slot per query head, also under grouped-query attention).
Head inputs: one per head receiver, named like the receiver (``a1.h2<k>``); removing one replaces that
head's k activation (blocks.1.attn.hook_k[:, :, 2]) by its ablated value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

QKV = ("q", "k", "v")
ABLATIONS = ("resample", "zero", "mean")


# --------------------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------------------


def _has_mlps(cfg) -> bool:
    return not cfg.attn_only


def _sender_rank(name: str) -> int:
    """Position in the forward order at which a sender writes: input 0, heads of L 2L+1, m{L} 2L+2."""
    if name == "input":
        return 0
    if name.startswith("a"):
        layer = int(name[1:].split(".")[0])
        return 2 * layer + 1
    if name.startswith("m"):
        return 2 * int(name[1:]) + 2
    raise ValueError(f"not a sender name: {name!r}")


def _receiver_rank(name: str, parallel: bool) -> float:
    """Position in the forward order at which a receiver reads (a sender must write strictly before).
    In a parallel block the MLP reads where the layer's heads read."""
    if name == "logits":
        return float("inf")
    if name.startswith("a"):
        layer = int(name[1:].split(".")[0])
        return 2 * layer + 1
    if name.startswith("m"):
        return 2 * int(name[1:]) + (1 if parallel else 2)
    raise ValueError(f"not a receiver name: {name!r}")


def graph_names(cfg):
    """Return ``(senders, receivers, edges)`` as lists of names, all in forward order.

    Edges are listed receiver by receiver (receivers in forward order), and within one receiver
    sender by sender (senders in forward order).
    """
    parallel = _has_mlps(cfg) and bool(getattr(cfg, "parallel_attn_mlp", False))
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    senders = ["input"]
    receivers = []
    for layer in range(n_layers):
        for head in range(n_heads):
            senders.append(f"a{layer}.h{head}")
            for x in QKV:
                receivers.append(f"a{layer}.h{head}<{x}>")
        if _has_mlps(cfg):
            senders.append(f"m{layer}")
            receivers.append(f"m{layer}")
    receivers.append("logits")

    edges = []
    for v in receivers:
        for u in senders:
            if _sender_rank(u) < _receiver_rank(v, parallel):
                edges.append(f"{u}->{v}")
    return senders, receivers, edges


def head_input_names(cfg):
    """One 'head input' per head receiver, named like the receiver, in forward order."""
    return [
        f"a{layer}.h{head}<{x}>"
        for layer in range(cfg.n_layers)
        for head in range(cfg.n_heads)
        for x in QKV
    ]


def split_edge(edge: str):
    """``"a0.h1->a1.h2<k>"`` -> ``("a0.h1", "a1.h2<k>")``."""
    u, v = edge.split("->")
    return u, v


# --------------------------------------------------------------------------------------------------
# Patched forward pass
# --------------------------------------------------------------------------------------------------


def _check_model(model):
    """The reference patches the hook points of a model whose forward pass has one q/k/v input per
    query head (``hook_q_input`` ...) and one result per head (``attn.hook_result``)."""
    cfg = model.cfg
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        raise NotImplementedError(
            f"positional_embedding_type {cfg.positional_embedding_type!r} is not supported"
        )
    if not hasattr(model, "run_with_hooks"):
        raise NotImplementedError(f"the reference needs a hooked model, got {type(model).__name__}")


def _ablate(corrupted_value: torch.Tensor, ablation: str, corrupted_lengths=None) -> torch.Tensor:
    """The ablated version out* of an activation, given its value in the plain corrupted run.

    resample: the corrupted value itself; zero: a scalar 0 (broadcasts); mean: the batch mean per
    position, shape [1, pos, ...] (broadcasts to every prompt). With ``corrupted_lengths`` (one int
    per prompt, right padding after it) the mean at position p is over the prompts longer than p, one
    prompt at a time (0 where none is).
    """
    if ablation == "resample":
        return corrupted_value
    if ablation == "zero":
        return torch.zeros((), dtype=corrupted_value.dtype, device=corrupted_value.device)
    if ablation == "mean" and corrupted_lengths is not None:
        mean = torch.zeros_like(corrupted_value[:1])
        for p in range(corrupted_value.shape[1]):
            real = [i for i, n in enumerate(corrupted_lengths) if int(n) > p]
            for i in real:
                mean[0, p] += corrupted_value[i, p] / len(real)
        return mean
    if ablation == "mean":
        return corrupted_value.mean(dim=0, keepdim=True)
    raise ValueError(f"unknown ablation {ablation!r}; expected one of {ABLATIONS}")


def _sender_hook_value(cache, name: str) -> torch.Tensor:
    """Sender ``name``'s output read from a cache (an ActivationCache or a plain dict of hook values)."""
    if name == "input":
        value = cache["hook_embed"]
        if "hook_pos_embed" in cache.keys():  # absent for rotary models
            value = value + cache["hook_pos_embed"]
        return value
    if name.startswith("a"):
        layer_part, head_part = name.split(".")
        layer, head = int(layer_part[1:]), int(head_part[1:])
        return cache[f"blocks.{layer}.attn.hook_result"][:, :, head]
    return cache[f"blocks.{int(name[1:])}.hook_mlp_out"]


def naive_patched_logits(
    model,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    removed_edges,
    removed_head_inputs=(),
    ablation: str = "resample",
    corrupted_lengths=None,
) -> torch.Tensor:
    """Logits [batch, pos, vocab] of ``model`` on ``clean`` with the given edges and head inputs removed.

    For receiver v:  in_v = (value at v's hook in this pass) - sum_{removed u->v} (out_u - out_u*),
    where out_u is sender u's output earlier in this same pass and out_u* its ablated value.
    A removed head input replaces that head's q/k/v activation by its ablated value.
    ``corrupted_lengths``: the corrupted prompts' real tokens, for mean ablation (``_ablate``).
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; expected one of {ABLATIONS}")
    _check_model(model)
    cfg = model.cfg
    senders, receivers, edges = graph_names(cfg)
    removed_edges = set(removed_edges)
    removed_head_inputs = set(removed_head_inputs)
    unknown = removed_edges - set(edges)
    if unknown:
        raise ValueError(f"unknown edges: {sorted(unknown)[:5]}")
    unknown = removed_head_inputs - set(head_input_names(cfg))
    if unknown:
        raise ValueError(f"unknown head inputs: {sorted(unknown)[:5]}")
    if ablation == "resample" and tuple(clean.shape) != tuple(corrupted.shape):
        raise ValueError("resample ablation needs clean and corrupted inputs of the same shape")

    # removed senders per receiver, in forward order of senders
    removed_into = {v: [] for v in receivers}
    for edge in edges:  # iterate in the fixed edge order so the sum order is fixed
        if edge in removed_edges:
            u, v = split_edge(edge)
            removed_into[v].append(u)

    with torch.no_grad():
        # 1. plain run on the corrupted input: ablated values out* of senders and of q/k/v
        needed = {"hook_embed", "hook_pos_embed"}
        for layer in range(cfg.n_layers):
            needed.add(f"blocks.{layer}.attn.hook_result")
            needed.add(f"blocks.{layer}.hook_mlp_out")
            needed.update(f"blocks.{layer}.attn.hook_{x}" for x in QKV)
        _, corrupted_cache = model.run_with_cache(corrupted, names_filter=lambda n: n in needed)
        sender_star = {u: _ablate(_sender_hook_value(corrupted_cache, u), ablation, corrupted_lengths) for u in senders}
        qkv_star = {}
        for layer in range(cfg.n_layers):
            for x in QKV:
                corrupted_act = corrupted_cache[f"blocks.{layer}.attn.hook_{x}"]
                for head in range(cfg.n_heads):
                    qkv_star[f"a{layer}.h{head}<{x}>"] = _ablate(corrupted_act[:, :, head], ablation, corrupted_lengths)
        del corrupted_cache

        # 2. one hooked run on the clean input
        recorded = {}  # hook name -> activation in this pass (for the sender hooks)

        def record(act, hook):
            recorded[hook.name] = act.detach().clone()
            return act

        def delta_for(receiver: str):
            """sum over removed edges u->receiver of (out_u - out_u*), or None if there are none."""
            total = None
            for u in removed_into[receiver]:
                diff = _sender_hook_value(recorded, u) - sender_star[u]
                total = diff if total is None else total + diff
            return total

        def patch_head_inputs(layer: int, x: str):
            def hook(act, hook):  # act: [batch, pos, n_heads, d_model]
                new = act.clone()
                for head in range(cfg.n_heads):
                    delta = delta_for(f"a{layer}.h{head}<{x}>")
                    if delta is not None:
                        new[:, :, head] = act[:, :, head] - delta
                return new

            return hook

        def patch_qkv(layer: int, x: str):
            def hook(act, hook):  # act: [batch, pos, n_heads, d_head]
                new = act.clone()
                for head in range(cfg.n_heads):
                    name = f"a{layer}.h{head}<{x}>"
                    if name in removed_head_inputs:
                        new[:, :, head] = qkv_star[name]  # broadcasts (zero / mean)
                return new

            return hook

        def patch_whole(receiver: str):
            def hook(act, hook):  # act: [batch, pos, d_model]
                delta = delta_for(receiver)
                if delta is None:
                    return act
                return act - delta

            return hook

        fwd_hooks = [("hook_embed", record)]
        if cfg.positional_embedding_type == "standard":
            fwd_hooks.append(("hook_pos_embed", record))
        for layer in range(cfg.n_layers):
            for x in QKV:
                fwd_hooks.append((f"blocks.{layer}.hook_{x}_input", patch_head_inputs(layer, x)))
                fwd_hooks.append((f"blocks.{layer}.attn.hook_{x}", patch_qkv(layer, x)))
            fwd_hooks.append((f"blocks.{layer}.attn.hook_result", record))
            if _has_mlps(cfg):
                fwd_hooks.append((f"blocks.{layer}.hook_mlp_in", patch_whole(f"m{layer}")))
                fwd_hooks.append((f"blocks.{layer}.hook_mlp_out", record))
        fwd_hooks.append((f"blocks.{cfg.n_layers - 1}.hook_resid_post", patch_whole("logits")))

        logits = model.run_with_hooks(clean, fwd_hooks=fwd_hooks)
    return logits


# --------------------------------------------------------------------------------------------------
# Metric
# --------------------------------------------------------------------------------------------------


def naive_kl(clean_logits: torch.Tensor, logits: torch.Tensor, positions) -> float:
    """KL(clean || circuit) summed over the vocabulary, averaged over prompts and the given positions."""
    positions = list(positions)
    log_p_clean = F.log_softmax(clean_logits[:, positions], dim=-1)
    log_p = F.log_softmax(logits[:, positions], dim=-1)
    kl = (log_p_clean.exp() * (log_p_clean - log_p)).sum(dim=-1)  # [batch, n_positions]
    return kl.mean().item()


# --------------------------------------------------------------------------------------------------
# Exact ACDC
# --------------------------------------------------------------------------------------------------


def _senders_latest_first(senders):
    """Later layer first; within a layer m{L} before the heads; heads high to low; input last.

    The forward order is input, a{L}.h0..h{n-1}, m{L}, ..., so plain reversal gives exactly this.
    """
    return list(reversed(senders))


class _StopTesting(Exception):
    pass


def naive_acdc(model, clean, corrupted, metric, threshold, ablation="resample", max_tests=None, corrupted_lengths=None) -> dict:
    """Exact greedy ACDC (Conmy et al. 2023) in the order fixed by docs/design.md.

    ``metric(logits) -> float``, lower is better.  ``max_tests`` stops after that many tested
    candidates (benchmarks time a prefix); the rest stay in the circuit.  Returns
    ``{"edges": {edge: kept}, "head_inputs": {name: kept}, "scores": {name: float | None}}``;
    a score is ``m - cur`` measured when the candidate was tested, None when it was removed untested.
    """
    cfg = model.cfg
    senders, receivers, edges = graph_names(cfg)
    head_inputs = head_input_names(cfg)
    edge_set = set(edges)

    incoming = {  # receiver -> its edges, senders latest first
        v: [f"{u}->{v}" for u in _senders_latest_first(senders) if f"{u}->{v}" in edge_set]
        for v in receivers
    }
    outgoing = {u: [e for e in edges if split_edge(e)[0] == u] for u in senders}

    removed_edges: set[str] = set()
    removed_head_inputs: set[str] = set()
    scores = {name: None for name in edges}
    scores.update({name: None for name in head_inputs})

    def evaluate() -> float:
        logits = naive_patched_logits(
            model, clean, corrupted, removed_edges, removed_head_inputs, ablation, corrupted_lengths
        )
        return float(metric(logits))

    cur = evaluate()

    n_tests = 0

    def try_remove(name: str, removed: set) -> None:
        nonlocal cur, n_tests
        if max_tests is not None and n_tests >= max_tests:
            raise _StopTesting
        n_tests += 1
        removed.add(name)
        m = evaluate()
        scores[name] = m - cur
        if m - cur < threshold:
            cur = m
        else:
            removed.discard(name)

    def sender_is_dead(u: str) -> bool:
        return all(e in removed_edges for e in outgoing[u])

    def try_receiver_edges(v: str) -> None:
        for e in incoming[v]:
            try_remove(e, removed_edges)

    def visit_in_order() -> None:
        # logits
        try_receiver_edges("logits")

        for layer in reversed(range(cfg.n_layers)):
            heads_high_to_low = list(reversed(range(cfg.n_heads)))

            # the MLP input
            if _has_mlps(cfg):
                mlp = f"m{layer}"
                if sender_is_dead(mlp):
                    removed_edges.update(incoming[mlp])  # untested, score None
                else:
                    try_receiver_edges(mlp)

            # dead heads: their head inputs and every edge into their q/k/v go, untested
            for head in heads_high_to_low:
                if sender_is_dead(f"a{layer}.h{head}"):
                    for x in QKV:
                        receiver = f"a{layer}.h{head}<{x}>"
                        removed_head_inputs.add(receiver)
                        removed_edges.update(incoming[receiver])

            # whole-receiver tests ("head inputs"): all <v>, then all <k>, then all <q>; heads high to low
            for x in ("v", "k", "q"):
                for head in heads_high_to_low:
                    name = f"a{layer}.h{head}<{x}>"
                    if name not in removed_head_inputs:
                        try_remove(name, removed_head_inputs)

            # single edges into each <v>, then each <k>, then each <q>; heads high to low
            for x in ("v", "k", "q"):
                for head in heads_high_to_low:
                    receiver = f"a{layer}.h{head}<{x}>"
                    if receiver in removed_head_inputs:
                        removed_edges.update(incoming[receiver])  # no longer matter: untested
                    else:
                        try_receiver_edges(receiver)

    try:
        visit_in_order()
    except _StopTesting:
        pass

    return {
        "edges": {e: e not in removed_edges for e in edges},
        "head_inputs": {h: h not in removed_head_inputs for h in head_inputs},
        "scores": scores,
        "tests": n_tests,
    }


def naive_kl_acdc_kept_edges(model, clean, corrupted, positions, threshold, ablation="resample") -> set:
    """The edges naive ACDC keeps with the KL metric against the clean model at ``positions``."""
    with torch.no_grad():
        clean_logits = model(clean)
    positions = list(positions)
    result = naive_acdc(model, clean, corrupted, lambda logits: naive_kl(clean_logits, logits, positions), threshold, ablation)
    return {edge for edge, kept in result["edges"].items() if kept}
