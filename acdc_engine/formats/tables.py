"""Plain-text tables for reports: Markdown (printed, pasted into READMEs) and CSV (for tools)."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; cells are given as strings."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV with a header row taken from the first row's keys ('' when there are no rows)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def number(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``; an en dash for None."""
    return "–" if value is None else format(value, spec)
