"""Model loading beyond the shipped models: ``model=local`` (a Hugging Face folder, booted offline as
a TransformerLens 4 TransformerBridge) and pretrained names, which must fail at once without a model
hub. (The TransformerLens 3.9 path: tests/test_hooked_transformer.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_hf import N_POSITIONS, WORDS, gpt2_model, save_gpt2_folder, word_tokenizer

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import build_graph
from acdc_engine.models import load_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    save_gpt2_folder(folder)
    return folder


@pytest.fixture(scope="module")
def local_model(folder):
    return load_model("local", path=str(folder))


def random_tokens(n_prompts=3, n_pos=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 + len(WORDS), (n_prompts, n_pos), generator=g)


def test_local_model_logits_equal_the_hugging_face_logits(local_model):
    # the bridge keeps the raw weights: no folding, no centring
    tokens = random_tokens()
    with torch.no_grad():
        ours = local_model(tokens)
        theirs = gpt2_model()(tokens).logits
    assert theirs.std() > 1.0  # a model far from uniform, so the comparison means something
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_local_model_loads_in_float64_when_asked(folder):
    model = load_model("local", path=str(folder), dtype="float64")
    tokens = random_tokens(seed=1)
    with torch.no_grad():
        ours = model(tokens)
        theirs = gpt2_model().double()(tokens).logits
    assert ours.dtype == torch.float64 and {p.dtype for p in model.parameters()} == {torch.float64}
    torch.testing.assert_close(ours.log_softmax(-1), theirs.log_softmax(-1), atol=1e-5, rtol=0)


def test_local_model_takes_its_shape_from_the_folders_config(local_model):
    cfg = local_model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab, cfg.n_ctx) == (2, 4, 32, 2 + len(WORDS), N_POSITIONS)


def test_local_model_carries_the_folders_tokenizer_so_text_can_be_tokenized(local_model):
    expected = [word_tokenizer().convert_tokens_to_ids(word) for word in ("When", "Mary", "went")]
    assert local_model.tokenizer("When Mary went", add_special_tokens=False)["input_ids"] == expected


def test_local_folder_without_tokenizer_files_loads_with_no_tokenizer(tmp_path):
    save_gpt2_folder(tmp_path, tokenizer=False)
    assert load_model("local", path=str(tmp_path)).tokenizer is None


def test_local_needs_a_path():
    with pytest.raises(AcdcError, match="model.path=DIR"):
        load_model("local")


def test_local_path_that_is_not_a_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(AcdcError, match="nowhere.*not a folder"):
        load_model("local", path=str(tmp_path / "nowhere"))


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(AcdcError, match="no config.json"):
        load_model("local", path=str(tmp_path))


def test_local_folder_with_an_architecture_the_engine_does_not_support_is_refused_naming_it(tmp_path):
    from transformers import GPTBigCodeConfig

    config = GPTBigCodeConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=20)
    config.architectures = ["GPTBigCodeForCausalLM"]
    config.save_pretrained(tmp_path)
    with pytest.raises(AcdcError, match="GPTBigCodeForCausalLM.*not supported"):
        load_model("local", path=str(tmp_path))


def test_local_folder_without_weights_is_refused(tmp_path):
    save_gpt2_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(AcdcError, match="could not load the Hugging Face model"):
        load_model("local", path=str(tmp_path))


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_holding_objects_are_refused_without_running_them(tmp_path):
    model = save_gpt2_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    state = {**model.state_dict(), "payload": _RunsCodeWhenUnpickled(marker)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(AcdcError, match="refused its pickled weights"):
        load_model("local", path=str(tmp_path))
    assert not marker.exists()


def test_pickled_weights_holding_only_tensors_load(tmp_path):
    model = save_gpt2_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tokens = random_tokens(seed=2)
    with torch.no_grad():
        ours = load_model("local", path=str(tmp_path))(tokens)
        theirs = model(tokens).logits
    torch.testing.assert_close(ours.log_softmax(-1), theirs.log_softmax(-1), atol=1e-4, rtol=0)


def test_pretrained_name_without_a_hub_fails_at_once_suggesting_model_local():
    # the tests run with HF_HUB_OFFLINE=1 (conftest): only the (empty) cache is consulted
    with pytest.raises(AcdcError, match="model=local model.path=DIR"):
        load_model("gpt2")


def test_unreachable_hub_fails_before_any_download_is_tried(monkeypatch):
    from huggingface_hub import constants

    from acdc_engine.models import hub

    def download(*args, **kwargs):
        raise AssertionError("no download may be tried when the hub cannot be reached")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setattr(hub, "_download", download)
    with pytest.raises(AcdcError, match="cannot be reached.*model=local model.path=DIR"):
        load_model("gpt2")


def test_unknown_model_name_is_refused_as_unknown():
    with pytest.raises(AcdcError, match="unknown model 'gpt7'"):
        load_model("gpt7")


PRETRAINED_CONFIGS = [
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b",
    "pythia-1.4b", "Llama-3.2-1B", "Qwen2.5-0.5B", "Qwen3-0.6B", "gemma-2-2b", "OLMo-2-1B",
]


@pytest.mark.parametrize("choice", PRETRAINED_CONFIGS)
def test_pretrained_model_configs_name_models_transformer_lens_knows(choice):
    from hydra import compose, initialize_config_dir

    from acdc_engine.models.hub import official_name

    from acdc_engine.commands.discover import CONF_DIR
    from acdc_engine.commands.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={choice}"])
    assert official_name(cfg.model.name)


def test_command_line_runs_acdc_on_a_local_folder_with_a_jsonl_task(folder, local_model, tmp_path):
    records = [
        {"clean": "When Mary and John went to the store , John gave a drink to",
         "corrupted": "When Alice and Bob went to the store , Mary gave a drink to",
         "answer": "Mary", "wrong_answer": "John"},
        {"clean": "When Alice and Bob went to the store , Bob gave a book to",
         "corrupted": "When Mary and John went to the store , Alice gave a book to",
         "answer": "Alice", "wrong_answer": "Bob"},
    ]
    data = tmp_path / "ioi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [
        sys.executable, "-m", "acdc_engine.commands.discover", "model=local", f"model.path={folder}",
        "task=jsonl", f"task.path={data}", "method.threshold=0.01", "progress=false",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (circuit_file,) = (tmp_path / "outputs").rglob("circuit.json")
    circuit = json.loads(circuit_file.read_text())
    assert circuit["model"]["name"] == str(folder)  # a local model is named by its folder
    assert circuit["task"]["name"] == "jsonl" and circuit["task"]["n_prompts"] == 2
    assert circuit["metric"]["name"] == "logit_diff"  # the task's default when answers are given
    assert len(circuit["edges"]) == build_graph(local_model.cfg).n_edges  # the folder's model, every edge
