"""ModelSpec of a TransformerLens 3 HookedTransformer computes the HookedTransformer's logits."""

import pytest
import torch

try:
    from transformer_lens import HookedTransformer  # noqa: F401 - TransformerLens 4 removed it
except ImportError:
    pytest.skip("this TransformerLens has no HookedTransformer", allow_module_level=True)

from factories import hooked_small_model as small_model  # noqa: E402

from acdc_engine.architecture import as_model_spec, from_hooked_transformer  # noqa: E402
from acdc_engine.core.errors import AcdcError  # noqa: E402

pytestmark = pytest.mark.tl3

VARIANTS = {
    "gpt2-style": dict(attn_only=False),
    "attention-only": dict(attn_only=True),
    "LNPre": dict(attn_only=False, normalization_type="LNPre"),
    "no norm, d_head != d_model / n_heads": dict(attn_only=False, normalization_type=None, d_head=5),
    "rotary, GQA, RMS, silu": dict(
        attn_only=False, positional_embedding_type="rotary", rotary_dim=4, n_heads=4, n_key_value_heads=2,
        normalization_type="RMS", act_fn="silu",
    ),
    "parallel, gptj rotary layout": dict(
        attn_only=False, parallel_attn_mlp=True, positional_embedding_type="rotary", rotary_adjacent_pairs=True,
    ),
    "local attention, soft-caps": dict(
        attn_only=False, use_local_attn=True, window_size=3, attn_types=["local", "global"],
        attn_scores_soft_cap=2.0, output_logits_soft_cap=3.0,
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_spec_forward_equals_the_hooked_transformers(variant):
    model = small_model(seed=1, **VARIANTS[variant])
    spec = as_model_spec(model)
    tokens = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(0))
    expected = model(tokens)
    assert (spec(tokens) - expected).abs().max() < 1e-10
    assert torch.equal(spec.source_logits(tokens), expected)
    assert spec.source is model and spec.cfg.dtype == torch.float64


def test_a_gated_mlp_equals_the_hooked_transformers_when_b_in_is_zero():
    model = small_model(attn_only=False, seed=1, gated_mlp=True)
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.b_in.zero_()
    tokens = torch.randint(0, 20, (2, 9))
    assert (from_hooked_transformer(model)(tokens) - model(tokens)).abs().max() < 1e-10


def test_a_gated_mlp_with_a_bias_after_the_gate_is_refused():
    with pytest.raises(AcdcError, match="gated MLP with a nonzero blocks.0.mlp.b_in"):
        from_hooked_transformer(small_model(attn_only=False, seed=1, gated_mlp=True))


def test_an_unimplemented_hooked_transformer_feature_is_refused_by_name():
    model = small_model(attn_only=False, seed=1, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(AcdcError, match="scale_attn_by_inverse_layer_idx=True is not supported"):
        from_hooked_transformer(model)
