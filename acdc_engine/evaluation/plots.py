"""Figures of ROC and faithfulness curves, written as PNG and SVG (matplotlib, no display needed).

``plot_roc``: edge-level and node-level ROC side by side, one line per method, AUC in the legend.
``plot_faithfulness``: normalised faithfulness against circuit size (fraction of the graph's edges,
log axis; circuits with no edge are left off it), one line per method.
Legends sit outside the plot area (below each ROC panel, right of the faithfulness axes), so no
curve is hidden; every text is in one sans-serif family (``STYLE``); PNGs are at ``PNG_DPI``.
Files are written atomically; SVGs are reproducible (fixed hash salt, no date).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import matplotlib
from matplotlib.figure import Figure

from acdc_engine.evaluation.faithfulness import FaithfulnessCurve
from acdc_engine.evaluation.roc import RocCurve
from acdc_engine.formats.atomic_files import atomic_write_bytes

COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
MARKERS = ("o", "s", "^", "D", "v", "P")
PNG_DPI = 180  # a resolution fit for slides
STYLE = {"font.family": "sans-serif", "svg.hashsalt": "acdc-engine"}  # in force while a figure is built and saved


def save_figure(figure: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.svg; returns their paths."""
    written = []
    with matplotlib.rc_context(STYLE):
        for fmt in ("png", "svg"):
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {}
            figure.savefig(buffer, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata=metadata)
            written.append(atomic_write_bytes(Path(f"{stem}.{fmt}"), buffer.getvalue()))
    return written


def plot_roc(curves: Mapping[str, Mapping[str, RocCurve]], stem: str | Path, title: str = "") -> list[Path]:
    """curves: {method label: {"edge": RocCurve, "node": RocCurve}} -> ``stem``.png, ``stem``.svg."""
    with matplotlib.rc_context(STYLE):
        return save_figure(_roc_figure(curves, title), stem)


def _roc_figure(curves: Mapping[str, Mapping[str, RocCurve]], title: str) -> Figure:
    figure = Figure(figsize=(9.5, 4.4))
    axes = figure.subplots(1, 2, sharey=True)
    for ax, level in zip(axes, ("edge", "node")):
        ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":", linewidth=1)
        for i, (label, by_level) in enumerate(curves.items()):
            if level not in by_level:
                continue
            curve = by_level[level]
            points = sorted({(0.0, 0.0), (1.0, 1.0), *((p.fpr, p.tpr) for p in curve.points)})
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=COLOURS[i % len(COLOURS)], marker=MARKERS[i % len(MARKERS)], markersize=3.5,
                    linewidth=1.5, label=f"{label} (AUC {curve.auc:.3f})")
        ax.set_title(f"{level} level")
        ax.set_xlabel("false positive rate")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    axes[0].set_ylabel("true positive rate")
    if title:
        figure.suptitle(title)
    return figure


def plot_faithfulness(curves: Mapping[str, FaithfulnessCurve], stem: str | Path, title: str = "", metric: str = "") -> list[Path]:
    """curves: {method label: FaithfulnessCurve} -> ``stem``.png, ``stem``.svg (f against circuit size)."""
    with matplotlib.rc_context(STYLE):
        return save_figure(_faithfulness_figure(curves, title, metric), stem)


def _faithfulness_figure(curves: Mapping[str, FaithfulnessCurve], title: str, metric: str) -> Figure:
    figure = Figure(figsize=(6.4, 4.4))
    ax = figure.subplots()
    ax.axhline(1.0, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.axhline(0.0, color="#bbbbbb", linestyle=":", linewidth=1)
    for i, (label, curve) in enumerate(curves.items()):
        points = [(s, f) for s, f in zip(curve.sizes, curve.faithfulness) if s > 0]
        if not points:
            continue
        xs, ys = zip(*points)
        extra = f" (CPR {curve.cpr:.3f}, CMD {curve.cmd:.3f})" if curve.ranked else ""
        ax.plot(xs, ys, color=COLOURS[i % len(COLOURS)], marker=MARKERS[i % len(MARKERS)], markersize=3.5,
                linewidth=1.5, label=label + extra)
    ax.set_xscale("log")
    ax.set_xlabel("circuit size (fraction of the graph's edges)")
    ax.set_ylabel(f"normalised faithfulness{f' ({metric})' if metric else ''}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return figure
