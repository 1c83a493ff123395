"""Per Hugging Face architecture: which ``ArchitectureConfig`` features its config turns on.

Every feature is read from the Hugging Face config itself (transformers' field names), never from
a TransformerLens config, and read as the Hugging Face class reads it: a field the class stores
but never applies is ignored here too (``sliding_window`` on Llama, Gemma and OLMo-2;
``partial_rotary_factor`` everywhere but GPT-NeoX and Phi-3; ``attn_logit_softcapping`` on
Gemma-3), and every field of a supported family that changes the forward pass is either mapped
here or refused by name (``AcdcError`` naming the model, the field and its value). The self-check
(``acdc_engine.patching.self_check``) then holds the engine to the Hugging Face model's own forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acdc_engine.core.errors import AcdcError

# rope types whose cos/sin tables are fixed at construction (the others depend on the sequence length)
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
SLIDING, FULL = "sliding_attention", "full_attention"


@dataclass(frozen=True)
class HFArchitecture:
    """What a Hugging Face config says about its model's forward pass.

    features: ``ArchitectureConfig`` fields (all but the weights' dtype and device).
    norms: {ModelSpec norm slot GEMMA2_NORMS: the Hugging Face decoder
        layer's attribute holding that norm}; q/k norms are ``self_attn.q_norm`` / ``k_norm``.
    rope_layer_types: for rotary models, the key the HF rotary module takes per layer (None:
        one table for every layer).
    gptj_rotary: the HF rotary module returns GPT-J's (sin, cos) half tables.
    """

    features: dict[str, Any]
    norms: dict[str, str]
    rope_layer_types: tuple[str, ...] | None = None
    gptj_rotary: bool = False


def _refuse(name: str, feature: str) -> AcdcError:
    return AcdcError(f"model {name}: {feature} is not supported by the edge-patching engine")


def _check_rope(name: str, parameters: dict[str, Any] | None, field: str = "rope_parameters") -> None:
    rope_type = (parameters or {}).get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise _refuse(name, f"{field}.rope_type='{rope_type}' (its tables depend on the sequence length; supported: "
                            f"{', '.join(STATIC_ROPE_TYPES)})")


def _head_dim(hf: Any) -> int:
    return getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads


def _partial_rotary(hf: Any) -> float:
    parameters = getattr(hf, "rope_parameters", None) or {}
    return float(parameters.get("partial_rotary_factor", getattr(hf, "partial_rotary_factor", 1.0)))


def _windows(name: str, hf: Any, windows: str) -> tuple[int | None, ...]:
    """Sliding window per layer, as the class reads it: ``windows`` "per_layer": ``sliding_window``
    on the layers ``layer_types`` calls sliding (refused without a window: the class cannot run
    that); "flat": ``sliding_window`` on every layer; "none": the class applies no window
    (whatever ``sliding_window`` says)."""
    n = hf.num_hidden_layers
    window = getattr(hf, "sliding_window", None)
    if windows == "none":
        return (None,) * n
    if windows == "flat":
        return (window,) * n
    types = getattr(hf, "layer_types", None) or [FULL] * n
    for kind in types:
        if kind not in (SLIDING, FULL):
            raise _refuse(name, f"layer_types entry '{kind}'")
    if SLIDING in types and window is None:
        raise _refuse(name, "sliding_window=None with sliding_attention layers in layer_types (the Hugging Face model cannot run it)")
    return tuple(window if kind == SLIDING else None for kind in types)


def _common(name: str, hf: Any, upcast: str = "float32", **features: Any) -> dict[str, Any]:
    """The fields every family reads the same way; ``upcast`` "float32": the family's eager
    attention softmax (and RMSNorm, where it has one) computes in float32 whatever the dtype."""
    if getattr(hf, "use_bidirectional_attention", None):
        raise _refuse(name, "use_bidirectional_attention=True (bidirectional attention)")
    return dict(
        model_name=name,
        n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads,
        n_key_value_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        d_model=hf.hidden_size,
        d_head=_head_dim(hf),
        d_vocab=hf.vocab_size,
        n_ctx=hf.max_position_embeddings,
        upcast=upcast,
        **features,
    )


def _llama_like(name: str, hf: Any, windows: str = "none", partial_rotary: bool = False, **features: Any) -> dict[str, Any]:
    """Llama's layout: RMSNorm pre-norms, rotary (neox layout), gated MLP, causal attention.
    ``windows``: how the class reads ``sliding_window`` (``_windows``); ``partial_rotary``: whether
    it rotates only ``partial_rotary_factor`` of each head (GPT-NeoX, Phi-3; Llama and the others
    rotate the whole head whatever the field says)."""
    parameters = getattr(hf, "rope_parameters", None)
    _check_rope(name, parameters)
    if "act_fn" not in features:
        features["act_fn"] = hf.hidden_act
    return _common(
        name, hf,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=int(_head_dim(hf) * (_partial_rotary(hf) if partial_rotary else 1.0)),
        gated_mlp=True,
        sliding_window=_windows(name, hf, windows),
        **features,
    )


def _no_attention_output_bias(name: str, hf: Any) -> None:
    """Post-attention-norm families: an output bias would sit before the norm, which the engine's
    per-head contributions cannot carry (``ModelSpec.attention_out``)."""
    if getattr(hf, "attention_bias", False):
        raise _refuse(name, "attention_bias=True (an attention output bias before the post-attention norm)")


def _gpt2(name: str, hf: Any) -> HFArchitecture:
    if getattr(hf, "add_cross_attention", False):
        raise _refuse(name, "add_cross_attention=True (cross-attention)")
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise _refuse(name, "scale_attn_by_inverse_layer_idx=True")
    features = _common(
        name, hf, normalization_type="LN", act_fn=hf.activation_function,
        attn_scale=None if hf.scale_attn_weights else 1.0, upcast="promote",
    )
    return HFArchitecture(features, GPT2_NORMS)


def _gpt_neox(name: str, hf: Any) -> HFArchitecture:
    _check_rope(name, hf.rope_parameters)
    if not getattr(hf, "attention_bias", True):
        raise _refuse(name, "attention_bias=False (GPT-NeoX without attention biases; TransformerLens cannot wrap it)")
    features = _common(
        name, hf, normalization_type="LN", act_fn=hf.hidden_act, positional_embedding_type="rotary",
        rotary_dim=int(_head_dim(hf) * _partial_rotary(hf)), parallel_attn_mlp=bool(hf.use_parallel_residual),
    )
    return HFArchitecture(features, LLAMA_NORMS)


def _gptj(name: str, hf: Any) -> HFArchitecture:
    features = _common(
        name, hf, normalization_type="LN", act_fn=hf.activation_function, positional_embedding_type="rotary",
        rotary_dim=hf.rotary_dim or _head_dim(hf), rotary_layout="gptj", parallel_attn_mlp=True,
        shared_pre_norm=True,
    )
    return HFArchitecture(features, {"ln1": "ln_1"}, gptj_rotary=True)


def _llama(name: str, hf: Any) -> HFArchitecture:
    return HFArchitecture(_llama_like(name, hf), LLAMA_NORMS)


def _mistral(name: str, hf: Any) -> HFArchitecture:
    return HFArchitecture(_llama_like(name, hf, windows="flat"), LLAMA_NORMS)


def _qwen2(name: str, hf: Any) -> HFArchitecture:
    return HFArchitecture(_llama_like(name, hf, windows="per_layer"), LLAMA_NORMS)


def _qwen3(name: str, hf: Any) -> HFArchitecture:
    return HFArchitecture(_llama_like(name, hf, windows="per_layer", qk_norm="head"), LLAMA_NORMS)


def _gemma(name: str, hf: Any) -> HFArchitecture:
    features = _llama_like(name, hf, norm_offset=1.0, embedding_scale=hf.hidden_size**0.5)
    return HFArchitecture(features, LLAMA_NORMS)


def _gemma2(name: str, hf: Any) -> HFArchitecture:
    _no_attention_output_bias(name, hf)
    features = _llama_like(
        name, hf, windows="per_layer", act_fn=hf.hidden_activation, norm_offset=1.0,
        embedding_scale=hf.hidden_size**0.5, post_norms=True, attn_scale=hf.query_pre_attn_scalar**0.5,
        attn_softcap=hf.attn_logit_softcapping, logit_softcap=hf.final_logit_softcapping,
    )
    return HFArchitecture(features, GEMMA2_NORMS)


def _gemma3(name: str, hf: Any) -> HFArchitecture:
    parameters = hf.rope_parameters or {}
    layer_types = tuple(hf.layer_types)
    for kind in set(layer_types):
        _check_rope(name, parameters.get(kind), f"rope_parameters.{kind}")
        factor = (parameters.get(kind) or {}).get("partial_rotary_factor", getattr(hf, "partial_rotary_factor", 1.0))
        if factor not in (None, 1, 1.0):  # its rotary module narrows the tables, its attention then fails
            raise _refuse(name, f"partial_rotary_factor={factor} (the Hugging Face Gemma-3 model cannot run with it)")
    _no_attention_output_bias(name, hf)
    features = _common(
        name, hf, normalization_type="RMS", act_fn=hf.hidden_activation, positional_embedding_type="rotary",
        rotary_dim=_head_dim(hf), gated_mlp=True, sliding_window=_windows(name, hf, "per_layer"),
        norm_offset=1.0, post_norms=True, qk_norm="head", attn_scale=hf.query_pre_attn_scalar**0.5,
        logit_softcap=hf.final_logit_softcapping,  # attn_logit_softcapping: stored, never applied by the class
    )
    # embedding_scale comes from the model's own embedding module (see from_bridge)
    return HFArchitecture(features, GEMMA2_NORMS, rope_layer_types=layer_types)


def _olmo2(name: str, hf: Any) -> HFArchitecture:
    _no_attention_output_bias(name, hf)
    features = _llama_like(name, hf, pre_norms=False, post_norms=True, qk_norm="full")
    return HFArchitecture(features, OLMO2_NORMS)


def _phi3(name: str, hf: Any) -> HFArchitecture:
    return HFArchitecture(_llama_like(name, hf, windows="flat", partial_rotary=True), LLAMA_NORMS)


GPT2_NORMS = {"ln1": "ln_1", "ln2": "ln_2"}
LLAMA_NORMS = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}
GEMMA2_NORMS = {
    "ln1": "input_layernorm", "ln1_post": "post_attention_layernorm",
    "ln2": "pre_feedforward_layernorm", "ln2_post": "post_feedforward_layernorm",
}
OLMO2_NORMS = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}

FAMILIES = {
    "GPT2LMHeadModel": _gpt2,
    "GPTNeoXForCausalLM": _gpt_neox,
    "GPTJForCausalLM": _gptj,
    "LlamaForCausalLM": _llama,
    "MistralForCausalLM": _mistral,
    "Qwen2ForCausalLM": _qwen2,
    "Qwen3ForCausalLM": _qwen3,
    "GemmaForCausalLM": _gemma,
    "Gemma2ForCausalLM": _gemma2,
    "Gemma3ForCausalLM": _gemma3,
    "Olmo2ForCausalLM": _olmo2,
    "Phi3ForCausalLM": _phi3,
}


def read_hf_config(architecture: str, hf_config: Any, name: str) -> HFArchitecture:
    """The features of model ``name`` of Hugging Face class ``architecture`` from its config;
    AcdcError for an architecture not in ``FAMILIES`` or a feature not implemented."""
    if architecture not in FAMILIES:
        raise AcdcError(
            f"model architecture {architecture} is not supported by the edge-patching engine "
            f"(supported: {', '.join(FAMILIES)})"
        )
    return FAMILIES[architecture](name, hf_config)
