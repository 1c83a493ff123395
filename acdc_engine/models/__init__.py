"""Model loading: shipped toy models, models built from a config, local folders, pretrained names.

``load_model(name)`` returns the engine's ``ModelSpec`` (``acdc_engine.architecture``) in eval mode:
  - a shipped model (``SHIPPED``): weights inside this package, read with safetensors (no pickle);
  - ``"random"``: built from ``config`` (HookedTransformerConfig field names) with random weights;
  - a tracr program (``tracr-reverse``, ``tracr-proportion``, ...): compiled by tracr, cached
    (``acdc_engine.tracr``; needs ``pip install 'acdc-engine[tracr]'``);
  - ``"local"``: a Hugging Face folder (``path``) written by ``save_pretrained``, converted offline
    (``acdc_engine.models.local``);
  - anything else: a pretrained name (a Hugging Face repository id such as ``EleutherAI/pythia-70m``,
    or a TransformerLens 3 name), which needs a model hub or its cache (``acdc_engine.models.hub``;
    fails at once without one, suggesting ``model=local``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from acdc_engine.core.errors import AcdcError

WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = ("toy-induction-2l", "toy-induction-mlp-2l", "toy-predecessor-2l")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AcdcError(f"device '{device}' asked for, but no CUDA GPU is visible to torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise AcdcError(f"unknown device '{device}'; choose auto, cpu or cuda")
    return device


def _dtype(name: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """float32 (default) or float64 anywhere; float16/bfloat16 on a GPU only.

    Half precision changes metric values at about the 1e-3 level, so a candidate whose score lies
    that close to the threshold can be decided differently than in float32.
    """
    from acdc_engine.core.choices import dtype_name

    name = dtype_name(name, DTYPES)
    if name in ("float16", "bfloat16") and not device.startswith("cuda"):
        raise AcdcError(f"dtype '{name}' is for GPUs; use float32 or float64 on the CPU")
    return DTYPES[name]


def load_shipped(name: str, device: str = "cpu", dtype: str = "float32"):
    """A model whose weights ship inside this package (``SHIPPED``)."""
    from acdc_engine.architecture import from_tl_weights
    from acdc_engine.formats.weights import load_weights

    meta = json.loads((WEIGHTS / f"{name}.json").read_text())
    state = load_weights(WEIGHTS / f"{name}.safetensors", device=str(device))
    model = from_tl_weights({**meta["config"], "model_name": name}, state)
    target = _dtype(dtype, device)
    return (model if target == torch.float32 else model.to(target)).eval()


def random_model(config: dict[str, Any], device: str, dtype: torch.dtype, seed: int = 0):
    """A model with random weights from ``config`` (HookedTransformerConfig field names)."""
    from acdc_engine.architecture import random_model as build

    return build({**config, "dtype": dtype}, seed=int(config.get("seed", seed) or 0)).to(device).eval()


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    config: dict[str, Any] | None = None,
    path: str | None = None,
):
    """Load model ``name`` (see the module docstring) onto ``device`` (auto, cpu, cuda); AcdcError if
    it cannot be had. ``config`` is for ``random``, ``path`` for ``local``."""
    device = resolve_device(device)
    if path is not None and name != "local":
        raise AcdcError(f"model.path is for model=local; model '{name}' takes no path")
    if name in SHIPPED:
        return load_shipped(name, device, dtype)
    if name == "random":
        if not config:
            raise AcdcError("model 'random' needs a config (HookedTransformerConfig fields, e.g. n_layers, d_model)")
        return random_model(dict(config), device, _dtype(dtype, device))
    if name.startswith("tracr-"):
        from acdc_engine.tracr import load_tracr_model

        return load_tracr_model(name, device, _dtype(dtype, device))
    if name == "local":
        from acdc_engine.models.local import load_local

        return load_local(path, device, _dtype(dtype, device))
    from acdc_engine.models.hub import load_pretrained

    return load_pretrained(name, device, _dtype(dtype, device))
