"""``acdc-summary``: gather the runs of a (multi)run folder into one table.

    acdc-summary outputs/multirun/2026-11-22/07-39-19-123456          # Markdown on stdout
    acdc-summary outputs/multirun/2026-11-22/07-39-19-123456 --csv runs.csv

Every ``circuit.json`` under the folder is one row: the run's folder (relative to the one given),
its threshold (ACDC's tau, EAP's score threshold, or ``top N``), edges in the circuit out of the
graph's, the metric of the circuit, and the run's seconds. Model, task, method and metric name
head the table when every run shares them, else they get columns of their own. Rows follow the run
folders in natural order (Hydra's job numbers: 0, 1, ..., 10). Folders of runs that wrote no circuit
file (failed or unfinished jobs: a ``.hydra`` folder or a failed job's ``error.txt``, and no
``circuit.json``) are listed below it, with the error each failed job left.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.circuit_header import CircuitHeader, read_circuit_header
from acdc_engine.formats.tables import csv_text, markdown_table
from acdc_engine.commands.run_folder import JOB_ERROR

if TYPE_CHECKING:
    from acdc_engine.core.circuit import Circuit


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _selection(circuit: CircuitHeader | Circuit) -> str:
    top_n = circuit.method.get("top_n")
    if circuit.threshold is None and top_n is not None:
        return f"top {top_n}"
    return "–" if circuit.threshold is None else f"{circuit.threshold:g}"


def gather(folder: str | Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """(one row per circuit.json under ``folder``, run folders without one); AcdcError if none.
    A file in the form ``save_circuit`` writes is read for its header only (no torch); any other
    goes through ``load_circuit`` (``acdc_engine.formats.circuit_header``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AcdcError(f"no folder {folder}")
    rows = []
    for path in sorted(folder.rglob("circuit.json"), key=_natural_key):
        circuit = read_circuit_header(path)
        if circuit is None:
            from acdc_engine.formats.reader import load_circuit

            circuit = load_circuit(path)
        run = path.parent.relative_to(folder)
        rows.append({
            "run": "." if str(run) == "." else str(run),
            "model": circuit.model.get("name", "?"),
            "task": circuit.task.get("name", "?"),
            "method": circuit.method.get("name", "?"),
            "threshold": _selection(circuit),
            "edges": circuit.n_edges,
            "edges_total": circuit.n_edges_total,
            "metric": circuit.metric.get("name", "?"),
            "circuit": circuit.metric.get("circuit"),
            "seconds": circuit.run.get("seconds"),
        })
    marks = [*folder.rglob(".hydra"), *folder.rglob(JOB_ERROR)]
    unfinished = sorted(
        {p.parent.relative_to(folder) for p in marks if not (p.parent / "circuit.json").is_file()}, key=_natural_key
    )
    if not rows:
        failed = f"; failed: {_listing(folder, unfinished)}" if unfinished else ""
        raise AcdcError(f"no circuit.json under {folder}{failed}")
    return rows, unfinished


def _listing(folder: Path, runs: list[Path]) -> str:
    """The run folders, each with the error its failed job left (``run_folder.JOB_ERROR``)."""
    out = []
    for run in runs:
        error = Path(folder) / run / JOB_ERROR
        try:
            out.append(f"{run} ({error.read_text(errors='replace').strip()})" if error.is_file() else str(run))
        except OSError:
            out.append(str(run))
    return ", ".join(out)


def markdown(rows: list[dict[str, Any]], unfinished: list[Path] | None = None, folder: str | Path | None = None) -> str:
    """The rows as Markdown: shared model/task/method/metric in a heading line, then the table, then
    the runs without a circuit (with their jobs' errors, read under ``folder``)."""
    shared = [key for key in ("model", "task", "method", "metric") if len({row[key] for row in rows}) == 1]
    varying = [key for key in ("model", "task", "method") if key not in shared]
    metric_header = rows[0]["metric"] if "metric" in shared else "metric"
    header = ["run", *varying, "threshold", "edges", metric_header, "seconds"]
    table = []
    for row in rows:
        value = "–" if row["circuit"] is None else f"{row['circuit']:.6g}"
        if "metric" not in shared:
            value = f"{row['metric']} {value}"
        seconds = "–" if row["seconds"] is None else f"{row['seconds']:.2f}"
        table.append([row["run"], *(str(row[k]) for k in varying), row["threshold"],
                      f"{row['edges']} / {row['edges_total']}", value, seconds])
    lines = []
    if shared:
        lines.append(", ".join(f"{key}: {rows[0][key]}" for key in shared) + f" ({len(rows)} runs)\n")
    lines.append(markdown_table(header, table))
    if unfinished:
        listed = _listing(Path(folder), unfinished) if folder is not None else ", ".join(str(p) for p in unfinished)
        lines.append("\nno circuit.json (failed or unfinished): " + listed)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="acdc-summary", description="Gather a (multi)run folder's circuits into one table.")
    p.add_argument("folder", help="a Hydra run or multirun folder, e.g. outputs/multirun/<date>/<time>")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write the rows as CSV")
    args = p.parse_args(argv)
    try:
        if args.csv and Path(args.csv).is_dir():
            raise AcdcError(f"--csv {args.csv} is a folder; give a file name, e.g. --csv {Path(args.csv) / 'runs.csv'}")
        rows, unfinished = gather(args.folder)
    except AcdcError as error:
        print(f"acdc-summary: error: {error}", file=sys.stderr)
        return 2
    print(markdown(rows, unfinished, args.folder))
    if args.csv:
        from acdc_engine.formats.atomic_files import atomic_write_bytes

        try:
            atomic_write_bytes(Path(args.csv), csv_text(rows).encode())
        except OSError as error:
            print(f"acdc-summary: error: cannot write --csv {args.csv} ({error.strerror or error}); "
                  "the table is on the standard output above", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
