"""``acdc-compare``: compare circuit files: overlap, metrics side by side, diff drawings.

    acdc-compare A.json B.json [C.json ...]            # report on stdout, diff_A_B.* in .
    acdc-compare seed0.json seed1.json --level role --out diffs/
    acdc-compare tracr-reverse outputs/.../circuit.json  # a shipped circuit by name

Prints a Markdown report (each circuit's metrics; node and edge overlap of every pair: Jaccard,
precision and recall of the second against the first) and writes, for every pair, an interactive
diff view ``diff_<A>_<B>.html`` (shared / only-A / only-B) and a diff drawing ``diff_<A>_<B>.dot``
(and ``.svg``/``.png`` when a Graphviz renderer exists and the size allows, ``acdc_engine.formats.drawing``).
Circuit files may be this engine's or EAP-IG / MIB graph files (JSON or ``.pt``). Levels and the
role mapping across model shapes: ``acdc_engine/evaluation/overlap.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

from acdc_engine.core.errors import AcdcError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acdc-compare",
        description="Compare circuits: node and edge overlap, metrics side by side, diff drawings.",
    )
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT", help="circuit JSON files (or names of shipped circuits), two or more")
    p.add_argument("--out", default=".", help="folder for the diff drawings (default: the current folder)")
    p.add_argument("--level", choices=("name", "role"), default=None,
                   help="level of the diff drawings: name (edge by edge; graphs of one shape) or role "
                        "(components by role and depth); default: name when it applies")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the comparison as JSON")
    p.add_argument("--no-drawings", action="store_true", help="print the report only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from acdc_engine.evaluation.overlap import compare_circuits, load_circuit_or_reference
    from acdc_engine.formats.diff_drawing import diff_dot
    from acdc_engine.formats.drawing import write_dot_files
    from acdc_engine.formats.atomic_files import atomic_write_bytes
    from acdc_engine.viewer import write_diff_html

    try:
        if len(args.circuits) < 2:
            raise AcdcError("give at least two circuits to compare")
        if not args.no_drawings and Path(args.out).exists() and not Path(args.out).is_dir():
            raise AcdcError(f"--out {args.out} is a file, not a folder")
        if args.json and Path(args.json).is_dir():
            raise AcdcError(f"--json {args.json} is a folder, not a file")
        circuits = [load_circuit_or_reference(spec) for spec in args.circuits]
        comparison = compare_circuits(circuits, sources=args.circuits)
        print(comparison.report())
        if args.json:
            atomic_write_bytes(Path(args.json), (json.dumps(comparison.to_dict(), indent=1) + "\n").encode())
            print(f"\ncomparison: {args.json}")
        if not args.no_drawings:
            written, notes = [], []
            for i, j in combinations(range(len(circuits)), 2):
                source = diff_dot(comparison, i, j, args.level)
                stem = f"diff_{comparison.labels[i]}_{comparison.labels[j]}"
                written += write_dot_files(source, args.out, stem, notes)
                written.append(write_diff_html(comparison, Path(args.out) / f"{stem}.html", i, j, args.level))
            print("\ndiff drawings: " + ", ".join(str(p) for p in written))
            for note in notes:
                print(f"note: {note}")
    except AcdcError as error:
        print(f"acdc-compare: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --out or --json names a place that cannot be written
        target = error.filename2 or error.filename  # os.replace's target is filename2
        print(f"acdc-compare: error: cannot write {target}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
