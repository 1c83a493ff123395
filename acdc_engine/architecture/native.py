"""``ModelSpec``s from TransformerLens-layout weights: shipped models, tracr models, random models.

``config`` uses ``HookedTransformerConfig`` field names and defaults; every field that changes the
forward pass is mapped to an ``ArchitectureConfig`` feature or refused by name (AcdcError). The
state dict uses ``HookedTransformer``'s parameter names (``embed.W_E``, ``blocks.0.attn.W_Q``,
``blocks.0.ln1.w``, ``unembed.W_U``, ...); keys ending in ``.IGNORE`` or ``.mask`` are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.spec import ModelSpec
from acdc_engine.core.errors import AcdcError

# HookedTransformerConfig fields that do not change the logits (hooks, bookkeeping, initialisation)
INERT_FIELDS = frozenset({
    "model_name", "device", "dtype", "seed", "init_mode", "init_weights", "initializer_range", "n_devices",
    "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "use_hook_tokens",
    "default_prepend_bos", "tokenizer_prepends_bos", "tokenizer_name", "from_checkpoint", "checkpoint_index",
    "checkpoint_label_type", "checkpoint_value", "n_params", "original_architecture", "trust_remote_code",
    "layer_norm_folding", "uses_rms_norm", "tie_word_embeddings", "decoder_start_token_id",
    "ungroup_grouped_query_attention", "train_seq_length", "experts_per_token", "norm_topk_prob",
    "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor", "NTK_by_parts_factor", "NTK_original_ctx_len",
    "yarn_factor", "yarn_attention_factor", "yarn_beta_fast", "yarn_beta_slow",
    "yarn_original_max_position_embeddings", "yarn_truncate", "yarn_global_attn_only",
})
# fields of features not implemented, with the value that means "off"
REFUSED_FIELDS = {
    "num_experts": None, "clip_qkv": None, "use_logn_attn": False, "use_dynamic_ntk_rope": False,
    "scale_attn_by_inverse_layer_idx": False, "post_embedding_ln": False, "load_in_4bit": False,
    "quantization_method": None, "relative_attention_max_distance": None, "relative_attention_num_buckets": None,
    "use_NTK_by_parts_rope": False, "use_yarn_rope": False, "use_attention_sinks": False,
    "rotary_scaling_factor": 1.0,
}
MAPPED_FIELDS = frozenset({
    "n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx", "act_fn",
    "normalization_type", "attn_only", "positional_embedding_type", "n_key_value_heads", "gated_mlp",
    "parallel_attn_mlp", "eps", "final_rms", "use_attn_scale", "attn_scale", "use_qk_norm", "attention_dir",
    "rotary_dim", "rotary_base", "rotary_base_local", "rotary_adjacent_pairs", "use_local_attn", "window_size",
    "attn_types", "use_normalization_before_and_after", "attn_scores_soft_cap", "output_logits_soft_cap",
})
NORMALIZATIONS = {"LN": ("LN", True), "LNPre": ("LN", False), "RMS": ("RMS", True), "RMSPre": ("RMS", False), None: (None, False)}
RENAMES = (("embed.", "embedding."), ("pos_embed.", "pos_embedding."), ("unembed.", "unembedding."))


def _positive(value: Any) -> float | None:
    """TransformerLens writes "off" as -1 (or None): a soft-cap or scale only when > 0."""
    return None if value is None or value <= 0 else float(value)


def _check_fields(config: Mapping[str, Any], name: str) -> None:
    """AcdcError for a field no table above knows, a refused feature switched on, or a missing size."""
    unknown = sorted(set(config) - INERT_FIELDS - MAPPED_FIELDS - set(REFUSED_FIELDS))
    if unknown:
        raise AcdcError(f"model {name}: config field(s) not understood: {', '.join(unknown)}")
    for field, off in REFUSED_FIELDS.items():
        if field in config and config[field] != off:
            raise AcdcError(
                f"model {name}: {field}={config[field]!r} is not supported by the edge-patching engine"
            )
    for field in ("n_layers", "d_model", "d_head", "n_ctx"):
        if field not in config:
            raise AcdcError(f"model {name}: config lacks {field}")


def _normalization(config: Mapping[str, Any], name: str) -> tuple[str | None, bool]:
    """(``ArchitectureConfig.normalization_type``: "LN", "RMS" or None; whether the norms have
    learned weights) of ``normalization_type`` (default "LN"), checked against ``final_rms``."""
    normalization = config.get("normalization_type", "LN")
    if normalization not in NORMALIZATIONS:
        raise AcdcError(f"model {name}: normalization_type {normalization!r} is not supported (LN, LNPre, RMS, RMSPre, None)")
    kind, learned = NORMALIZATIONS[normalization]
    if config.get("final_rms") and kind != "RMS":
        raise AcdcError(f"model {name}: final_rms=True with normalization_type {normalization!r} is not supported")
    return kind, learned


def _positional_embedding(config: Mapping[str, Any], name: str) -> str:
    """``positional_embedding_type`` (default "standard"): "standard" or "rotary", else AcdcError."""
    positional = config.get("positional_embedding_type", "standard")
    if positional not in ("standard", "rotary"):
        raise AcdcError(
            f"model {name}: positional_embedding_type {positional!r} is not supported "
            "by the edge-patching engine (standard, rotary)"
        )
    return positional


def _sliding_windows(config: Mapping[str, Any], name: str, n_layers: int) -> tuple[int | None, ...]:
    """Each layer's attention window in tokens, [n_layers]: ``window_size`` for a "local" entry of
    ``attn_types`` when ``use_local_attn``, None (global attention) otherwise."""
    if not config.get("use_local_attn"):
        return (None,) * n_layers
    types = config.get("attn_types")
    if not types or len(types) != n_layers or config.get("window_size") is None:
        raise AcdcError(f"model {name}: use_local_attn needs window_size and one attn_types entry per layer")
    return tuple(config["window_size"] if t == "local" else None for t in types)


def _attention_scale(config: Mapping[str, Any]) -> float | None:
    """The divisor of the attention scores: 1.0 when ``use_attn_scale`` is off, else ``attn_scale``
    when > 0, else None (the default, sqrt(d_head))."""
    scale = _positive(config.get("attn_scale", -1.0))
    return scale if config.get("use_attn_scale", True) else 1.0


def _rotary_bases(config: Mapping[str, Any], windows: Sequence[int | None]) -> list[float]:
    """Each layer's rotary base, [n_layers]: ``rotary_base_local`` (when given) for a layer with a
    sliding window, ``rotary_base`` (default 10000) otherwise."""
    base = float(config.get("rotary_base", 10000))
    local_base = config.get("rotary_base_local")
    return [float(local_base) if local_base is not None and w is not None else base for w in windows]


def _vocab_sizes(config: Mapping[str, Any], name: str) -> tuple[int, int | None]:
    """(``d_vocab``, ``d_vocab_out`` or None when it is -1 or absent: the same as ``d_vocab``);
    AcdcError when ``d_vocab`` is -1 or absent."""
    d_vocab = config.get("d_vocab", -1)
    if d_vocab in (-1, None):
        raise AcdcError(f"model {name}: config lacks d_vocab")
    d_vocab_out = config.get("d_vocab_out", -1)
    return d_vocab, None if d_vocab_out in (-1, None) else d_vocab_out


def tl_architecture(config: Mapping[str, Any], name: str) -> tuple[ArchitectureConfig, dict[str, Any]]:
    """The ``ArchitectureConfig`` for a HookedTransformerConfig-style ``config``, and the loading
    details it implies: ``rotary_bases`` (per layer), ``learned_norms`` (False for LNPre/RMSPre).

    AcdcError naming the field for an unknown field, a feature that is not implemented, or a bad value.
    """
    config = dict(config)
    _check_fields(config, name)
    normalization, learned_norms = _normalization(config, name)
    positional = _positional_embedding(config, name)
    n_layers, d_model, d_head = config["n_layers"], config["d_model"], config["d_head"]
    n_heads = config.get("n_heads", -1)
    n_heads = d_model // d_head if n_heads in (-1, None) else n_heads
    attn_only = bool(config.get("attn_only", False))
    windows = _sliding_windows(config, name, n_layers)
    attn_scale, rotary_bases = _attention_scale(config), _rotary_bases(config, windows)
    d_vocab, d_vocab_out = _vocab_sizes(config, name)
    cfg = ArchitectureConfig(
        model_name=name,
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_head,
        d_vocab=d_vocab,
        d_vocab_out=d_vocab_out,
        n_ctx=config["n_ctx"],
        d_mlp=None if attn_only else (config.get("d_mlp") or 4 * d_model),
        n_key_value_heads=config.get("n_key_value_heads"),
        attn_only=attn_only,
        normalization_type=normalization,
        act_fn=None if attn_only else config.get("act_fn", "relu"),
        positional_embedding_type=positional,
        parallel_attn_mlp=bool(config.get("parallel_attn_mlp", False)),
        gated_mlp=bool(config.get("gated_mlp", False)),
        attention_dir=config.get("attention_dir", "causal"),
        norm_eps=float(config.get("eps", 1e-5)),
        post_norms=bool(config.get("use_normalization_before_and_after", False)),
        qk_norm="head" if config.get("use_qk_norm") else None,
        rotary_dim=config.get("rotary_dim"),
        rotary_layout="gptj" if config.get("rotary_adjacent_pairs") else "neox",
        attn_scale=attn_scale,
        attn_softcap=_positive(config.get("attn_scores_soft_cap", -1.0)),
        logit_softcap=_positive(config.get("output_logits_soft_cap", -1.0)),
        sliding_window=windows,
        family="native",
    )
    return cfg, {"rotary_bases": rotary_bases, "learned_norms": learned_norms}


def _spec_key(tl_key: str) -> str:
    """The ``ModelSpec`` parameter name of TransformerLens's ``tl_key``."""
    for old, new in RENAMES:
        if tl_key.startswith(old):
            return new + tl_key[len(old):]
    return tl_key.replace(".attn._W_", ".attn.W_").replace(".attn._b_", ".attn.b_")


