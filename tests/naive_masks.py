"""Naive, hook-based models with float masks, differentiable in them: the learned-mask methods' tests
check one training step's loss and gradient against these. Like ``naive_reference`` they import
nothing from ``acdc_engine``: the model's own hooked forward pass, one hook per masked activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from naive_reference import QKV, _ablate, _sender_hook_value, graph_names, split_edge


def _corrupted_values(model, corrupted, ablation):
    """Every hook value the masks mix in, from a plain run on ``corrupted``, ablated."""
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    return {name: _ablate(cache[name], ablation) for name in cache.keys()}, cache


def naive_edge_masked_logits(model, clean, corrupted, edge_masks, ablation="resample"):
    """Logits [batch, pos, vocab] on ``clean`` where edge u->v carries m_uv of sender u's output and
    1 - m_uv of its ablated output (``edge_masks``: edge name -> 0-dim tensor; missing edges 1):

        in_v = (value at v's hook in this pass) - sum_u (1 - m_uv) (out_u - out*_u).
    """
    cfg = model.cfg
    senders, _, _ = graph_names(cfg)
    ablated, cache = _corrupted_values(model, corrupted, ablation)
    sender_star = {u: _ablate(_sender_hook_value(cache, u), ablation) for u in senders}
    into = {}
    for edge, mask in edge_masks.items():
        u, v = split_edge(edge)
        into.setdefault(v, []).append((u, mask))
    recorded = {}

    def record(act, hook):
        recorded[hook.name] = act
        return act

    def delta(receiver):
        return sum(((1 - m) * (_sender_hook_value(recorded, u) - sender_star[u]) for u, m in into.get(receiver, [])), 0.0)

    def heads_in(layer, x):
        def hook(act, hook):
            return torch.stack([act[:, :, h] - delta(f"a{layer}.h{h}<{x}>") for h in range(cfg.n_heads)], dim=2)
        return hook

    def whole(receiver):
        return lambda act, hook: act - delta(receiver)

    hooks = [("hook_embed", record)] + ([("hook_pos_embed", record)] if cfg.positional_embedding_type == "standard" else [])
    for layer in range(cfg.n_layers):
        hooks += [(f"blocks.{layer}.hook_{x}_input", heads_in(layer, x)) for x in QKV]
        hooks.append((f"blocks.{layer}.attn.hook_result", record))
        if not cfg.attn_only:
            hooks += [(f"blocks.{layer}.hook_mlp_in", whole(f"m{layer}")), (f"blocks.{layer}.hook_mlp_out", record)]
    hooks.append((f"blocks.{cfg.n_layers - 1}.hook_resid_post", whole("logits")))
    return model.run_with_hooks(clean, fwd_hooks=hooks)


def naive_node_masked_logits(model, clean, corrupted, qkv_masks, mlp_masks, ablation="resample"):
    """Logits [batch, pos, vocab] on ``clean`` as the ACDC repository's subnetwork probing masks its
    hook points: hook_q/k/v of head h = m * value + (1 - m) * ablated value (``qkv_masks``:
    "a{L}.h{H}<q>" -> 0-dim tensor), hook_mlp_out likewise (``mlp_masks``: "m{L}" -> 0-dim tensor)."""
    cfg = model.cfg
    ablated, _ = _corrupted_values(model, corrupted, ablation)

    def mix(mask, value, star):
        return mask * value + (1 - mask) * star

    def qkv(layer, x):
        name = f"blocks.{layer}.attn.hook_{x}"

        def hook(act, hook):
            return torch.stack(
                [mix(qkv_masks[f"a{layer}.h{h}<{x}>"], act[:, :, h], ablated[name][..., h, :] if ablated[name].dim() else ablated[name])
                 for h in range(cfg.n_heads)], dim=2)
        return hook

    def mlp(layer):
        name = f"blocks.{layer}.hook_mlp_out"
        return lambda act, hook: mix(mlp_masks[f"m{layer}"], act, ablated[name])

    hooks = [(f"blocks.{layer}.attn.hook_{x}", qkv(layer, x)) for layer in range(cfg.n_layers) for x in QKV]
    if not cfg.attn_only:
        hooks += [(f"blocks.{layer}.hook_mlp_out", mlp(layer)) for layer in range(cfg.n_layers)]
    return model.run_with_hooks(clean, fwd_hooks=hooks)


def kl(clean_logits, logits, positions):
    """KL(clean || masked), summed over the vocabulary, averaged over prompts and ``positions`` (a tensor)."""
    log_p_clean = F.log_softmax(clean_logits[:, positions], dim=-1)
    log_p = F.log_softmax(logits[:, positions], dim=-1)
    return (log_p_clean.exp() * (log_p_clean - log_p)).sum(-1).mean()
