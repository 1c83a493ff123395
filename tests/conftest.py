"""Shared fixtures. No model hub is reachable: a stray hub call must fail at once."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# commands run in subprocesses import this checkout's package, whatever else is installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))

import pytest  # noqa: E402
import torch  # noqa: E402

from factories import random_task, small_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Test models are tiny: intra-op threading only adds overhead (10-30x on a busy 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def toy_induction_model():
    from acdc_engine.models import load_model

    return load_model("toy-induction-2l")


@pytest.fixture(scope="session")
def small_circuit():
    """An ACDC circuit on a small random model with MLPs, with kept and removed edges."""
    from acdc_engine import discover

    return discover(small_model(attn_only=False, seed=3), random_task(), threshold=0.002, progress=False)


@pytest.fixture(scope="session")
def attribution_models(tmp_path_factory):
    """name -> (ModelSpec float64, TaskData), built once per module."""
    built = {}

    def get(name):
        if name not in built:
            if name == "llama":
                pytest.importorskip("transformer_lens.model_bridge")
                from families import build_family

                from acdc_engine.models import load_model

                folder = build_family("llama", tmp_path_factory.mktemp("llama"))
                model = load_model("local", path=str(folder), dtype="float64")
                task = random_task(d_vocab=model.cfg.d_vocab, n_prompts=3, n_pos=8, seed=3, positions=[5, 7])
            else:
                model = small_model(attn_only=name == "attn-only", seed=2)
                task = random_task(seed=2, positions=[4, 6])
            built[name] = (model, task)
        return built[name]

    return get
