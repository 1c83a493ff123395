"""``acdc-view``: the interactive page of a circuit file, or of two circuits' diff.

    acdc-view outputs/<date>/<time>/circuit.json          # writes circuit.html beside it
    acdc-view graph-from-eap-ig.json --out view.html      # any file load_circuit reads
    acdc-view ioi                                         # a shipped circuit: ioi.html here
    acdc-view seed0.json seed1.json --out diff.html       # shared / only-A / only-B

The page is one self-contained HTML file (no network): open it in any browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acdc_engine.commands.plain import run_command
from acdc_engine.core.errors import AcdcError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acdc-view", description="Write the interactive HTML view of a circuit file (or the diff of two).")
    p.add_argument("circuits", nargs="+", metavar="FILE", help="a circuit file (this engine's, EAP-IG / MIB JSON or .pt) or a shipped circuit's name; two for a diff")
    p.add_argument("--out", default=None, help="the HTML file (default: FILE's name with .html, beside it; a diff: diff_A_B.html here)")
    p.add_argument("--level", choices=("name", "role"), default=None, help="a diff's level (see acdc-compare)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("acdc-view", lambda: view(args))


def view(args: argparse.Namespace) -> str:
    """Write the view of one circuit, or the diff of two; the line to print."""
    from acdc_engine.evaluation.overlap import compare_circuits, load_circuit_or_reference
    from acdc_engine.viewer import write_circuit_html, write_diff_html

    if len(args.circuits) > 2:
        raise AcdcError("give one circuit, or two for a diff")
    circuits = [load_circuit_or_reference(spec) for spec in args.circuits]
    if len(circuits) == 1:
        spec = Path(args.circuits[0])
        default = spec.with_suffix(".html") if spec.is_file() else Path(f"{spec.name}.html")
        written = write_circuit_html(circuits[0], Path(args.out) if args.out else default, source=spec)
    else:
        out = Path(args.out) if args.out else Path("diff_A_B.html")
        written = write_diff_html(compare_circuits(circuits, sources=args.circuits), out, level=args.level)
    return f"view: {written}"


if __name__ == "__main__":
    sys.exit(main())
