"""Interchange with other tools: EAP-IG graph files (JSON and ``.pt``, which the MIB circuit track
reads) and MIB circuit-track submissions.

``acdc_engine.load_circuit`` reads EAP-IG / MIB files through ``eap_ig.any_circuit_fields``; ``circuit_to_eap_ig`` / ``circuit_to_eap_ig_pt`` write one; ``acdc_engine.interchange.mib``
writes MIB's submission folders.
"""

from __future__ import annotations

from typing import Any

from acdc_engine.circuit import Circuit
from acdc_engine.interchange.eap_ig import (
    circuit_to_eap_ig,
    circuit_to_eap_ig_pt,
    eap_ig_fields,
    eap_ig_pt_fields,
    is_eap_ig_json,
    is_torch_file,
)


def circuit_from_eap_ig(data: Any, source: str = "circuit", attn_only: bool | None = None) -> Circuit:
    """The circuit of a parsed EAP-IG / MIB graph JSON (``eap_ig_fields``)."""
    return Circuit(**eap_ig_fields(data, source, attn_only))


def circuit_from_eap_ig_pt(raw: bytes, source: str = "circuit", attn_only: bool | None = None) -> Circuit:
    """The circuit of an EAP-IG / MIB ``.pt`` graph file's bytes (``eap_ig_pt_fields``)."""
    return Circuit(**eap_ig_pt_fields(raw, source, attn_only))


__all__ = [
    "circuit_from_eap_ig",
    "circuit_from_eap_ig_pt",
    "circuit_to_eap_ig",
    "circuit_to_eap_ig_pt",
    "is_eap_ig_json",
    "is_torch_file",
]
