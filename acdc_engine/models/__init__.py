"""Model loading: shipped toy models, models built from a config, TransformerLens pretrained names.

``load_model(name)`` returns a ``transformer_lens.HookedTransformer`` in eval mode:
  - a shipped model (``SHIPPED``): weights inside this package, read with safetensors (no pickle);
  - ``"random"``: built from ``config`` (HookedTransformerConfig fields) with random weights;
  - anything else: ``HookedTransformer.from_pretrained(name)``, which needs a model hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from acdc_engine.errors import AcdcError

WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = ("toy-induction-2l",)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise AcdcError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _from_config(config: dict[str, Any], device: str, dtype: torch.dtype):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    try:
        cfg = HookedTransformerConfig(**{**config, "device": device, "dtype": dtype})
    except (TypeError, ValueError, AssertionError) as error:
        raise AcdcError(f"invalid model config: {error}") from None
    return HookedTransformer(cfg)


def load_shipped(name: str, device: str = "cpu", dtype: str = "float32"):
    """A model whose weights ship inside this package (``SHIPPED``)."""
    from safetensors.torch import load_file

    meta = json.loads((WEIGHTS / f"{name}.json").read_text())
    model = _from_config(meta["config"], device, torch.float32)
    state = load_file(str(WEIGHTS / f"{name}.safetensors"), device=device)
    model.load_state_dict(state, strict=False)
    missing = set(model.state_dict()) - set(state)
    if any(not key.endswith((".IGNORE", ".mask")) for key in missing):
        raise AcdcError(f"shipped weights for '{name}' lack parameters: {sorted(missing)[:5]}")
    return model.to(_dtype(dtype)).eval()


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    config: dict[str, Any] | None = None,
):
    """Load model ``name`` (see the module docstring); AcdcError if it cannot be had."""
    if name in SHIPPED:
        return load_shipped(name, device, dtype)
    if name == "random":
        if not config:
            raise AcdcError("model 'random' needs a config (HookedTransformerConfig fields, e.g. n_layers, d_model)")
        return _from_config(dict(config), device, _dtype(dtype)).eval()
    from transformer_lens import HookedTransformer

    try:
        model = HookedTransformer.from_pretrained(name, device=device, dtype=_dtype(dtype))
    except Exception as error:  # the hub raises many types; all mean "could not load"
        raise AcdcError(
            f"could not load pretrained model '{name}' ({type(error).__name__}: {str(error)[:200]}). "
            f"Without a model hub, use a shipped model ({', '.join(SHIPPED)}) or model=random."
        ) from None
    return model.eval()
