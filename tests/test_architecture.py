"""ModelSpec built natively: from TransformerLens-layout weights and at random."""

import json

import pytest
import torch

from acdc_engine.architecture import ModelSpec, as_model_spec, from_tl_weights, random_model
from acdc_engine.core.errors import AcdcError
from acdc_engine.models import SHIPPED, WEIGHTS
from acdc_engine.formats.weights import load_weights

SMALL = dict(n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=48, d_vocab=20, n_ctx=16, act_fn="gelu", dtype="float64")


def shipped(name: str) -> tuple[dict, dict]:
    return json.loads((WEIGHTS / f"{name}.json").read_text())["config"], load_weights(WEIGHTS / f"{name}.safetensors")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_with_their_weights(name):
    config, state = shipped(name)
    spec = from_tl_weights(config, state, name=name)
    assert spec.cfg.model_name == name and spec.cfg.n_layers == config["n_layers"]
    assert torch.equal(spec.blocks[1].attn.W_Q, state["blocks.1.attn.W_Q"])
    assert torch.equal(spec.embedding.W_E, state["embed.W_E"])
    assert torch.equal(spec.unembedding.b_U, state["unembed.b_U"])


@pytest.mark.parametrize("name", [n for n in SHIPPED if "induction" in n])
def test_shipped_induction_models_complete_repeated_sequences(name):
    spec = from_tl_weights(*shipped(name), name=name)
    g = torch.Generator().manual_seed(0)
    half = torch.randint(0, spec.cfg.d_vocab, (20, 12), generator=g)
    tokens = torch.cat([half, half], dim=1)
    predicted = spec(tokens)[:, 12:-1].argmax(-1)
    assert (predicted == tokens[:, 13:]).float().mean() > 0.5  # chance: 1 / d_vocab


def test_weights_missing_from_the_state_dict_are_named():
    config, state = shipped("toy-induction-2l")
    del state["blocks.1.attn.W_K"]
    with pytest.raises(AcdcError, match="missing: blocks.1.attn.W_K"):
        from_tl_weights(config, state)


def test_a_misshapen_weight_is_named():
    config, state = shipped("toy-induction-2l")
    state["blocks.0.attn.W_O"] = state["blocks.0.attn.W_O"][:, :, :3]
    with pytest.raises(AcdcError, match=r"blocks.0.attn.W_O has shape"):
        from_tl_weights(config, state)


def test_an_unknown_config_field_is_refused_by_name():
    with pytest.raises(AcdcError, match="not understood: use_magic"):
        random_model({**SMALL, "use_magic": True}, seed=0)


def test_an_unimplemented_feature_is_refused_by_name():
    with pytest.raises(AcdcError, match="model random: num_experts=4 is not supported"):
        random_model({**SMALL, "num_experts": 4}, seed=0)


def test_random_model_is_seeded():
    first, again, other = (random_model(SMALL, seed) for seed in (1, 1, 2))
    tokens = torch.randint(0, 20, (2, 6))
    assert torch.equal(first(tokens), again(tokens))
    assert not torch.allclose(first(tokens), other(tokens))


def test_random_model_draws_biases_and_norm_weights_away_from_zero_and_one():
    spec = random_model(SMALL, seed=0)
    assert spec.blocks[0].attn.b_O.abs().min() > 0
    assert (spec.blocks[1].ln2.w - 1).abs().max() > 0.1
    assert spec.ln_final.b.abs().max() > 0.1
    assert spec.cfg.dtype == torch.float64 and spec.embedding.W_E.dtype == torch.float64


def test_to_dtype_converts_weights_and_config():
    spec = random_model(SMALL, seed=0).to(torch.float32)
    assert spec.cfg.dtype == torch.float32
    assert {p.dtype for p in spec.parameters()} == {torch.float32}


