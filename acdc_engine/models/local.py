"""Model ``local``: a Hugging Face folder written by ``save_pretrained``, loaded offline.

The folder holds ``config.json`` (its ``architectures`` entry names the model class), the weights
and, optionally, the tokenizer files. Nothing here touches the network or runs code from the folder:
every Hugging Face call passes ``local_files_only=True`` and ``trust_remote_code=False``. Weights are
read without unpickling arbitrary objects: safetensors files directly, ``pytorch_model.bin`` files
through transformers' ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers.

The model is booted as a TransformerLens ``TransformerBridge`` around the Hugging Face model (3.9
and 4 both have it; raw weights, no processing: the engine's logits are the Hugging Face logits),
and the engine runs on its ``ModelSpec`` (``acdc_engine.architecture``), whose self-check holds it
to that model's own forward pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acdc_engine.core.errors import AcdcError

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_local(path: str | os.PathLike[str] | None, device: str, dtype: torch.dtype) -> ModelSpec:
    """The ``ModelSpec`` of the Hugging Face folder ``path``, in eval mode.

    ``device`` is a resolved device (``cpu``, ``cuda``, ...); ``dtype`` the parameters' dtype. The
    folder's tokenizer, when it has one, is attached (``spec.tokenizer``), so text tasks work;
    without tokenizer files ``spec.tokenizer`` is None and tasks must give token ids.
    AcdcError when the folder, its config, its weights or its architecture cannot be used.
    """
    from transformer_lens.model_bridge import TransformerBridge

    from acdc_engine.architecture import from_bridge

    from acdc_engine.architecture.families import FAMILIES, read_hf_config

    folder = _model_folder(path)
    raw_config = _read_config(folder)
    architecture = raw_config["architectures"][0]
    if architecture not in FAMILIES:  # before any weight is read
        raise AcdcError(
            f"{folder / 'config.json'}: model architecture {architecture} is not supported by the edge-patching "
            f"engine (supported: {', '.join(FAMILIES)})"
        )
    hf_model = _hf_model(folder, dtype)
    read_hf_config(architecture, hf_model.config, folder.name)  # a feature refused by name before TransformerLens sees it
    tokenizer = _tokenizer(folder)
    try:
        bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tokenizer or _placeholder_tokenizer(), device=device, dtype=dtype
        )
    except Exception as error:  # adapters fail with many types on architectures they lack
        raise AcdcError(
            f"model.path '{folder}': TransformerLens could not wrap its {architecture} model "
            f"({type(error).__name__}: {str(error)[:300]})"
        ) from None
    spec = from_bridge(bridge)
    spec.cfg = dataclasses.replace(spec.cfg, model_name=folder.name)
    spec.tokenizer = tokenizer
    return spec.eval()


def _placeholder_tokenizer() -> Any:
    """A one-token tokenizer for booting a bridge on a folder without tokenizer files (the bridge
    insists on one); the engine then reports the model as having no tokenizer."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>")


def _model_folder(path: str | os.PathLike[str] | None) -> Path:
    if path is None or str(path) == "":
        raise AcdcError(
            "model=local needs model.path=DIR: a folder written by save_pretrained (config, weights, tokenizer)"
        )
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise AcdcError(f"model.path '{path}' is not a folder (expected one written by save_pretrained)")
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict; AcdcError naming the file (and the line of a JSON error)."""
    file = folder / "config.json"
    if not file.is_file():
        raise AcdcError(f"model.path '{folder}' has no config.json; save the model with save_pretrained(DIR)")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise AcdcError(f"{file}, line {error.lineno}: not valid JSON ({error.msg})") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not architectures or not isinstance(architectures, list) or not isinstance(architectures[0], str):
        raise AcdcError(f"{file}: field 'architectures' must list the model class, e.g. [\"GPT2LMHeadModel\"]")
    return config


def _hf_model(folder: Path, dtype: torch.dtype):
    """The Hugging Face model, weights read without unpickling objects; AcdcError if any is missing."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(folder),
            local_files_only=True,
            trust_remote_code=False,
            weights_only=True,
            dtype=dtype,
            output_loading_info=True,
        )
    except pickle.UnpicklingError:
        raise AcdcError(
            f"model.path '{folder}': refused its pickled weights (pytorch_model.bin): they hold objects other "
            "than tensors, and unpickling those could run arbitrary code; save the model as safetensors"
        ) from None
    except Exception as error:  # missing files, unknown model types: all "cannot load"
        raise AcdcError(
            f"model.path '{folder}': could not load the Hugging Face model "
            f"({type(error).__name__}: {str(error)[:300]})"
        ) from None
    missing = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
    if missing:
        names = sorted(map(str, missing))[:5]
        raise AcdcError(f"model.path '{folder}': the weights lack or mis-shape parameters {names}")
    return model.eval()


def _tokenizer(folder: Path):
    """The folder's tokenizer, or None when it has no tokenizer files."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as error:  # tokenizer classes raise many types on bad files
        raise AcdcError(
            f"model.path '{folder}': could not load its tokenizer ({type(error).__name__}: {str(error)[:300]})"
        ) from None
