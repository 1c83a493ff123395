"""Model ``local``: a Hugging Face folder written by ``save_pretrained``, converted offline.

The folder holds ``config.json`` (its ``architectures`` entry picks TransformerLens's converter),
the weights and, optionally, the tokenizer files. Nothing here touches the network or runs code
from the folder: every Hugging Face call passes ``local_files_only=True`` and
``trust_remote_code=False``. Weights are read without unpickling arbitrary objects: safetensors
files directly, ``pytorch_model.bin`` files through transformers' ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers.

The conversion applies ``HookedTransformer.from_pretrained``'s default processing (LayerNorm
folded into the next weights, writing weights and the unembedding centred, value biases folded
into the output bias), so ``model=local`` on a saved copy of a hub model gives the same model as its
hub name. The converted model computes the Hugging Face model's probabilities; its logits are the
Hugging Face logits minus their mean over the vocabulary at each position (``center_unembed``).
TransformerLens does this processing in float32 whatever the dtype asked for, so a float64 model
carries its weights rounded to float32 precision (it then computes in float64).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acdc_engine.errors import AcdcError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_local(path: str | os.PathLike[str] | None, device: str, dtype: torch.dtype) -> HookedTransformer:
    """The ``HookedTransformer`` converted from the Hugging Face folder ``path``, in eval mode.

    ``device`` is a resolved device (``cpu``, ``cuda``, ...); ``dtype`` the parameters' dtype (the
    Hugging Face model is read in float64 when float64 is asked for, else in float32, and the
    converted model cast to ``dtype``). The folder's
    tokenizer, when it has one, is attached (``model.tokenizer``), so text tasks work; without
    tokenizer files ``model.tokenizer`` is None and tasks must give token ids.
    AcdcError when the folder, its config, its weights or its architecture cannot be used.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformer_lens.utilities.activation_functions import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    folder = _model_folder(path)
    raw_config = _read_config(folder)
    architecture = raw_config["architectures"][0]
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    # from_pretrained's rule: post-norm blocks normalise a sublayer's output, so folding is invalid
    fold_ln = architecture not in POST_NORM_ARCHITECTURES
    cfg = _converted_config(folder, raw_config, device, compute_dtype, fold_ln)
    hf_model = _hf_model(folder, compute_dtype)
    tokenizer = _tokenizer(folder)
    cfg.model_name = folder.name
    cfg.tokenizer_name = str(folder) if tokenizer is not None else None
    try:
        state = get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=compute_dtype)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            state,
            fold_ln=fold_ln,
            center_writing_weights=fold_ln,
            center_unembed=not softcap_enabled(cfg.output_logits_soft_cap),
            fold_value_biases=True,
        )
    except Exception as error:  # converters fail with many types (shape, key, value errors)
        raise AcdcError(
            f"model.path '{folder}': could not convert its {architecture} weights to TransformerLens "
            f"({type(error).__name__}: {str(error)[:300]})"
        ) from None
    model.move_model_modules_to_device()
    return (model if dtype == compute_dtype else model.to(dtype)).eval()


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


def _converted_config(folder: Path, raw_config: dict[str, Any], device: str, dtype: torch.dtype, fold_ln: bool):
    """TransformerLens's HookedTransformerConfig for ``raw_config``, converted by TransformerLens.

    TransformerLens's converter reads config.json from a path and, for some families, guesses the
    architecture from the path's name (any path containing "llama" or "gemma"); it also reads
    GPT-2's context length from ``n_ctx``, which configs written by current transformers no longer
    hold (they keep ``n_positions``). So it is handed a copy of the config in a neutral temporary
    folder, with ``n_ctx`` filled in from ``n_positions`` where missing.
    """
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    architecture = raw_config["architectures"][0]
    config = dict(raw_config)
    if architecture == "GPT2LMHeadModel" and "n_ctx" not in config and "n_positions" in config:
        config["n_ctx"] = config["n_positions"]
    with tempfile.TemporaryDirectory(prefix="acdc-config-") as staging:
        (Path(staging) / "config.json").write_text(json.dumps(config))
        try:
            return get_pretrained_model_config(
                staging,
                hf_cfg=config,
                fold_ln=fold_ln,
                device=device,
                dtype=dtype,
                local_files_only=True,
                trust_remote_code=False,
            )
        except NotImplementedError:
            raise AcdcError(
                f"{folder / 'config.json'}: architecture '{architecture}' is not supported by "
                f"TransformerLens's converter"
            ) from None
        except Exception as error:  # the converter fails with many types on odd configs
            raise AcdcError(
                f"{folder / 'config.json'}: TransformerLens could not convert this {architecture} config "
                f"({type(error).__name__}: {str(error)[:300]})"
            ) from None


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
