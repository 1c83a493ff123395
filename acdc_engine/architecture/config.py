"""``ArchitectureConfig``: everything about a decoder-only transformer's forward pass, one field per feature.

Field names follow TransformerLens's ``HookedTransformerConfig`` where TransformerLens has the
concept (``n_layers``, ``d_head``, ``normalization_type``, ...), so code written against a
TransformerLens config reads this one unchanged. The remaining fields name the features that
Hugging Face families add on top of GPT-2; their defaults are GPT-2's behaviour, and
``features()`` lists the fields that differ from those defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

NORMALIZATION_TYPES = ("LN", "RMS", None)
POSITIONAL_EMBEDDING_TYPES = ("standard", "rotary")
QK_NORMS = (None, "head", "full")
ROTARY_LAYOUTS = ("neox", "gptj")
ATTENTION_DIRS = ("causal", "bidirectional")
UPCASTS = ("promote", "float32")
# the activation names Hugging Face and TransformerLens use, by the function they denote
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_fast",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


@dataclass(frozen=True)
class ArchitectureConfig:
    """A model's shape and forward-pass features.

    Shapes: ``d_vocab`` input tokens, ``d_vocab_out`` logits (the same but for tracr models);
    ``d_head`` is the width of one head's q, k and v; ``d_mlp`` the MLP's hidden width
    (None for attention-only models); ``n_key_value_heads`` <= ``n_heads`` (grouped-query
    attention when smaller; it divides ``n_heads``).

    Features (defaults are GPT-2's):
        norm_eps: epsilon of every norm (added to the variance).
        norm_offset: RMSNorm scale is ``norm_offset + w`` (Gemma: 1.0).
        pre_norms: a norm before attention (ln1) and before the MLP (ln2); False: OLMo-2.
        shared_pre_norm: the MLP reads ln1's output (GPT-J: one norm per parallel block).
        post_norms: an RMSNorm on the attention output and one on the MLP output (Gemma-2/3, OLMo-2).
        final_norm: a norm before the unembedding.
        qk_norm: RMSNorm on q and k: "head" over each head's d_head (Qwen3, Gemma-3), "full"
            over all heads' q (all key/value heads' k) together (OLMo-2), None.
        rotary_dim: how many of each head's first dimensions are rotated (rotary models).
        rotary_layout: "neox" (rotate halves) or "gptj" (rotate interleaved pairs).
        attn_scale: attention scores are divided by it (sqrt(d_head) by default).
        attn_softcap, logit_softcap: ``cap * tanh(s / cap)`` on attention scores / logits; None = off.
        sliding_window: per layer, None (global attention) or the window w: query i sees keys
            j with i - w < j <= i. An empty tuple means every layer is global.
        embedding_scale: the token embedding is multiplied by it (Gemma: sqrt(d_model)).
        upcast: the dtype RMSNorm statistics and the attention softmax compute in: "promote"
            (at least float32; float64 stays float64) or "float32" (always, as Hugging Face does).
        family: the source architecture's name (e.g. "LlamaForCausalLM"), or "native".
    """

    model_name: str
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None = None
    d_vocab_out: int | None = None
    n_key_value_heads: int | None = None
    attn_only: bool = False
    normalization_type: str | None = "LN"
    act_fn: str | None = "gelu_new"
    positional_embedding_type: str = "standard"
    parallel_attn_mlp: bool = False
    gated_mlp: bool = False
    attention_dir: str = "causal"
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    norm_eps: float = 1e-5
    norm_offset: float = 0.0
    pre_norms: bool = True
    shared_pre_norm: bool = False
    post_norms: bool = False
    final_norm: bool = True
    qk_norm: str | None = None
    rotary_dim: int | None = None
    rotary_layout: str = "neox"
    attn_scale: float | None = None
    attn_softcap: float | None = None
    logit_softcap: float | None = None
    sliding_window: tuple[int | None, ...] = ()
    embedding_scale: float = 1.0
    upcast: str = "promote"
    family: str = "native"

    def __post_init__(self) -> None:
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        if self.n_key_value_heads is None:
            object.__setattr__(self, "n_key_value_heads", self.n_heads)
        if self.attn_scale is None:
            object.__setattr__(self, "attn_scale", self.d_head**0.5)
        if not self.sliding_window:
            object.__setattr__(self, "sliding_window", (None,) * self.n_layers)
        object.__setattr__(self, "sliding_window", tuple(self.sliding_window))
        if self.positional_embedding_type == "rotary" and self.rotary_dim is None:
            object.__setattr__(self, "rotary_dim", self.d_head)
        self._check()

    def _check(self) -> None:
        problems = []
        if self.normalization_type not in NORMALIZATION_TYPES:
            problems.append(f"normalization_type {self.normalization_type!r} (expected one of {NORMALIZATION_TYPES})")
        if self.positional_embedding_type not in POSITIONAL_EMBEDDING_TYPES:
            problems.append(f"positional_embedding_type {self.positional_embedding_type!r}")
        if self.qk_norm not in QK_NORMS:
            problems.append(f"qk_norm {self.qk_norm!r} (expected one of {QK_NORMS})")
        if self.upcast not in UPCASTS:
            problems.append(f"upcast {self.upcast!r} (expected one of {UPCASTS})")
        if self.rotary_layout not in ROTARY_LAYOUTS:
            problems.append(f"rotary_layout {self.rotary_layout!r} (expected one of {ROTARY_LAYOUTS})")
        if self.attention_dir not in ATTENTION_DIRS:
            problems.append(f"attention_dir {self.attention_dir!r} (expected one of {ATTENTION_DIRS})")
        if self.attention_dir == "bidirectional" and any(w is not None for w in self.sliding_window):
            problems.append("a sliding window on bidirectional attention")
        if self.n_heads % self.n_key_value_heads:
            problems.append(f"n_key_value_heads {self.n_key_value_heads} does not divide n_heads {self.n_heads}")
        if len(self.sliding_window) != self.n_layers:
            problems.append(f"sliding_window has {len(self.sliding_window)} entries for {self.n_layers} layers")
        if not self.attn_only and self.act_fn not in ACTIVATIONS:
            problems.append(f"activation function {self.act_fn!r} (supported: {', '.join(ACTIVATIONS)})")
        if not self.attn_only and not self.d_mlp:
            problems.append("d_mlp is missing for a model with MLPs")
        if self.rotary_dim is not None and (self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head):
            problems.append(f"rotary_dim {self.rotary_dim} (must be even and in 1..d_head={self.d_head})")
        if self.post_norms and self.normalization_type != "RMS":
            problems.append("post-sublayer norms other than RMSNorm")
        if problems:
            from acdc_engine.core.errors import AcdcError

            raise AcdcError(f"model {self.model_name}: unsupported architecture config: {'; '.join(problems)}")

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_key_value_heads

    @property
    def activation(self) -> str | None:
        """The activation function's canonical name ("gelu", "gelu_tanh", "gelu_fast", "silu", "relu")."""
        return None if self.attn_only else ACTIVATIONS[self.act_fn]

    def features(self) -> list[str]:
        """The features that differ from a GPT-2-style model, as ``name=value`` strings (for reports)."""
        found = []
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in (
            "normalization_type", "positional_embedding_type", "parallel_attn_mlp", "gated_mlp", "norm_offset",
            "attention_dir", "pre_norms", "shared_pre_norm", "post_norms", "final_norm", "qk_norm", "attn_softcap",
            "logit_softcap", "embedding_scale", "upcast",
        ):
            if getattr(self, name) != defaults[name]:
                found.append(f"{name}={getattr(self, name)}")
        if self.attn_only:
            found.append("attn_only=True")
        if self.act_fn != defaults["act_fn"] and not self.attn_only:
            found.append(f"act_fn={self.act_fn}")
        if self.n_key_value_heads != self.n_heads:
            found.append(f"n_key_value_heads={self.n_key_value_heads}")
        if self.positional_embedding_type == "rotary":
            if self.rotary_dim != self.d_head:
                found.append(f"rotary_dim={self.rotary_dim}")
            found.append(f"rotary_layout={self.rotary_layout}")
        if abs(self.attn_scale - self.d_head**0.5) > 1e-12 * self.attn_scale:
            found.append(f"attn_scale={self.attn_scale:g}")
        if any(w is not None for w in self.sliding_window):
            found.append(f"sliding_window={list(self.sliding_window)}")
        return found
