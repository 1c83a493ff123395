"""ModelSpec of a TransformerLens 4 TransformerBridge computes the Hugging Face model's logits, for
every supported family (tiny random models from tests/families.py)."""

import pytest
import torch

from families import FAMILIES, PROMPT_LENGTH, WINDOW, build_family

bridge_module = pytest.importorskip("transformer_lens.model_bridge")
TransformerBridge = bridge_module.TransformerBridge

from acdc_engine.architecture import as_model_spec, from_bridge  # noqa: E402
from acdc_engine.core.errors import AcdcError  # noqa: E402

# features each family's config must turn on (a subset of ArchitectureConfig.features())
EXPECTED_FEATURES = {
    "gpt2": set(),
    "gpt_neox": {"parallel_attn_mlp=True", "rotary_dim=4", "positional_embedding_type=rotary"},
    "gptj": {"parallel_attn_mlp=True", "shared_pre_norm=True", "rotary_layout=gptj", "rotary_dim=4"},
    "llama": {"n_key_value_heads=2", "gated_mlp=True", "normalization_type=RMS"},
    "mistral": {"n_key_value_heads=2", f"sliding_window=[{WINDOW}, {WINDOW}]"},
    "qwen2": {"n_key_value_heads=2", "gated_mlp=True"},
    "qwen3": {"qk_norm=head"},
    "gemma": {"norm_offset=1.0", f"embedding_scale={32 ** 0.5}", "act_fn=gelu_pytorch_tanh"},
    "gemma2": {"post_norms=True", "attn_softcap=2.0", "logit_softcap=3.0", f"sliding_window=[{WINDOW}, None]",
               "attn_scale=3.4641"},
    "gemma3": {"post_norms=True", "qk_norm=head", f"sliding_window=[{WINDOW}, None]", "norm_offset=1.0"},
    "olmo2": {"pre_norms=False", "post_norms=True", "qk_norm=full"},
    "phi3": {"rotary_dim=4", "gated_mlp=True"},
}


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name) for name in FAMILIES}


def tokens(batch: int = 3) -> torch.Tensor:
    return torch.randint(3, 80, (batch, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))


def hf_logits(folder, dtype) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens()).logits


def bridge(folder, dtype=torch.float32):
    return TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=dtype)


def test_every_family_is_listed():
    assert set(EXPECTED_FEATURES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_and_source_logits_equal_the_hugging_face_models_in_float32(family, family_folders):
    spec = from_bridge(bridge(family_folders[family]))
    expected = hf_logits(family_folders[family], torch.float32)
    assert expected.std() > 0.5  # far from uniform
    with torch.no_grad():
        assert (spec(tokens()) - expected).abs().max() <= 1e-4  # measured: <= 9e-6
        assert (spec.source_logits(tokens()) - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_logits_equal_the_hugging_face_models_in_float64(family, family_folders):
    spec = from_bridge(bridge(family_folders[family], torch.float64))
    assert spec.cfg.dtype == torch.float64
    with torch.no_grad():
        # measured: ~1e-15, but ~1e-6 where Hugging Face rounds to float32 inside a sum the spec
        # splits per head (post-attention RMSNorm, OLMo-2's full-width q/k norm, GPT-J's q.k)
        assert (spec(tokens()) - hf_logits(family_folders[family], torch.float64)).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_the_config_turns_on_the_familys_features(family, family_folders):
    spec = from_bridge(bridge(family_folders[family]))
    assert EXPECTED_FEATURES[family] <= set(spec.cfg.features())
    assert spec.cfg.n_layers == 2 and spec.cfg.d_vocab == 80 and spec.tokenizer is not None


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo2"])
def test_hooks_fire_per_query_head(family, family_folders):
    spec = from_bridge(bridge(family_folders[family]))
    _, cache = spec.run_with_cache(tokens(2))
    d_head, d_model = spec.cfg.d_head, spec.cfg.d_model
    for name in ("hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result"):
        assert cache[f"blocks.1.{name}"].shape == (2, PROMPT_LENGTH, 4, d_model)
    for name in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        assert cache[f"blocks.0.{name}"].shape == (2, PROMPT_LENGTH, 4, d_head)
    assert "hook_pos_embed" not in cache  # rotary models have no absolute positions


def test_as_model_spec_converts_a_bridge(family_folders):
    source = bridge(family_folders["gpt2"])
    spec = as_model_spec(source)
    assert spec.source is source and spec.cfg.family == "GPT2LMHeadModel"


def test_an_unsupported_architecture_is_refused_by_name(tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(vocab_size=80, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=4,
                          attention_types=[[["global", "local"], 1]])
    GPTNeoForCausalLM(config).save_pretrained(tmp_path / "neo")
    from families import tokenizer

    tokenizer().save_pretrained(tmp_path / "neo")
    with pytest.raises(AcdcError, match="model architecture GPTNeoForCausalLM is not supported.*supported: GPT2"):
        from_bridge(bridge(tmp_path / "neo"))


def test_an_unsupported_feature_of_a_supported_family_is_refused_by_name(tmp_path):
    from transformers import AutoModelForCausalLM

    from families import _configs, tokenizer

    config = _configs()["llama"]()
    config.rope_parameters = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "dynamic-llama")
    tokenizer().save_pretrained(tmp_path / "dynamic-llama")
    with pytest.raises(AcdcError, match="model dynamic-llama: rope_parameters.rope_type='dynamic'.*not supported"):
        from_bridge(bridge(tmp_path / "dynamic-llama"))


def test_a_bridge_with_processed_weights_is_refused(family_folders):
    source = bridge(family_folders["gpt2"])
    source.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(AcdcError, match="model gpt2: the bridge's weights were processed"):
        from_bridge(source)


def test_full_width_qk_norm_normalises_each_receivers_own_full_projection(family_folders):
    spec = from_bridge(bridge(family_folders["olmo2"]))
    attn = spec.blocks[0].attn
    x = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))  # a different input per receiver
    receivers = torch.tensor([1, 4 + 3, 8 + 2])  # q of head 1, k of head 3, v of head 2
    out = spec.qkv(0, x, receivers)
    full_q = attn.q_norm(torch.einsum("nm,hmd->nhd", x[:, 0], attn.W_Q).flatten(-2)).unflatten(-1, (4, 8))
    full_k = attn.k_norm(torch.einsum("nm,hmd->nhd", x[:, 1], attn.W_K).flatten(-2)).unflatten(-1, (2, 8))
    assert torch.allclose(out[:, 0], full_q[:, 1], atol=1e-6)
    assert torch.allclose(out[:, 1], full_k[:, 3 // 2], atol=1e-6)
    assert torch.allclose(out[:, 2], x[:, 2] @ attn.W_V[2 // 2], atol=1e-6)
