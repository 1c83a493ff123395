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
    embeddings = [k for k in ("hook_embed", "hook_pos_embed") if k in clean_cache.keys()]  # no pos embed: rotary
    embed_star = {k: _ablate(corrupted_cache[k], ablation) for k in embeddings}
    embed_clean = {k: clean_cache[k] for k in embeddings}

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
            hooks += [(name, interpolate(name)) for name in embed_star]
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


# ----- gradients by autograd over plainly hooked passes (EAP-IG's other methods) -------------------
#
# Interpolated values are made with torch.lerp, as the engine makes them: a model that computes its
# norms in float32 (``upcast=float32``, e.g. the Llama family) rounds a float64 value to float32,
# and out* + alpha (out - out*) and lerp may differ in the last float64 bit, which can flip that
# rounding and move a score by ~1e-7 relative.


def naive_logit_diff_tensor(answers: torch.Tensor, wrong: torch.Tensor, positions) -> callable:
    """``naive_logit_diff`` as a differentiable tensor, for autograd."""
    positions = list(positions)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        at = logits[:, positions]
        return -(at.gather(-1, answers[..., None])[..., 0] - at.gather(-1, wrong[..., None])[..., 0]).mean()

    return metric


def _plain_caches(model, clean, corrupted):
    """The caches of plain runs on the clean and on the corrupted prompts."""
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)
    return clean_cache, corrupted_cache


def naive_gradients(model, tokens, metric, replace=None) -> dict:
    """{receiver hook name: d metric / d (that hook's activation)} of one hooked pass of ``tokens``
    (a zero leaf added at every receiver hook), with the hooks in ``replace`` {hook name: tensor}
    overwritten by those constants. Zero where the metric does not depend on a hook."""
    cfg = model.cfg
    names = [f"blocks.{layer}.hook_{x}_input" for layer in range(cfg.n_layers) for x in "qkv"]
    if not cfg.attn_only:
        names += [f"blocks.{layer}.hook_mlp_in" for layer in range(cfg.n_layers)]
    names.append(f"blocks.{cfg.n_layers - 1}.hook_resid_post")
    leaves = {}

    def add_leaf(act, hook):
        leaves[hook.name] = torch.zeros_like(act, requires_grad=True)
        return act + leaves[hook.name]

    def constant(value):
        def hook(act, hook):
            return value.detach().expand_as(act).clone()

        return hook

    hooks = [(name, constant(value)) for name, value in (replace or {}).items()] + [(name, add_leaf) for name in names]
    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=hooks))
        grads = torch.autograd.grad(value, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads)}


def _receiver_gradient(cfg, gradients: dict, receiver: str) -> torch.Tensor:
    hook_name, head = _receiver_hook(cfg, receiver)
    grad = gradients[hook_name]
    return grad if head is None else grad[:, :, head]


def naive_scores_from_gradients(model, clean, corrupted, runs, split_input=False, ablation="resample") -> dict:
    """{edge: sum over prompts, positions, d_model of (out*_u - out_u) * mean_runs g_v}, where each
    run's gradients are ``naive_gradients``' dict."""
    cfg = model.cfg
    clean_cache, corrupted_cache = _plain_caches(model, clean, corrupted)
    mean = {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}
    scores = {}
    for edge in naive_edges(cfg, split_input):
        u, v = split_edge(edge)
        delta = _ablate(_sender_value(corrupted_cache, u), ablation) - _sender_value(clean_cache, u)
        scores[edge] = float((delta * _receiver_gradient(cfg, mean, v)).sum())
    return scores


def naive_input_ig_scores(model, clean, corrupted, metric, alphas, split_input=False, ablation="resample") -> dict:
    """EAP-IG-inputs by autograd: the embeddings (``hook_embed``, ``hook_pos_embed``) set to
    out* + alpha (out - out*) at each point of ``alphas``."""
    clean_cache, corrupted_cache = _plain_caches(model, clean, corrupted)
    embeddings = [k for k in ("hook_embed", "hook_pos_embed") if k in clean_cache.keys()]
    runs = []
    for alpha in alphas:
        replace = {}
        for k in embeddings:
            star = _ablate(corrupted_cache[k], ablation).expand_as(clean_cache[k])
            replace[k] = torch.lerp(star, clean_cache[k], alpha)  # the engine's rounding (see below)
        runs.append(naive_gradients(model, clean, metric, replace))
    return naive_scores_from_gradients(model, clean, corrupted, runs, split_input, ablation)


def naive_ig_activations_scores(model, clean, corrupted, metric, steps, split_input=False, ablation="resample") -> dict:
    """EAP-IG-activations by autograd: for each node group (the embeddings; ``blocks.L.attn.hook_result``;
    ``blocks.L.hook_mlp_out``) and k = 1 .. steps, one pass with that group's hooks overwritten by
    out* + (k / steps)(out - out*); every edge averages its receiver's gradient over all the passes."""
    cfg = model.cfg
    clean_cache, corrupted_cache = _plain_caches(model, clean, corrupted)
    groups = [[k for k in ("hook_embed", "hook_pos_embed") if k in clean_cache.keys()]]
    for layer in range(cfg.n_layers):
        groups.append([f"blocks.{layer}.attn.hook_result"])
        if not cfg.attn_only:
            groups.append([f"blocks.{layer}.hook_mlp_out"])
    runs = []
    for group in groups:
        for k in range(1, steps + 1):
            replace = {}
            for name in group:
                star = _ablate(corrupted_cache[name], ablation).expand_as(clean_cache[name])
                replace[name] = torch.lerp(star, clean_cache[name], k / steps)
            runs.append(naive_gradients(model, clean, metric, replace))
    return naive_scores_from_gradients(model, clean, corrupted, runs, split_input, ablation)


def naive_clean_corrupted_scores(model, clean, corrupted, metric, split_input=False) -> dict:
    """clean-corrupted by autograd: the gradients of the plain pass on the clean prompts and of the
    plain pass on the corrupted prompts, averaged (resample ablation)."""
    runs = [naive_gradients(model, clean, metric), naive_gradients(model, corrupted, metric)]
    return naive_scores_from_gradients(model, clean, corrupted, runs, split_input)


def naive_exact_scores(model, clean, corrupted, metric, ablation="resample") -> dict:
    """{edge or head input: metric(full model without it) - metric(full model)}, one hooked pass
    of ``naive_patched_logits`` per candidate."""
    from naive_reference import head_input_names, naive_patched_logits

    full = metric(naive_patched_logits(model, clean, corrupted, [], ablation=ablation))
    scores = {}
    for edge in graph_names(model.cfg)[2]:
        scores[edge] = metric(naive_patched_logits(model, clean, corrupted, [edge], ablation=ablation)) - full
    for name in head_input_names(model.cfg):
        scores[name] = metric(naive_patched_logits(model, clean, corrupted, [], [name], ablation=ablation)) - full
    return scores
