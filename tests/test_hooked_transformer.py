"""The TransformerLens 3.9 path: a HookedTransformer runs through the engine like any other model.

These tests need TransformerLens 3.9 (``HookedTransformer``); with TransformerLens 4 they are
skipped. CI runs them in a second environment (``.ci/run``: ``pytest -m tl3``).
"""

import pytest
import torch

from factories import hooked_small_model, random_task

pytestmark = pytest.mark.tl3

transformer_lens = pytest.importorskip("transformer_lens")
try:
    from transformer_lens import HookedTransformer
except ImportError:  # TransformerLens 4 removed them
    pytest.skip("TransformerLens 3.9's HookedTransformer is not installed", allow_module_level=True)

from acdc_engine import discover  # noqa: E402
from acdc_engine.architecture import as_model_spec, from_tl_weights  # noqa: E402


def hooked_model(attn_only: bool, seed: int = 0) -> HookedTransformer:
    return hooked_small_model(attn_only, seed)


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_a_hooked_transformer_gives_the_circuit_of_the_same_weights_as_a_native_model(attn_only):
    model = hooked_model(attn_only)
    native = from_tl_weights({**model.cfg.to_dict(), "model_name": "native"}, model.state_dict())
    task = random_task()
    ours = discover(model, task, threshold=0.002, progress=False)
    theirs = discover(native, task, threshold=0.002, progress=False)
    assert ours.edges() == theirs.edges()
    assert torch.equal(ours.scores.edges.nan_to_num(-1), theirs.scores.edges.nan_to_num(-1))


def test_a_hooked_transformer_passes_the_self_check_against_its_own_forward_pass():
    model = hooked_model(attn_only=False)
    circuit = discover(model, random_task(), threshold=0.002, progress=False)
    check = circuit.run["self_check"]
    assert check["max_abs_logit_diff_full"] <= check["tolerance"]
    assert check["max_abs_logit_diff_empty"] <= check["tolerance"]


def test_a_local_folder_loads_through_transformer_lens_3s_bridge_too(tmp_path):
    from tiny_hf import save_gpt2_folder

    from acdc_engine.models import load_model

    hf_model = save_gpt2_folder(tmp_path / "gpt2")
    spec = load_model("local", path=str(tmp_path / "gpt2"))
    tokens = torch.randint(0, spec.cfg.d_vocab, (2, 6))
    with torch.no_grad():
        assert torch.allclose(spec.forward(tokens), hf_model(tokens).logits, atol=1e-4)
    assert as_model_spec(spec) is spec