def load_tl_state(spec: ModelSpec, state: Mapping[str, Tensor], learned_norms: bool = True) -> ModelSpec:
    """Copy TransformerLens-named weights into ``spec`` (in place; returns it).

    Every weight of ``spec`` must be given, except the rotary tables (TransformerLens's per-layer
    ``blocks.L.attn.rotary_cos`` / ``rotary_sin`` replace the default ones when given), the gate
    bias ``mlp.b_gate`` (TransformerLens has none: zero when absent) and, for LNPre/RMSPre models,
    the norms' weights (which must then be absent). A gated MLP's ``b_in`` must be zero
    (TransformerLens adds it after the gate product, a ModelSpec before). AcdcError naming the first
    missing, unexpected or misshapen weight.
    """
    name = spec.cfg.model_name
    targets = dict(spec.named_parameters())
    optional = {key for key in targets if key.endswith("mlp.b_gate")}
    norms = {key for key in targets if key.rsplit(".", 2)[-2].startswith("ln")}
    if not learned_norms:
        optional |= norms
    given = {}
    tables: dict[int, dict[str, Tensor]] = {}
    for tl_key, value in state.items():
        if tl_key.endswith((".IGNORE", ".mask")):
            continue
        parts = tl_key.split(".")
        if len(parts) == 4 and parts[0] == "blocks" and parts[2] == "attn" and parts[3] in ("rotary_cos", "rotary_sin"):
            if spec.cfg.positional_embedding_type != "rotary":
                raise AcdcError(f"model {name}: unexpected weight {tl_key} for a model without rotary embeddings")
            tables.setdefault(int(parts[1]), {})[parts[3]] = value[: spec.rotary_cos.shape[1]]
            continue
        key = _spec_key(tl_key)
        if key not in targets or (not learned_norms and key in norms):
            raise AcdcError(f"model {name}: unexpected weight {tl_key} for this config")
        if tuple(value.shape) != tuple(targets[key].shape):
            raise AcdcError(
                f"model {name}: weight {tl_key} has shape {tuple(value.shape)}, expected {tuple(targets[key].shape)}"
            )
        given[key] = value
        if spec.cfg.gated_mlp and key.endswith("mlp.b_in") and value.any():
            raise AcdcError(
                f"model {name}: gated MLP with a nonzero {tl_key}: TransformerLens adds b_in after the gate "
                "product, which the edge-patching engine does not support"
            )
    missing = sorted(set(targets) - set(given) - optional)
    if missing:
        raise AcdcError(f"model {name}: weights missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for key, value in given.items():
            targets[key].copy_(value)
    if tables:
        if sorted(tables) != list(range(spec.cfg.n_layers)) or any(len(t) != 2 for t in tables.values()):
            raise AcdcError(f"model {name}: rotary_cos and rotary_sin must be given for every layer or none")
        dtype = spec.rotary_cos.dtype
        spec.set_rotary_tables([(tables[L]["rotary_cos"].to(dtype), tables[L]["rotary_sin"].to(dtype))
                                for L in range(spec.cfg.n_layers)])
    return spec


def _state_dtype(state: Mapping[str, Tensor]) -> tuple[torch.dtype, torch.device]:
    """(dtype, device) of the first floating-point weight of ``state``; float32 on the CPU if none."""
    for value in state.values():
        if value.is_floating_point():
            return value.dtype, value.device
    return torch.float32, torch.device("cpu")


def from_tl_weights(
    config: Mapping[str, Any], state_dict: Mapping[str, Tensor], tokenizer: Any = None, name: str | None = None
) -> ModelSpec:
    """The ``ModelSpec`` of TransformerLens-layout weights, in eval mode, in the weights' dtype and
    on their device. ``name`` defaults to the config's ``model_name``."""
    name = name or config.get("model_name") or "custom"
    cfg, extras = tl_architecture(config, name)
    dtype, device = _state_dtype(state_dict)
    spec = ModelSpec(cfg, tokenizer, rotary_bases=extras["rotary_bases"]).to(dtype)
    load_tl_state(spec, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()},
                  extras["learned_norms"])
    return spec.to(device).eval()


