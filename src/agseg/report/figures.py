"""Figures of a model comparison: one box plot per metric (PNG bytes, Matplotlib's Agg canvas, no display).

The figure functions return PNG bytes instead of writing files, so the caller decides where they go (atomically,
in ``compare/``; inline, in an HTML report). Undefined values (NaN/inf) are left out of the boxes and their count is
shown in the tick label, never silently dropped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agseg.experiments.compare import Comparison

__all__ = ["boxplot_filename", "boxplot_png", "comparison_boxplot_png"]


def boxplot_filename(metric: str) -> str:
    """``boxplot_<metric>.png``, with characters other than letters, digits, ``_.-`` replaced by ``_``."""
    return f"boxplot_{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric) or 'metric'}.png"


def boxplot_png(samples: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]], metric: str) -> bytes:
    """A box plot with one box per model (points overlaid when at most 500, mean marked) as PNG bytes.

    Args:
        samples: Model label -> per-case values, shape ``(N,)`` (a mapping, or ``(label, values)`` pairs), one box
            each in this order; NaN/inf are left out and counted in the tick label.
        metric: Metric name (y label and title).

    Returns:
        The PNG file's bytes (100 dpi, 4 inches high, wider with more models). The overlaid points are jittered
        with a fixed seed, so the bytes are the same for the same input.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data, ticks = [], []
    for label, v in samples.items() if isinstance(samples, Mapping) else samples:
        v = np.asarray(v, dtype=float)
        x = v[np.isfinite(v)]
        data.append(x)
        n_undef = int(v.size - x.size)
        ticks.append(f"{label}\nn={x.size}" + (f", {n_undef} undefined" if n_undef else ""))
    fig = Figure(figsize=(max(4.0, 1.6 * len(data) + 1.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(1, len(data) + 1)
    nonempty = [i for i, x in enumerate(data) if x.size]
    if nonempty:
        ax.boxplot([data[i] for i in nonempty], positions=positions[nonempty], widths=0.5, showmeans=True)
    rng = np.random.default_rng(0)
    for i, x in enumerate(data):
        if 0 < x.size <= 500:
            ax.scatter(positions[i] + rng.uniform(-0.12, 0.12, x.size), x, s=6, alpha=0.35, color="k", zorder=3)
    ax.set_xticks(positions, ticks)
    ax.set_xlim(0.4, len(data) + 0.6)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per case")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def comparison_boxplot_png(comparison: Comparison, metric: str) -> bytes:
    """:func:`boxplot_png` of ``metric`` for every run of ``comparison``, in run order."""
    return boxplot_png([(r.label, r.values[metric]) for r in comparison.runs], metric)
