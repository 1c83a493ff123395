"""A deliberately naive, independent reference for EAP and EAP-IG scores: one edge at a time.

Like ``naive_reference``, it imports nothing from ``acdc_engine``: only torch, transformer_lens and
the naming helpers of ``naive_reference``. It does not take gradients at all. For edge u -> v it
measures the directional derivative of the metric along "patch this edge by a fraction t",

    d/dt metric(in_v + t * (out*_u - out_u)) at t = 0,

with a central finite difference: two TransformerLens passes on the clean prompts, each adding
+-eps * (out*_u - out_u) at receiver v's input hook. out_u and out*_u are read from plain
``run_with_cache`` passes on the clean and corrupted prompts. For EAP-IG the same derivative is
taken with the input embeddings (``hook_embed`` / ``hook_pos_embed``) replaced by their
interpolation between the ablated and the clean ones, and averaged over the interpolation points.

Receiver hooks: ``a{L}.h{H}<x>`` -> ``blocks.L.hook_x_input[:, :, H]``, ``m{L}`` ->
``blocks.L.hook_mlp_in``, ``logits`` -> ``blocks.{last}.hook_resid_post``.
Sender values: ``input`` -> ``hook_embed + hook_pos_embed`` (``tok_embed`` / ``pos_embed`` apart with
split_input), ``a{L}.h{H}`` -> ``blocks.L.attn.hook_result[:, :, H]``, ``m{L}`` -> ``blocks.L.hook_mlp_out``.
"""

from __future__ import annotations

import torch

from naive_reference import _ablate, _check_model, _sender_hook_value, graph_names, split_edge


def naive_logit_diff(answers: torch.Tensor, wrong: torch.Tensor, positions) -> callable:
    """-(logit[answer] - logit[wrong]) at the given positions, averaged over prompts and positions."""
    positions = list(positions)

    def metric(logits: torch.Tensor) -> float:
        at = logits[:, positions]  # [n, P, V]
        right = at.gather(-1, answers[..., None])[..., 0]
        other = at.gather(-1, wrong[..., None])[..., 0]
        return float(-(right - other).mean().detach())

    return metric


def naive_edges(cfg, split_input: bool = False) -> list[str]:
    """Edge names in forward order; with split_input, ``input`` becomes ``tok_embed`` and ``pos_embed``."""
    _, _, edges = graph_names(cfg)
    if not split_input:
        return edges
    out = []
    for edge in edges:
        u, v = split_edge(edge)
        out += [f"tok_embed->{v}", f"pos_embed->{v}"] if u == "input" else [edge]
    return out


def _sender_value(cache, name: str) -> torch.Tensor:
    if name == "tok_embed":
        return cache["hook_embed"]
    if name == "pos_embed":
        return cache["hook_pos_embed"]
    return _sender_hook_value(cache, name)


def _receiver_hook(cfg, receiver: str) -> tuple[str, int | None]:
    """(hook name, head index or None) where receiver ``receiver`` reads its input."""
    if receiver == "logits":
        return f"blocks.{cfg.n_layers - 1}.hook_resid_post", None
    if receiver.startswith("m"):
        return f"blocks.{int(receiver[1:])}.hook_mlp_in", None
    head, x = receiver[:-1].split("<")
    layer_text, head_text = head[1:].split(".h")
    return f"blocks.{int(layer_text)}.hook_{x}_input", int(head_text)


def naive_edge_scores(
    model,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric,
    *,
    alphas=(1.0,),
    split_input: bool = False,
    ablation: str = "resample",
    eps: float = 1e-5,
) -> dict[str, float]:
    """{edge: score}: the finite-difference estimate of d metric / d t for every edge, averaged over
    the input interpolation points ``alphas`` (``(1.0,)``: EAP at the clean model)."""
    _check_model(model)
    cfg = model.cfg
    senders = ["tok_embed", "pos_embed"] if split_input else []
    senders += graph_names(cfg)[0] if not split_input else graph_names(cfg)[0][1:]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)
    # out*_u - out_u for every sender (the ablated value broadcasts over prompts for zero / mean)
    delta = {u: _ablate(_sender_value(corrupted_cache, u), ablation) - _sender_value(clean_cache, u) for u in senders}
    embed_star = {k: _ablate(corrupted_cache[k], ablation) for k in ("hook_embed", "hook_pos_embed")}
    embed_clean = {k: clean_cache[k] for k in ("hook_embed", "hook_pos_embed")}

    def metric_with(alpha: float, receiver: str, push: torch.Tensor) -> float:
        hook_name, head = _receiver_hook(cfg, receiver)

        def add(act, hook):
            act = act.clone()
            if head is None:
                act += push
            else:
                act[:, :, head] += push
            return act

        def interpolate(name):
            def hook(act, hook):
                return (embed_star[name] + alpha * (embed_clean[name] - embed_star[name])).expand_as(act).clone()

            return hook

        hooks = [(hook_name, add)]
        if alpha != 1.0:
            hooks += [(name, interpolate(name)) for name in ("hook_embed", "hook_pos_embed")]
        with torch.no_grad():
            return metric(model.run_with_hooks(clean, fwd_hooks=hooks))

    scores = {}
    for edge in naive_edges(cfg, split_input):
        u, v = split_edge(edge)
        total = 0.0
        for alpha in alphas:
            up = metric_with(alpha, v, eps * delta[u])
            down = metric_with(alpha, v, -eps * delta[u])
            total += (up - down) / (2 * eps)
        scores[edge] = total / len(alphas)
    return scores


def naive_metric_at_ablated_input(model, clean, corrupted, metric, ablation: str = "resample") -> float:
    """The metric with the clean prompts' embeddings replaced by their ablated values."""
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(corrupted)

        def replace(name):
            def hook(act, hook):
                return _ablate(corrupted_cache[name], ablation).expand_as(act).clone()

            return hook

        hooks = [(name, replace(name)) for name in ("hook_embed", "hook_pos_embed")]
        return metric(model.run_with_hooks(clean, fwd_hooks=hooks))
