"""Issue 23, probes 1 and 2: features are read as the Hugging Face class reads them, and every
refusal names the field, its value and the model.

Each case sets one config field on a tiny random model of a family and asks the class itself
whether it applies the field: the same weights run with and without it. A field the class
ignores must be ignored by the engine too (the same architecture as without it); a field it applies
must be reproduced (the self-check against the Hugging Face model's own forward passes) or refused
in one line naming the field, its value and the model. (A field the class ignores on these prompts
may also be refused by name, like a dynamic rope that changes only past the trained length.)"""

import pytest
import torch

pytest.importorskip("transformer_lens.model_bridge", reason="the families load through TransformerLens 4's TransformerBridge")

import families  # noqa: E402

from acdc_engine import AcdcError  # noqa: E402
from acdc_engine.models.local import load_local  # noqa: E402
from acdc_engine.patching import EdgePatcher  # noqa: E402

ROPE = {"rope_type": "default", "rope_theta": 10000.0}
CASES = [
    ("gpt2", "scale_attn_weights", False),
    ("gpt2", "scale_attn_by_inverse_layer_idx", True),
    ("gpt2", "reorder_and_upcast_attn", True),
    ("gpt_neox", "attention_bias", False),
    ("gpt_neox", "use_parallel_residual", False),
    ("gpt_neox", "rope_parameters", {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
    ("llama", "sliding_window", families.WINDOW),
    ("llama", "rope_parameters", {**ROPE, "partial_rotary_factor": 0.5}),
    ("llama", "attention_bias", True),
    ("mistral", "sliding_window", None),
    ("mistral", "rope_parameters", {**ROPE, "partial_rotary_factor": 0.5}),
    ("qwen2", "use_sliding_window", True),
    ("qwen3", "rope_parameters", {**ROPE, "partial_rotary_factor": 0.5}),
    ("gemma", "sliding_window", families.WINDOW),
    ("gemma2", "attention_bias", True),
    ("gemma2", "sliding_window", None),
    ("gemma3", "attn_logit_softcapping", 2.0),
    ("gemma3", "partial_rotary_factor", 0.5),
    ("olmo2", "sliding_window", families.WINDOW),
    ("olmo2", "attention_bias", True),
    ("phi3", "sliding_window", families.WINDOW),
    ("phi3", "rope_parameters", {**ROPE, "partial_rotary_factor": 1.0}),
]
TOKENS = torch.randint(3, len(families.VOCAB), (3, families.PROMPT_LENGTH), generator=torch.Generator().manual_seed(1))


def randomized(config, seed=0):
    """The family's model from ``config`` with every weight drawn as ``families.family_model`` draws it."""
    from transformers import AutoModelForCausalLM

    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.3 * noise) if parameter.dim() == 1 else parameter.copy_(0.3 * noise)
    return model


def with_field(family, field, value):
    base_config = families._configs()[family]()
    return base_config, type(base_config).from_dict({**base_config.to_dict(), field: value})


def the_class_applies(base_config, config) -> bool:
    """Whether the class computes other logits with the field than without it, from the same weights
    (a field that adds weights or makes the class fail counts as applied)."""
    base, model = randomized(base_config), randomized(config)
    own = model.state_dict()
    if any(k in own and own[k].shape != v.shape for k, v in base.state_dict().items()) or set(own) != set(base.state_dict()):
        return True
    model.load_state_dict(base.state_dict())
    try:
        with torch.no_grad():
            return not torch.allclose(model(input_ids=TOKENS).logits, base(input_ids=TOKENS).logits, atol=1e-5, rtol=0)
    except Exception:
        return True


def engine(tmp_path, config, name):
    folder = tmp_path / name
    randomized(config).save_pretrained(folder)
    families.tokenizer().save_pretrained(folder)
    spec = load_local(folder, "cpu", torch.float32)
    patcher = EdgePatcher(spec, TOKENS, TOKENS.flip(0), torch.tensor([families.PROMPT_LENGTH - 1]))
    return spec, patcher.self_check


def named(field, value):
    """How a refusal names the field and its value."""
    if isinstance(value, dict):
        return f"{field}.rope_type='{value['rope_type']}'"
    return f"{field}={value}"


@pytest.mark.parametrize("family, field, value", CASES, ids=[f"{f}-{k}={v if not isinstance(v, dict) else v.get('rope_type') + '/' + str(v.get('partial_rotary_factor'))}" for f, k, v in CASES])
def test_a_field_is_read_as_the_hugging_face_class_reads_it(tmp_path, family, field, value):
    base_config, config = with_field(family, field, value)
    model_name = f"{family}-probe"
    if the_class_applies(base_config, config):
        try:
            _, check = engine(tmp_path, config, model_name)
        except AcdcError as refusal:
            message = str(refusal)
            assert model_name in message and named(field, value) in message and "\n" not in message, message
        else:
            assert check.full <= check.tolerance and check.empty <= check.tolerance and check.reference == "huggingface"
    else:
        try:
            spec, check = engine(tmp_path, config, model_name)
        except AcdcError as refusal:  # refused by name: e.g. a rope type that applies only past these lengths
            message = str(refusal)
            assert model_name in message and named(field, value) in message and "\n" not in message, message
            return
        base_spec, _ = engine(tmp_path, base_config, "base")
        assert check.full <= check.tolerance and check.reference == "huggingface"
        ignored = {"model_name"}
        assert {k: v for k, v in vars(spec.cfg).items() if k not in ignored} == {k: v for k, v in vars(base_spec.cfg).items() if k not in ignored}