def _dtype(value: Any) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    dtypes = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if value not in dtypes:
        raise AcdcError(f"unknown dtype {value!r}; choose one of {', '.join(dtypes)}")
    return dtypes[value]


def random_model(config: Mapping[str, Any], seed: int) -> ModelSpec:
    """A ``ModelSpec`` of ``config`` (HookedTransformerConfig fields; ``dtype`` honoured, default
    float32) with random weights, in eval mode; the same ``config`` and ``seed`` give the same model.

    Matrices are N(0, 0.8 / sqrt(d_model)) (TransformerLens's GPT-2 initialisation); biases are
    N(0, 0.3) and learned norm weights 1 + N(0, 0.3), so neither hides behind 0 or 1.
    """
    name = config.get("model_name") or "random"
    cfg, extras = tl_architecture(config, name)
    spec = ModelSpec(cfg, rotary_bases=extras["rotary_bases"]).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    std = 0.8 / cfg.d_model**0.5
    with torch.no_grad():
        for key, param in sorted(spec.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            leaf = key.rsplit(".", 1)[-1]
            is_norm = leaf in ("w", "b") and key.rsplit(".", 2)[-2].endswith(("ln1", "ln2", "ln1_post", "ln2_post", "ln_final", "q_norm", "k_norm"))
            if is_norm and not extras["learned_norms"]:
                continue
            if leaf == "w":
                param.copy_(1.0 - cfg.norm_offset + 0.3 * noise)
            elif leaf.startswith("b"):
                param.copy_(0.3 * noise)
            else:
                param.copy_(std * noise)
    return spec.to(_dtype(config.get("dtype", torch.float32))).eval()
