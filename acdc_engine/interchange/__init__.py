"""Interchange with other tools: EAP-IG graph files (JSON and ``.pt``, which the MIB circuit track
reads) and MIB circuit-track submissions.

``read_interchange(path, raw)`` reads an EAP-IG / MIB file into a ``Circuit`` (``load_circuit`` calls
it first); ``circuit_to_eap_ig`` / ``circuit_to_eap_ig_pt`` write one; ``acdc_engine.interchange.mib``
writes MIB's submission folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acdc_engine.interchange.eap_ig import (
    circuit_from_eap_ig,
    circuit_from_eap_ig_pt,
    circuit_to_eap_ig,
    circuit_to_eap_ig_pt,
)

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def is_torch_file(path: str | Path, raw: bytes) -> bool:
    """Whether a file is a torch ``.pt`` file (by its suffix or its zip header), not JSON."""
    return Path(path).suffix == ".pt" or raw[:4] == ZIP_MAGIC


def is_eap_ig_json(data: Any) -> bool:
    """Whether parsed JSON is shaped as an EAP-IG / MIB graph (it has EAP-IG's ``cfg``)."""
    return isinstance(data, dict) and "cfg" in data


__all__ = [
    "circuit_from_eap_ig",
    "circuit_from_eap_ig_pt",
    "circuit_to_eap_ig",
    "circuit_to_eap_ig_pt",
    "is_eap_ig_json",
    "is_torch_file",
]
