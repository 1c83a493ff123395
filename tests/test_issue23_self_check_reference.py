"""Issue 23, probe 1: the self-check's reference is the model the user gave, by its own forward:
the Hugging Face model under a TransformerBridge, not the bridge's forward. Where the two differ,
the engine is judged by the Hugging Face model, and both differences are recorded."""

import json

import pytest
import torch

pytest.importorskip("transformer_lens.model_bridge", reason="the families load through TransformerLens 4's TransformerBridge")

import families  # noqa: E402

from acdc_engine import AcdcError, discover  # noqa: E402
from acdc_engine.architecture.from_bridge import hf_logits  # noqa: E402
from acdc_engine.models.local import load_local  # noqa: E402
from acdc_engine.tasks import TaskData  # noqa: E402

TOKENS = torch.randint(3, len(families.VOCAB), (4, families.PROMPT_LENGTH), generator=torch.Generator().manual_seed(2))
TASK = TaskData("random", TOKENS, TOKENS.flip(0), torch.tensor([families.PROMPT_LENGTH - 1]))


def local_model(tmp_path, family, **fields):
    """Family ``family``'s tiny model with ``fields`` set in its config.json, loaded as model=local;
    with the Hugging Face model loaded on its own (no bridge) from the same folder."""
    from transformers import AutoModelForCausalLM

    folder = families.build_family(family, tmp_path / family)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **fields}))
    alone = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return load_local(folder, "cpu", torch.float32), alone


def test_gpt2_without_attention_scaling_is_run_though_the_bridge_gets_it_wrong(tmp_path):
    spec, alone = local_model(tmp_path, "gpt2", scale_attn_weights=False)
    with torch.no_grad():
        model = alone(input_ids=TOKENS).logits
        assert (spec.source(TOKENS) - model).abs().max() > 0.1  # the bridge's forward is not the model
        assert torch.allclose(spec.source_logits(TOKENS), model, atol=1e-4)  # the reference is
    circuit = discover(spec, TASK, threshold=0.02, progress=False)
    check = circuit.run["self_check"]
    assert check["reference"] == "huggingface" and check["max_abs_logit_diff_full"] <= check["tolerance"]
    assert check["max_abs_logit_diff_wrapper_vs_model"] > 0.1  # recorded, not judged


def test_a_field_the_class_ignores_but_the_bridge_applies_is_ignored(tmp_path):
    spec, alone = local_model(tmp_path, "gemma3", attn_logit_softcapping=0.5)
    assert spec.cfg.attn_softcap is None
    circuit = discover(spec, TASK, threshold=0.02, progress=False)
    check = circuit.run["self_check"]
    assert check["max_abs_logit_diff_full"] <= check["tolerance"]
    assert check["max_abs_logit_diff_wrapper_vs_model"] > 10 * check["tolerance"]


def test_an_engine_pass_the_bridge_agrees_with_but_the_model_does_not_is_refused(tmp_path):
    spec, _ = local_model(tmp_path, "llama")
    with torch.no_grad():
        spec.blocks[0].attn.W_Q.mul_(2.0)  # the engine now computes another model than the one given ...
    bridge = spec.source
    bridge.forward = lambda tokens, *args, **kwargs: spec.forward(tokens)  # ... and the wrapper agrees with it
    with pytest.raises(AcdcError, match=r"self-check failed for model 'llama'.*the Hugging Face model's\) by"):
        discover(spec, TASK, threshold=0.02, progress=False)


def test_the_bridge_is_whole_again_after_the_reference_pass(tmp_path):
    spec, alone = local_model(tmp_path, "gpt2", scale_attn_weights=False)
    with torch.no_grad():
        before = spec.source(TOKENS)
        hf_logits(spec.source, TOKENS)
        assert torch.equal(spec.source(TOKENS), before)
        with pytest.raises(IndexError):  # a failing forward also leaves the wrappers in place
            hf_logits(spec.source, torch.full((1, 3), 10**6))
        assert torch.equal(spec.source(TOKENS), before)
