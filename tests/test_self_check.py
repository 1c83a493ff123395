"""Every run starts with a self-check: the engine's pass must reproduce the model's own forward pass."""

import pytest
import torch
from factories import random_task, small_model

from acdc_engine import AcdcError, discover
from acdc_engine.patching import EdgePatcher
from acdc_engine.formats.circuit_file import circuit_to_dict


class Shifted(torch.nn.Module):
    """A stand-in 'source model' whose logits differ from the spec's by ``shift`` at one token."""

    def __init__(self, spec, shift: float) -> None:
        super().__init__()
        self.spec, self.shift = spec, shift
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        logits = self.spec.forward(tokens).clone()
        logits[..., 0] += self.shift
        return logits


def test_a_model_the_engine_does_not_reproduce_stops_the_run_naming_it_and_the_mismatch():
    model = small_model(attn_only=False)
    model.source = Shifted(model, 0.5)
    with pytest.raises(AcdcError, match=r"self-check failed for model 'random'.*by 0\.5 in the logits"):
        discover(model, random_task(), threshold=0.01, progress=False)


def test_a_mismatch_within_the_dtypes_tolerance_passes():
    model = small_model(attn_only=False)
    model.source = Shifted(model, 1e-12)  # float64: far below 1e-5 x the logit scale
    task = random_task()
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions)
    assert 0 < patcher.self_check.full <= patcher.self_check.tolerance


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
def test_the_measured_differences_are_recorded_in_the_circuit_file(ablation):
    circuit = discover(small_model(attn_only=True), random_task(), threshold=0.01, progress=False, ablation=ablation)
    check = circuit_to_dict(circuit)["run"]["self_check"]
    assert check["dtype"] == "float64" and check["tolerance"] > 0
    assert check["max_abs_logit_diff_full"] <= 1e-12 and check["max_abs_logit_diff_empty"] <= 1e-12
