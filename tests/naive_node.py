"""A deliberately naive, independent reference for node-level methods: node ACDC, exact node scores,
and EAP / EAP-IG node and neuron scores as EAP-IG's ``attribute_node.py`` defines them.

Like ``naive_reference`` it imports nothing from ``acdc_engine``. Patching: ``naive_patched_logits``
with every edge out of a node removed (one hooked pass per evaluation). Gradients: autograd over one
plainly hooked TransformerLens pass, with a zero leaf added at each node's own hook, where
EAP-IG's backward hooks read them (``attribute_node.py::make_hooks_and_matrices``):

    input      ``hook_embed`` (its gradient is the residual stream's, also ``hook_pos_embed``'s)
    a{L}.h{H}  ``blocks.L.attn.hook_result[:, :, H]``
    m{L}       ``blocks.L.hook_mlp_in`` (EAP-IG's hook, the MLP's input) or ``blocks.L.hook_mlp_out``

A node's neuron scores are sum over prompts and positions of (out*_u - out_u) * gradient, one per
output dimension; its node score is their sum.
"""

from __future__ import annotations

import torch

from naive_reference import _ablate, _sender_hook_value, graph_names, naive_patched_logits, split_edge


# ----- patching whole nodes ----------------------------------------------------------------------


def outgoing_edges(cfg) -> dict[str, list[str]]:
    """{node: the names of every edge out of it}, nodes in forward order."""
    senders, _, edges = graph_names(cfg)
    return {u: [e for e in edges if split_edge(e)[0] == u] for u in senders}


def naive_acdc_nodes(model, clean, corrupted, metric, threshold, ablation="resample", corrupted_lengths=None) -> dict:
    """ACDC over nodes: nodes latest first; remove every edge out of the node; keep the removal
    when the metric rises by less than ``threshold``. Returns {"kept": {node: bool}, "scores":
    {node: m - cur}}."""
    outgoing = outgoing_edges(model.cfg)
    removed: set[str] = set()

    def evaluate() -> float:
        return float(metric(naive_patched_logits(model, clean, corrupted, removed, (), ablation, corrupted_lengths)))

    cur = evaluate()
    kept, scores = {}, {}
    for node in reversed(list(outgoing)):
        removed.update(outgoing[node])
        m = evaluate()
        scores[node] = m - cur
        kept[node] = m - cur >= threshold
        if kept[node]:
            removed.difference_update(outgoing[node])
        else:
            cur = m
    return {"kept": kept, "scores": scores}


def naive_exact_node_scores(model, clean, corrupted, metric, ablation="resample", corrupted_lengths=None) -> dict:
    """{node: metric(full model without every edge out of it) - metric(full model)}, one hooked pass each."""
    full = float(metric(naive_patched_logits(model, clean, corrupted, [], (), ablation, corrupted_lengths)))
    return {
        node: float(metric(naive_patched_logits(model, clean, corrupted, edges, (), ablation, corrupted_lengths))) - full
        for node, edges in outgoing_edges(model.cfg).items()
    }


# ----- gradients at the nodes ---------------------------------------------------------------------


def node_hooks(cfg, mlp_gradient="input") -> dict[str, tuple[str, int | None]]:
    """{node: (hook whose gradient it takes, head index or None)}."""
    hooks = {"input": ("hook_embed", None)}
    for layer in range(cfg.n_layers):
        hooks.update({f"a{layer}.h{head}": (f"blocks.{layer}.attn.hook_result", head) for head in range(cfg.n_heads)})
        if not cfg.attn_only:
            hooks[f"m{layer}"] = (f"blocks.{layer}.hook_mlp_{'in' if mlp_gradient == 'input' else 'out'}", None)
    return hooks


def naive_node_gradients(model, tokens, metric, hook_names, replace=None) -> dict:
    """{hook: d metric / d (that hook's value)} of one pass of ``tokens`` with the hooks in
    ``replace`` {hook: tensor} overwritten by those constants first (the leaf is added after, so
    the gradient is the replaced value's, as EAP-IG's backward hook on the replaced hook reads it)."""
    leaves = {}

    def add_leaf(act, hook):
        leaves[hook.name] = torch.zeros_like(act, requires_grad=True)
        return act + leaves[hook.name]

    def constant(value):
        return lambda act, hook: value.detach().expand_as(act).clone()

    hooks = [(name, constant(value)) for name, value in (replace or {}).items()] + [(name, add_leaf) for name in hook_names]
    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=hooks))
        grads = torch.autograd.grad(value, [leaves[n] for n in hook_names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(hook_names, grads)}


def _caches(model, clean, corrupted):
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)
    return clean_cache, corrupted_cache


def naive_neuron_scores(model, clean, corrupted, metric, runs, mlp_gradient="input", ablation="resample") -> dict:
    """{node: [d_model] sum over prompts and positions of (out*_u - out_u) * mean_runs gradient_u},
    where ``runs`` is a list of ``replace`` dicts, one gradient pass each."""
    cfg = model.cfg
    hooks = node_hooks(cfg, mlp_gradient)
    names = sorted({hook for hook, _ in hooks.values()})
    passes = [naive_node_gradients(model, clean, metric, names, replace) for replace in runs]
    mean = {n: sum(p[n] for p in passes) / len(passes) for n in names}
    clean_cache, corrupted_cache = _caches(model, clean, corrupted)
    scores = {}
    for node, (hook, head) in hooks.items():
        delta = _ablate(_sender_hook_value(corrupted_cache, node), ablation) - _sender_hook_value(clean_cache, node)
        grad = mean[hook] if head is None else mean[hook][:, :, head]
        scores[node] = (delta * grad).sum((0, 1))
    return scores


def eap_runs() -> list:
    """EAP: one pass at the clean model."""
    return [None]


def input_ig_runs(model, clean, corrupted, alphas, ablation="resample") -> list:
    """EAP-IG-inputs: the embeddings set to lerp(out*, out, alpha) at each alpha."""
    clean_cache, corrupted_cache = _caches(model, clean, corrupted)
    embeddings = [k for k in ("hook_embed", "hook_pos_embed") if k in clean_cache.keys()]
    return [
        {k: torch.lerp(_ablate(corrupted_cache[k], ablation).expand_as(clean_cache[k]), clean_cache[k], alpha) for k in embeddings}
        for alpha in alphas
    ]


def activation_ig_runs(model, clean, corrupted, steps, ablation="resample") -> list:
    """EAP-IG-activations: per node group (the embeddings, a layer's ``attn.hook_result``, its
    ``hook_mlp_out``) and k = 1 .. steps, that group set to lerp(out*, out, k / steps)."""
    cfg = model.cfg
    clean_cache, corrupted_cache = _caches(model, clean, corrupted)
    groups = [[k for k in ("hook_embed", "hook_pos_embed") if k in clean_cache.keys()]]
    for layer in range(cfg.n_layers):
        groups.append([f"blocks.{layer}.attn.hook_result"])
        if not cfg.attn_only:
            groups.append([f"blocks.{layer}.hook_mlp_out"])
    return [
        {n: torch.lerp(_ablate(corrupted_cache[n], ablation).expand_as(clean_cache[n]), clean_cache[n], k / steps) for n in group}
        for group in groups
        for k in range(1, steps + 1)
    ]
