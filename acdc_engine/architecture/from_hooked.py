"""``ModelSpec`` of a TransformerLens 3 ``HookedTransformer``: its config's features and its weights.

The HookedTransformer's weights are taken as they are (already processed ones included: a model
loaded with LayerNorm folding has LNPre norms and folded weights, which compute the same logits).
Rotary tables are the model's own ``rotary_cos`` / ``rotary_sin`` buffers.
"""

from __future__ import annotations

from typing import Any

from acdc_engine.architecture.native import load_tl_state, tl_architecture
from acdc_engine.architecture.spec import ModelSpec


def from_hooked_transformer(model: Any) -> ModelSpec:
    """The ``ModelSpec`` of ``model`` (a HookedTransformer), in its dtype, on its device, in eval
    mode, with its tokenizer; ``source`` is ``model``. AcdcError naming any config feature that is
    not implemented."""
    config = dict(model.cfg.to_dict())
    cfg, extras = tl_architecture(config, model.cfg.model_name)
    weight = model.embed.W_E
    spec = ModelSpec(cfg, model.tokenizer, model, extras["rotary_bases"]).to(weight.dtype)
    load_tl_state(spec, model.state_dict(), extras["learned_norms"])
    return spec.to(weight.device).eval()
