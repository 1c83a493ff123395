"""``acdc-convert``: circuit files between this engine's format and EAP-IG's (which MIB reads).

    acdc-convert outputs/.../circuit.json circuit-eap-ig.json --to eap-ig
    acdc-convert circuit.json circuit.pt --to eap-ig             # EAP-IG's .pt layout (Graph.to_pt)
    acdc-convert ioi ioi-eap-ig.json --to eap-ig --d-model 768   # a shipped circuit; GPT-2's d_model
    acdc-convert graph-from-eap-ig.json circuit.json --to acdc-engine

SRC is any circuit file ``load_circuit`` reads (this engine's JSON, EAP-IG / MIB JSON or ``.pt``) or
the name of a shipped circuit. What is written, and how untested edges are scored:
``acdc_engine.formats.eap_ig``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acdc_engine.commands.plain import run_command
from acdc_engine.core.errors import AcdcError

TARGETS = ("eap-ig", "acdc-engine")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acdc-convert", description="Convert circuit files between this engine's format and EAP-IG's.")
    p.add_argument("source", metavar="SRC", help="a circuit file (this engine's, EAP-IG / MIB JSON or .pt) or a shipped circuit's name")
    p.add_argument("target", metavar="DST", help="the file to write (.json; or .pt with --to eap-ig)")
    p.add_argument("--to", required=True, choices=TARGETS, help="the format of DST")
    p.add_argument("--d-model", type=int, default=None, help="the model's d_model, for EAP-IG's cfg when SRC does not record it")
    mlp = p.add_mutually_exclusive_group()
    mlp.add_argument("--attn-only", dest="attn_only", action="store_const", const=True, default=None,
                     help="read an EAP-IG SRC as an attention-only model's (default: inferred, see the docs)")
    mlp.add_argument("--with-mlp", dest="attn_only", action="store_const", const=False, help="read an EAP-IG SRC as a model with MLPs")
    return p


def _read(spec: str, attn_only: bool | None):
    from acdc_engine.evaluation.overlap import load_circuit_or_reference
    from acdc_engine.formats.eap_ig import circuit_from_eap_ig, circuit_from_eap_ig_pt, is_eap_ig_json, is_torch_file
    from acdc_engine.formats.strict_json import parse_json

    path = Path(spec)
    if attn_only is None or not path.is_file():
        return load_circuit_or_reference(spec)
    raw = path.read_bytes()
    if is_torch_file(path, raw):
        return circuit_from_eap_ig_pt(raw, source=spec, attn_only=attn_only)
    data = parse_json(raw, source=spec)
    if not is_eap_ig_json(data):
        raise AcdcError(f"{spec}: --attn-only / --with-mlp are for EAP-IG files; this one is this engine's (its model block says)")
    return circuit_from_eap_ig(data, source=spec, attn_only=attn_only)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("acdc-convert", lambda: convert(args))


def convert(args: argparse.Namespace) -> str:
    """Read ``args.source`` and write it to ``args.target`` in format ``args.to``; the line to print."""
    from acdc_engine.formats.atomic_files import atomic_write_bytes
    from acdc_engine.formats.eap_ig import circuit_to_eap_ig, circuit_to_eap_ig_pt
    from acdc_engine.formats.circuit_file import save_circuit

    target = Path(args.target)
    if target.is_dir():
        raise AcdcError(f"{target} is a folder, not a file")
    if target.suffix not in (".json", ".pt") or (target.suffix == ".pt" and args.to != "eap-ig"):
        allowed = ".json or .pt" if args.to == "eap-ig" else ".json"
        raise AcdcError(f"{target}: give a {allowed} file for --to {args.to}")
    circuit = _read(args.source, args.attn_only)
    if args.to == "acdc-engine":
        save_circuit(circuit, target)
    elif target.suffix == ".pt":
        atomic_write_bytes(target, circuit_to_eap_ig_pt(circuit, d_model=args.d_model))
    else:
        text = json.dumps(circuit_to_eap_ig(circuit, d_model=args.d_model), allow_nan=False)
        atomic_write_bytes(target, text.encode())
    return f"{target} ({args.to}): {circuit.summary()}"


if __name__ == "__main__":
    sys.exit(main())
