"""Reading weight files without running code from them.

``load_weights(path)`` reads a ``.safetensors`` file (no code at all) or a PyTorch ``.pt`` / ``.pth``
/ ``.bin`` / ``.ckpt`` file through ``torch.load(weights_only=True)``, whose unpickler builds tensors
and plain containers only. A file that pickles anything else (a class, a function such as
``os.system``) is refused with an ``AcdcError`` that names the file and the object, before any of
it runs. Every other way a weight file can be unreadable (missing, truncated, corrupt, not a
mapping of names to tensors) is an ``AcdcError`` naming the file as well.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """The tensors in the weight file ``path``, by parameter name, on ``device``.

    Raises AcdcError naming the file if it is missing, of an unknown kind, unreadable, holds a
    pickled object other than tensors and plain containers ("refusing to unpickle ..."), or is not
    a flat mapping of names to tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        kinds = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise AcdcError(f"weight file {path}: unknown kind '{suffix}'; expected one of {kinds}")
    if not path.is_file():
        raise AcdcError(f"weight file {path} not found")
    state = _read_safetensors(path, device) if suffix in SAFETENSORS_SUFFIXES else _read_torch(path, device)
    if not isinstance(state, Mapping):
        raise AcdcError(f"weight file {path} holds a {type(state).__name__}, not a mapping of parameter names to tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise AcdcError(
                f"weight file {path}: entry {name!r:.80} is a {type(value).__name__}; "
                "expected parameter names mapped to tensors"
            )
    return dict(state)


def _read_safetensors(path: Path, device: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except Exception as error:  # safetensors raises its own error type and OSError; both mean unreadable
        raise AcdcError(f"cannot read safetensors file {path}: {_first_line(error)}") from None


def _read_torch(path: Path, device: str) -> object:
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols is noise beside the answer
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f"the object {found.group(1)}" if found else "pickle content other than tensors"
        raise AcdcError(
            f"refusing to unpickle {what} in weight file {path}: only tensors and plain containers "
            "are loaded (torch.load with weights_only=True), since unpickling anything else can run "
            "code; if you trust the file, convert it to safetensors"
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ValueError, ... for corrupt files
        raise AcdcError(f"cannot read weight file {path}: {type(error).__name__}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
