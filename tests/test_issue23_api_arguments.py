"""Issue 23, probe 9: ``discover``'s arguments are type-checked before any work, each refusal one
AcdcError naming the argument and the value."""

import pytest
import torch

from acdc_engine import AcdcError, discover
from acdc_engine.tasks import make_task
from factories import random_task, small_model


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"task": {}}, "clean and corrupted"),
        ({"task": "induction", "task_params": {"n_prompts": "8"}}, "task_params.n_prompts must be an integer, got '8'"),
        ({"task": "induction", "task_params": {"n_prompts": 2.5}}, "task_params.n_prompts must be an integer"),
        ({"task": "induction", "task_params": {"n_prompts": 0}}, "task_params.n_prompts must be >= 1, got 0"),
        ({"task": "induction", "batch_size": 1.5}, "batch_size must be an integer or None, got 1.5"),
        ({"task": "induction", "threshold": True}, "threshold must be a number"),
        ({"task": "induction", "threshold": "0.1"}, "threshold must be a number"),
        ({"task": "induction", "method": "eap-ig", "steps": 2.0}, "steps must be an integer"),
        ({"task": "induction", "seed": "x"}, "seed must be an integer, got 'x'"),
        ({"task": "induction", "progress": "no"}, "progress must be True or False, got 'no'"),
        ({"task": "induction", "split_input": 1}, "split_input must be True or False, got 1"),
        ({"task": "induction", "metric_cache": "x"}, "metric_cache must be a MetricCache or None, got 'x'"),
        ({"task": "induction", "model_name": 5}, "model_name must be a string or None, got 5"),
    ],
)
def test_a_wrong_argument_is_one_acdc_error_naming_it(toy_induction_model, kwargs, named):
    with pytest.raises(AcdcError) as raised:
        discover(toy_induction_model, **{"progress": False, **kwargs})
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_make_task_checks_parameter_types_for_every_caller(toy_induction_model):
    with pytest.raises(AcdcError, match="task_params.half_length must be an integer, got 'abc'"):
        make_task("induction", toy_induction_model, half_length="abc")


def test_well_typed_arguments_still_run(toy_induction_model):
    circuit = discover(toy_induction_model, "induction", task_params={"n_prompts": 4}, threshold=1, batch_size=2, progress=False)
    assert circuit.threshold == 1.0 and circuit.task["n_prompts"] == 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_the_cpu_is_refused_as_on_the_command_line(dtype):
    model = small_model(attn_only=True).to(dtype)
    with pytest.raises(AcdcError, match=f"model dtype '{str(dtype)[6:]}' is for GPUs"):
        discover(model, random_task(), progress=False)


def test_the_design_notes_state_the_float64_tolerance_the_code_uses():
    from pathlib import Path

    from acdc_engine.patching.self_check import TOLERANCE

    design = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()
    written = {f"{TOLERANCE[dtype]:.0e}".replace("e-0", "e-") for dtype in (torch.float64, torch.float32)}
    assert written == {"1e-5", "1e-4"}
    assert "Tolerance: 1e-5 (float64" in design and "1e-4 (float32)" in design
