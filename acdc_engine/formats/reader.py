"""Reading any circuit file: this engine's JSON, or an EAP-IG / MIB graph file (JSON or ``.pt``)."""

from __future__ import annotations

from pathlib import Path

from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.circuit_file import read_circuit_bytes
from acdc_engine.formats.eap_ig import any_circuit_fields


def load_circuit(path: str | Path, attn_only: bool | None = None) -> Circuit:
    """Read and validate a circuit file: this engine's JSON, or an EAP-IG / MIB graph file (JSON or
    ``.pt``: ``acdc_engine.formats.eap_ig``; ``attn_only`` decides a model kind such a file does
    not state); AcdcError naming the file and field if it is malformed."""
    path = Path(path)
    return Circuit(**any_circuit_fields(path, read_circuit_bytes(path), attn_only))