def test_forward_fires_every_hook_with_its_shape():
    spec = random_model(SMALL, seed=0)
    logits, cache = spec.run_with_cache(torch.randint(0, 20, (3, 7)))
    per_head = {"hook_q_input": 32, "hook_k_input": 32, "hook_v_input": 32,
                "attn.hook_q": 8, "attn.hook_k": 8, "attn.hook_v": 8, "attn.hook_result": 32}
    for layer in range(2):
        for hook, width in per_head.items():
            assert cache[f"blocks.{layer}.{hook}"].shape == (3, 7, 4, width)
        for hook in ("hook_resid_pre", "hook_mlp_in", "hook_mlp_out", "hook_resid_post"):
            assert cache[f"blocks.{layer}.{hook}"].shape == (3, 7, 32)
    assert cache["hook_embed"].shape == cache["hook_pos_embed"].shape == (3, 7, 32)
    assert torch.equal(spec.unembed(cache["blocks.1.hook_resid_post"]), logits)


def test_a_patched_head_input_hook_changes_only_that_heads_q():
    spec = random_model(SMALL, seed=0)
    tokens = torch.randint(0, 20, (2, 6))

    def patch_head_2(value, hook):
        value = value.clone()
        value[:, :, 2] = 0
        return value

    _, clean = spec.run_with_cache(tokens)
    with spec.hooks(fwd_hooks=[("blocks.1.hook_q_input", patch_head_2)]):
        _, patched = spec.run_with_cache(tokens)
    changed = (patched["blocks.1.attn.hook_q"] - clean["blocks.1.attn.hook_q"]).abs().amax(dim=(0, 1, 3))
    assert changed[2] > 0 and changed[[0, 1, 3]].max() == 0
    assert not torch.allclose(patched["blocks.1.hook_resid_post"], clean["blocks.1.hook_resid_post"])


def test_grouped_query_receivers_read_their_key_value_heads_weights():
    spec = random_model({**SMALL, "n_key_value_heads": 2}, seed=0)
    x = torch.randn(5, 1, 32, dtype=torch.float64)
    attn = spec.blocks[0].attn
    for head in range(4):
        k = spec.qkv(0, x, torch.tensor([4 + head]))
        expected = spec.blocks[0].ln1(x[:, 0]) @ attn.W_K[head // 2] + attn.b_K[head // 2]
        assert torch.allclose(k[:, 0], expected)


def test_post_attention_norm_contributions_sum_to_the_normed_attention_output():
    spec = random_model({**SMALL, "normalization_type": "RMS", "use_normalization_before_and_after": True}, seed=0)
    results = torch.randn(3, 5, 4, 32, dtype=torch.float64)
    contributions = spec.attention_out(1, results)
    assert torch.allclose(contributions.sum(-2), spec.blocks[1].ln1_post(results.sum(-2)))


def test_without_post_norms_attention_out_is_the_results():
    spec = random_model(SMALL, seed=0)
    results = torch.randn(2, 3, 4, 32, dtype=torch.float64)
    assert torch.equal(spec.attention_out(0, results), results)


def test_sliding_window_hides_keys_outside_it():
    spec = random_model({**SMALL, "use_local_attn": True, "window_size": 3, "attn_types": ["local", "global"]}, seed=0)
    visible = spec.blocks[0].attn.visible(6, "cpu")
    assert visible[5].tolist() == [False, False, False, True, True, True]
    assert spec.blocks[1].attn.visible(6, "cpu")[5].all()


def test_as_model_spec_returns_a_model_spec_itself_and_refuses_other_types():
    spec = random_model(SMALL, seed=0)
    assert as_model_spec(spec) is spec
    with pytest.raises(AcdcError, match="torch.nn.modules.linear.Linear.*expected a ModelSpec"):
        as_model_spec(torch.nn.Linear(2, 2))


def test_source_logits_of_a_native_model_are_its_forward():
    spec = random_model(SMALL, seed=0)
    tokens = torch.randint(0, 20, (2, 5))
    assert isinstance(spec, ModelSpec) and spec.source is None
    assert torch.equal(spec.source_logits(tokens), spec(tokens))
