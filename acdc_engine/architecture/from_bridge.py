"""``ModelSpec`` of a TransformerLens 4 ``TransformerBridge``.

Features come from the Hugging Face config (``families.read_hf_config``), since the bridge's own
config does not reliably describe them. Weights come through the bridge's TransformerLens-layout
properties (``blocks[L].attn.W_Q`` ..., ``mlp.W_in`` / ``W_gate`` / ``W_out``, ``embed.W_E``,
``unembed.W_U``: TransformerLens's conversion of fused and interleaved projections), norm weights
and epsilons from the Hugging Face norm modules the bridge wraps, rotary tables from the Hugging
Face model's own rotary embedding module (so every static rope variant matches). Norms are found
by the Hugging Face layers' attribute names, not the bridge's slot names (TransformerLens 3.9 calls
OLMo-2's post-norms ln1/ln2, 4.3 ln1_post/ln2_post). Every shape is checked against the config.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.families import read_hf_config
from acdc_engine.architecture.rotary import expand_half_table
from acdc_engine.architecture.spec import ModelSpec
from acdc_engine.core.errors import AcdcError

def _hf_module(component: Any) -> Any:
    """The Hugging Face module a bridge component wraps (the module itself if it is not wrapped)."""
    return getattr(component, "original_component", None) or component


def _model_name(bridge: Any) -> str:
    hf_config = bridge.original_model.config
    name = getattr(hf_config, "name_or_path", "") or getattr(bridge.cfg, "model_name", "") or "model"
    return str(name).rstrip("/").rsplit("/", 1)[-1]


def from_bridge(bridge: Any) -> ModelSpec:
    """The ``ModelSpec`` of ``bridge``, in its dtype, on its device, in eval mode, with its
    tokenizer; ``source`` is the bridge, ``reference_forward`` the Hugging Face model's own forward
    (``hf_logits``), which the self-check holds the engine to. AcdcError for an unsupported architecture or feature, or
    a bridge whose weights were processed (folded norms are not the model's own layout)."""
    hf_model = bridge.original_model
    hf_config = hf_model.config
    architecture = (getattr(hf_config, "architectures", None) or [type(hf_model).__name__])[0]
    name = _model_name(bridge)
    if getattr(bridge, "_weights_processed", False):
        raise AcdcError(
            f"model {name}: the bridge's weights were processed (LayerNorm folding / centring by "
            "enable_compatibility_mode or process_weights); boot it again and pass it unprocessed "
            "(enable_compatibility_mode(no_processing=True) is fine)"
        )
    read = read_hf_config(architecture, hf_config, name)
    W_E = bridge.embed.W_E
    features = dict(read.features)
    features["family"] = architecture
    features["dtype"] = W_E.dtype
    features["device"] = str(W_E.device)
    features["d_mlp"] = bridge.blocks[0].mlp.W_in.shape[-1]
    if architecture == "Gemma3ForCausalLM":
        features["embedding_scale"] = float(_hf_module(bridge.embed).embed_scale)
    features["norm_eps"] = _norm_eps(hf_model, read.norms, name)
    cfg = ArchitectureConfig(**features)
    spec = ModelSpec(cfg, getattr(bridge, "tokenizer", None), bridge).to(W_E.dtype).to(W_E.device)
    spec.reference_forward = functools.partial(hf_logits, bridge)
    with torch.no_grad():
        _copy_weights(spec, bridge, hf_model, read.norms)
        if cfg.positional_embedding_type == "rotary":
            spec.set_rotary_tables(_rotary_tables(spec, hf_model, read))
    return spec.eval()


@torch.no_grad()
def hf_logits(bridge: Any, tokens: Tensor) -> Tensor:
    """The logits [n, pos, d_vocab] of the Hugging Face model inside ``bridge`` by its own forward.

    Booting a bridge puts its components in place of the Hugging Face modules they wrap, inside
    the Hugging Face model itself, so even ``bridge.original_model(...)`` runs the bridge's code
    (which re-implements attention and can differ from the model: GPT-2 with
    ``scale_attn_weights=False``). While this runs, every wrapped module is put back where its
    wrapper stands (at every depth); the wrappers return when it ends, whatever happens.
    """
    hf_model = bridge.original_model
    swapped: list[tuple[Any, str, Any]] = []
    try:
        _unwrap(hf_model, swapped)
        device = next(hf_model.parameters()).device
        return hf_model(input_ids=tokens.to(device), use_cache=False).logits
    finally:
        for parent, child_name, wrapper in reversed(swapped):
            parent._modules[child_name] = wrapper


def _unwrap(module: Any, swapped: list[tuple[Any, str, Any]]) -> None:
    """Put back, below ``module``, each Hugging Face module a bridge component wraps, noting in
    ``swapped`` (parent, name, wrapper) what to restore."""
    for child_name, child in list(module._modules.items()):
        original = getattr(child, "original_component", None) if child is not None else None
        if original is not None:
            swapped.append((module, child_name, child))
            module._modules[child_name] = original
            child = original
        if child is not None:
            _unwrap(child, swapped)


def _hf_layers(hf_model: Any) -> tuple[list[Any], Any]:
    """The Hugging Face decoder layers (unwrapped from any bridge component) and the final norm."""
    base = _hf_module(hf_model.base_model)
    layers = getattr(base, "layers", None) or getattr(base, "h")
    final = next(getattr(base, n) for n in ("norm", "ln_f", "final_layer_norm") if getattr(base, n, None) is not None)
    return [_hf_module(layer) for layer in layers], _hf_module(final)


def _norm_children(module: Any) -> set[str]:
    return {n for n, child in module.named_children() if "norm" in type(_hf_module(child)).__name__.lower()}


def _norm_modules(hf_model: Any, norms: dict[str, str], name: str) -> dict[str, Any]:
    """{spec parameter prefix: HF norm module} for every norm, found by the Hugging Face layer's
    own attribute names (the bridge's slot names differ between TransformerLens versions);
    AcdcError where a layer has a norm the config does not explain, or lacks one it implies."""
    layers, final = _hf_layers(hf_model)
    found = {}
    for layer, module in enumerate(layers):
        attention = _hf_module(getattr(module, "self_attn", None) or getattr(module, "attn", None) or
                               getattr(module, "attention"))
        present = _norm_children(module) | {f"self_attn.{n}" for n in _norm_children(attention)}
        for slot, attribute in norms.items():
            found[f"blocks.{layer}.{slot}"] = _hf_module(getattr(module, attribute))
        for slot in ("q_norm", "k_norm"):
            if slot in _norm_children(attention):
                found[f"blocks.{layer}.attn.{slot}"] = _hf_module(getattr(attention, slot))
        unexplained = present - set(norms.values()) - {"self_attn.q_norm", "self_attn.k_norm"}
        if unexplained:
            raise AcdcError(f"model {name}: layer {layer} has norms its config does not explain: {sorted(unexplained)}")
    found["ln_final"] = final
    return found


def _eps(module: Any) -> float:
    for field in ("eps", "variance_epsilon"):
        if getattr(module, field, None) is not None:
            return float(getattr(module, field))
    raise AttributeError(f"{type(module).__name__} has no epsilon")


def _norm_eps(hf_model: Any, norms: dict[str, str], name: str) -> float:
    values = {_eps(module) for module in _norm_modules(hf_model, norms, name).values()}
    if len(values) != 1:
        raise _unsupported(name, f"norms with different epsilons {sorted(values)}")
    return values.pop()


def _unsupported(name: str, feature: str) -> AcdcError:
    return AcdcError(f"model {name}: {feature} is not supported by the edge-patching engine")


def _copy(target: Tensor, value: Tensor | None, what: str, name: str) -> None:
    """Copy ``value`` into ``target`` (None: leave zeros); AcdcError on a shape mismatch."""
    if value is None:
        return
    if tuple(value.shape) != tuple(target.shape):
        raise AcdcError(f"model {name}: {what} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
    target.copy_(value)


def _copy_weights(spec: ModelSpec, bridge: Any, hf_model: Any, norms: dict[str, str]) -> None:
    cfg, name = spec.cfg, spec.cfg.model_name
    _copy(spec.embedding.W_E, bridge.embed.W_E, "embed.W_E", name)
    if spec.pos_embedding is not None:
        _copy(spec.pos_embedding.W_pos, bridge.pos_embed.W_pos, "pos_embed.W_pos", name)
    _copy(spec.unembedding.W_U, bridge.unembed.W_U, "unembed.W_U", name)
    _copy(spec.unembedding.b_U, getattr(bridge.unembed, "b_U", None), "unembed.b_U", name)
    for layer, (block, source) in enumerate(zip(spec.blocks, bridge.blocks)):
        for weight in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"):
            _copy(getattr(block.attn, weight), getattr(source.attn, weight), f"blocks.{layer}.attn.{weight}", name)
        if block.mlp is not None:
            for weight in ("W_in", "b_in", "W_out", "b_out") + (("W_gate", "b_gate") if cfg.gated_mlp else ()):
                _copy(getattr(block.mlp, weight), getattr(source.mlp, weight, None), f"blocks.{layer}.mlp.{weight}", name)
            if not cfg.gated_mlp and getattr(source.mlp, "W_gate", None) is not None:
                raise AcdcError(f"model {name}: layer {layer}'s MLP has a gate, but its config implies a plain MLP")
        if cfg.post_norms and getattr(source.attn, "b_O", None) is not None and source.attn.b_O.any():
            raise _unsupported(name, "an attention output bias before a post-attention norm")
    modules = _norm_modules(hf_model, norms, name)
    expected_qk = {f"blocks.{layer}.attn.{slot}" for layer in range(cfg.n_layers) for slot in ("q_norm", "k_norm")}
    found_qk = {prefix for prefix in modules if prefix.endswith(("q_norm", "k_norm"))}
    if found_qk != (expected_qk if cfg.qk_norm else set()):
        raise AcdcError(f"model {name}: its q/k norm modules do not match its config (qk_norm={cfg.qk_norm})")
    for prefix, module in modules.items():
        target = spec.get_submodule(prefix)
        _copy(target.w, module.weight, f"{prefix}.weight", name)
        if target.kind == "LN":
            _copy(target.b, module.bias, f"{prefix}.bias", name)
        elif getattr(module, "bias", None) is not None:
            raise _unsupported(name, f"an RMSNorm with a bias ({prefix})")


def _rotary_tables(spec: ModelSpec, hf_model: Any, read: Any) -> list[tuple[Tensor, Tensor]]:
    """(cos, sin) [positions, rotary_dim] per layer, from the HF model's rotary embedding module."""
    cfg = spec.cfg
    rotary = _hf_module(hf_model.base_model.rotary_emb)
    positions = spec.rotary_cos.shape[1]
    device = spec.rotary_cos.device
    position_ids = torch.arange(positions, device=device)[None]
    dummy = torch.zeros(1, positions, cfg.d_head, dtype=cfg.dtype, device=device)
    kinds = read.rope_layer_types or (None,) * cfg.n_layers
    by_kind = {}
    for kind in dict.fromkeys(kinds):
        first, second = rotary(dummy, position_ids) if kind is None else rotary(dummy, position_ids, kind)
        if read.gptj_rotary:  # GPT-J's module returns (sin, cos), one value per rotated pair
            cos, sin = expand_half_table(second[0], "gptj"), expand_half_table(first[0], "gptj")
        else:
            cos, sin = first[0], second[0]
        if cos.shape != (positions, cfg.rotary_dim):
            factor = (getattr(hf_model.config, "rope_parameters", None) or {}).get("partial_rotary_factor")
            raise AcdcError(
                f"model {cfg.model_name}: its Hugging Face rotary module gives tables {cos.shape[-1]} wide, but its config "
                f"reads as rotating {cfg.rotary_dim} of each head's {cfg.d_head} dimensions (partial_rotary_factor={factor}); "
                "the engine cannot tell which the model applies, so it computes no circuit"
            )
        by_kind[kind] = (cos.to(cfg.dtype), sin.to(cfg.dtype))
    return [by_kind[kind] for kind in kinds]
