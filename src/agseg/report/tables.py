"""Tables of a model comparison: the Markdown of ``compare.md``, its cells and rows, and the CSV text.

Every function takes a :class:`~agseg.experiments.compare.Comparison` (or its plain parts: summary and pairwise
rows) and returns strings or lists of cells, so a later HTML report can lay out the same rows differently.
Nothing here computes a statistic (:mod:`agseg.experiments.stats` does) or writes a file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from agseg.experiments.compare import Comparison

__all__ = [
    "PAIRWISE_HEADER",
    "RUN_HEADER",
    "csv_text",
    "display_path",
    "format_p",
    "format_value",
    "md_table",
    "model_rows",
    "pair_notes",
    "pairwise_rows",
    "per_case_cell",
    "per_fold_cell",
    "run_rows",
    "to_markdown",
]

PAIRWISE_HEADER = (
    "Model #1",
    "Model #2",
    "Kruskal-Wallis p",
    "KW p (Holm)",
    "Wilcoxon p",
    "Wilcoxon p (Holm)",
    "pairs",
    "median diff (#1 − #2)",
)
"""Header of the per-metric pairwise table (the layout of thesis Table 4.9), one entry per :func:`pairwise_rows`
cell."""

RUN_HEADER = ("Model", "Source", "Rows", "Repeats", "Folds")


def format_p(p: float | None) -> str:
    """A p-value as shown in ``compare.md``: ``n/a``, ``1.2e-05`` below 0.001, else 3 significant digits."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3g}"


def format_value(x: float | None) -> str:
    """A statistic as shown in ``compare.md``: ``n/a`` for None/NaN, ``inf``/``-inf``, else 4 significant digits."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped), without a trailing newline."""

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when inside it, else its last two parts (no machine paths)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(*Path(path).parts[-2:]).as_posix()


def run_rows(comparison: Comparison) -> list[list[str]]:
    """One row per run: label, source CSV (:func:`display_path`), rows, distinct repeats, distinct folds."""
    return [
        [
            r.label,
            display_path(r.source),
            str(len(r)),
            str(len(set(r.repeat.tolist()))),
            str(len(set(r.fold.tolist()))),
        ]
        for r in comparison.runs
    ]


def per_case_cell(s: Mapping[str, Any]) -> str:
    """A summary row as ``mean ± std (median)``, with ``[k/n undefined]`` when any value was undefined."""
    cell = f"{format_value(s['mean'])} ± {format_value(s['std'])} ({format_value(s['median'])})"
    return cell + (f" [{s['n_undefined']}/{s['n']} undefined]" if s["n_undefined"] else "")


def per_fold_cell(s: Mapping[str, Any]) -> str:
    """A summary row as ``fold_mean ± fold_std (k folds)``."""
    return f"{format_value(s['fold_mean'])} ± {format_value(s['fold_std'])} ({s['n_folds']} folds)"


def model_rows(comparison: Comparison, cell: Callable[[Mapping[str, Any]], str]) -> list[list[str]]:
    """One row per model: its label, then ``cell(summary row)`` for every metric of the comparison."""
    c = comparison
    return [[r.label, *(cell(c.summary_row(r.label, m)) for m in c.metrics)] for r in c.runs]


def pairwise_rows(pairwise: Sequence[Mapping[str, Any]], metric: str) -> list[list[str]]:
    """The cells of :data:`PAIRWISE_HEADER` for every pairwise row of ``metric``, in stored order."""
    rows = []
    for p in (p for p in pairwise if p["metric"] == metric):
        rows.append(
            [
                p["model_a"],
                p["model_b"],
                format_p(p["kw_p"]),
                format_p(p["kw_p_holm"]),
                format_p(p["wilcoxon_p"]),
                format_p(p["wilcoxon_p_holm"]),
                str(p["n_pairs"]) + (f" (+{p['n_pairs_undefined']} undefined)" if p["n_pairs_undefined"] else ""),
                format_value(p["median_diff"]),
            ]
        )
    return rows


def pair_notes(pairwise: Sequence[Mapping[str, Any]]) -> list[str]:
    """``"metric: a vs b: note"`` for every pairwise row with a note."""
    return [f"{p['metric']}: {p['model_a']} vs {p['model_b']}: {p['note']}" for p in pairwise if p["note"]]


def to_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown: runs, per-model tables (per case and per fold), pairwise tests per metric."""
    c = comparison
    out = ["# Model comparison", ""]
    out += [md_table(RUN_HEADER, run_rows(c)), ""]

    out += ["## Per-model results", "", "Per case, all folds and repeats: mean ± std (median); undefined values"]
    out += ["(NaN/inf) are left out and counted.", ""]
    out += [md_table(["Model", *c.metrics], model_rows(c, per_case_cell)), ""]
    out += ["Mean ± std of the per-fold means (as the thesis Tables 4.1-4.8 report fold averages):", ""]
    out += [md_table(["Model", *c.metrics], model_rows(c, per_fold_cell)), ""]

    notes = list(c.notes)
    if c.pairwise:
        out += ["## Pairwise tests", ""]
        out += [
            "Kruskal-Wallis on the defined per-case values of each model (as thesis Table 4.9); paired Wilcoxon "
            "signed-rank on the differences #1 − #2 of the cases in both runs, matched on (repeat, case_id); "
            "Holm adjustment across the pairs of each metric.",
            "",
        ]
        for m in c.metrics:
            out += [f"### {m}", ""]
            if len(c.runs) > 2:
                _, pv = c.omnibus.get(m, (math.nan, math.nan))
                out += [f"Kruskal-Wallis over all {len(c.runs)} models: p = {format_p(pv)}", ""]
            out += [md_table(PAIRWISE_HEADER, pairwise_rows(c.pairwise, m)), ""]
        notes += pair_notes(c.pairwise)
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV text (``\\n`` line ends) with ``columns`` in order; floats as ``repr`` (round-trip exact)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [repr(float(v)) if isinstance(v, float | np.floating) else v for v in (row[c] for c in columns)]
        )
    return buf.getvalue()
