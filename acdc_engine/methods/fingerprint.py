"""Fingerprints: what a run was made from, to tie a checkpoint to its inputs.

The fingerprint holds the run's settings (the resolved config, flattened to dotted keys) and sha256
hashes of the model (its HookedTransformerConfig fields; its state dict: names, dtypes, shapes,
bytes) and of the task's tensors. Settings that cannot change the circuit are left out
(``IGNORED``): ``progress``, ``resume``, the ``checkpoint`` settings, the batch size (circuits and
scores are the same for any batching, tests check it; a resumed run that names no batch size keeps
the checkpoint's, so that even its pass counts are the uninterrupted run's), and the ``device``
choice: the model part records the device actually used instead (``auto`` can resolve differently
on another machine, and float results can differ between devices). Resuming with a different fingerprint is refused, naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

IGNORED = ("progress", "resume", "checkpoint", "method.batch_size", "batch_size", "device", "defaults", "threads")
"""Config keys (and everything under them) that the fingerprint leaves out."""
DATA_FIELDS = ("clean", "corrupted", "positions", "answers", "wrong_answers", "lengths", "corrupted_lengths")
"""The task's tensors a checkpoint is tied to; the lengths count only for a padded task (a task
without padding has the same fingerprint as before lengths existed)."""
_MODEL_CONFIG_IGNORED = ("device", "n_devices")


@dataclass(frozen=True)
class Fingerprint:
    """What a checkpoint was made from.

    config: the run's settings, {dotted key: JSON value}, without ``IGNORED`` keys.
    model: {"architecture": sha256, "weights": sha256, "device": the type of device it runs on}.
    data: {task tensor field: sha256, or None when the task has no such tensor}.
    """

    config: dict[str, Any]
    model: dict[str, str]
    data: dict[str, str | None]

    def differences(self, now: Fingerprint) -> list[str]:
        """What differs between this (saved) fingerprint and ``now``, one phrase each; [] if nothing."""
        out = []
        changed = [
            f"{key} ({_show(self.config, key)} in the checkpoint, {_show(now.config, key)} now)"
            for key in sorted(set(self.config) | set(now.config))
            if self.config.get(key, _ABSENT) != now.config.get(key, _ABSENT)
        ]
        if changed:
            out.append("config differs: " + "; ".join(changed))
        model = [part for part in ("architecture", "weights") if self.model.get(part) != now.model.get(part)]
        if self.model.get("device") != now.model.get("device"):
            model.append(f"device ({self.model.get('device')} in the checkpoint, {now.model.get('device')} now)")
        if model:
            out.append(f"model differs: its {' and '.join(model)}")
        data = [name for name in DATA_FIELDS if self.data.get(name) != now.data.get(name)]
        if data:
            out.append(f"data differs: the task's {', '.join(data)}")
        return out

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "model": self.model, "data": self.data}, sort_keys=True)


_ABSENT = object()


def _show(config: dict[str, Any], key: str) -> str:
    return "absent" if key not in config else json.dumps(config[key])


def fingerprint(config: Mapping[str, Any], model: torch.nn.Module, data: Any) -> Fingerprint:
    """The fingerprint of a run with settings ``config`` (nested or flat; ``IGNORED`` keys dropped) on
    ``model`` (a HookedTransformer) and ``data`` (a TaskData). Hashing reads every weight once."""
    return Fingerprint(config=_flat_settings(config), model=_model_hashes(model), data=_data_hashes(data))


def _flat_settings(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if any(name == ignored or name.startswith(ignored + ".") for ignored in IGNORED):
            continue
        if isinstance(value, Mapping) and value:
            flat.update(_flat_settings(value, name + "."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))  # as it reads back from the file
    return flat


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _model_hashes(model: torch.nn.Module) -> dict[str, str]:
    architecture = hashlib.sha256()
    config = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dataclasses.asdict(model.cfg)
    for key, value in sorted(config.items()):
        if key not in _MODEL_CONFIG_IGNORED:
            architecture.update(f"{key}={value!r};".encode())
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        _hash_tensor(weights, tensor)
    device = next(model.parameters()).device.type
    return {"architecture": architecture.hexdigest(), "weights": weights.hexdigest(), "device": device}


def _data_hashes(data: Any) -> dict[str, str | None]:
    hashes: dict[str, str | None] = {}
    for name in DATA_FIELDS:
        tensor = getattr(data, name, None)
        if name.endswith("lengths") and not getattr(data, "padded", False):
            tensor = None
        if tensor is None:
            hashes[name] = None
        else:
            digest = hashlib.sha256()
            _hash_tensor(digest, tensor)
            hashes[name] = digest.hexdigest()
    return hashes
