"""Compare cross-validation runs: per-model tables, Kruskal-Wallis and paired Wilcoxon tests, box plots.

Reproduces the statistics of the thesis (seed 000): the per-model "mean ± std" tables over folds and repeats
(Tables 4.1-4.8) and the pairwise Kruskal-Wallis p-values (Table 4.9), and adds a paired Wilcoxon signed-rank test
on the same cases, which the shared ``splits.json`` makes possible.

Input contract: a run directory ``RUN/`` holds ``RUN/metrics.csv`` with one row per test case per
``(repeat, fold)``: columns ``model``, ``repeat``, ``fold``, ``case_id``, then numeric metric columns (``dice``,
``hd95``, ``dice_1``, ...). Every numeric column other than ``repeat`` and ``fold`` is a metric. Values may be
``nan`` or ``inf`` (undefined, e.g. a Hausdorff distance with an empty prediction): they are counted in
``n_undefined`` and left out of means and tests, never silently dropped. ``RUN/config.yaml`` (optional) names the
model (top-level ``name``, or ``model: {name: ...}``).

Statistics, for each metric and each pair of models ``(a, b)``:

* Kruskal-Wallis (``scipy.stats.kruskal``) on the defined per-case values of ``a`` and of ``b`` (all repeats
  pooled, as in the thesis Table 4.9); unpaired.
* Wilcoxon signed-rank (``scipy.stats.wilcoxon``, two-sided, scipy defaults) on the differences ``a - b`` of the
  cases present in both runs, matched on ``(repeat, case_id)``, where both values are defined.
* Holm's step-down adjustment of each test's p-values across all pairs of that metric.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from agseg.fileio import atomic_write_bytes, atomic_write_text
from agseg.metrics.table import summarize as summarize_cases

__all__ = [
    "PAIRWISE_COLUMNS",
    "SUMMARY_COLUMNS",
    "Comparison",
    "RunMetrics",
    "compare_runs",
    "format_p",
    "holm",
    "load_run",
    "load_runs",
    "to_markdown",
    "write_comparison",
]

logger = logging.getLogger(__name__)

_ID_COLUMNS = ("model", "repeat", "fold", "case_id")
_DEFAULT_EXPERIMENT_NAME = "experiment"  # ExperimentConfig.name's default: not a useful label

SUMMARY_COLUMNS = (
    "model",
    "metric",
    "n",
    "n_defined",
    "n_undefined",
    "n_nan",
    "n_inf",
    "mean",
    "std",
    "median",
    "min",
    "max",
    "n_folds",
    "fold_mean",
    "fold_std",
)
PAIRWISE_COLUMNS = (
    "metric",
    "model_a",
    "model_b",
    "n_a",
    "n_b",
    "kw_statistic",
    "kw_p",
    "kw_p_holm",
    "n_pairs",
    "n_pairs_undefined",
    "n_pairs_other_fold",
    "median_diff",
    "mean_diff",
    "wilcoxon_statistic",
    "wilcoxon_p",
    "wilcoxon_p_holm",
    "note",
)


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class RunMetrics:
    """Per-case metrics of one model (one run).

    Attributes:
        label: Model name used in tables and plots.
        source: The CSV the rows came from.
        repeat: Repeat index of each row, shape ``(N,)``.
        fold: Fold index of each row, shape ``(N,)``.
        case_id: Case id of each row (``N`` entries).
        values: Metric name -> float values, shape ``(N,)``; NaN / inf mark undefined values.
    """

    label: str
    source: Path
    repeat: np.ndarray
    fold: np.ndarray
    case_id: list[str]
    values: dict[str, np.ndarray]

    @property
    def metrics(self) -> list[str]:
        """Metric names, in CSV column order."""
        return list(self.values)

    def __len__(self) -> int:
        return len(self.case_id)

    def keys(self) -> list[tuple[int, str]]:
        """The pairing key ``(repeat, case_id)`` of each row."""
        return [(int(r), c) for r, c in zip(self.repeat, self.case_id, strict=True)]


def _read_config_label(config_path: Path) -> str | None:
    if not config_path.is_file():
        return None
    try:
        cfg = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError) as e:
        logger.warning("%s: not readable (%s); labelling the run without it", config_path, e)
        return None
    if not isinstance(cfg, dict):
        return None
    name = cfg.get("name")
    if isinstance(name, str) and name.strip() and name != _DEFAULT_EXPERIMENT_NAME:
        return name.strip()
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"].strip():
        return model["name"].strip()
    if isinstance(model, str) and model.strip():
        return model.strip()
    return None


def _parse_float(text: str) -> float | None:
    """``float(text)`` (``nan``/``inf`` included), NaN for an empty cell, ``None`` when not a number."""
    t = text.strip()
    if not t:
        return math.nan
    try:
        return float(t)
    except ValueError:
        return None


def _resolve_csv(path: Path) -> tuple[Path, Path | None]:
    """``(metrics.csv, config.yaml or None)`` for a run directory or a CSV path."""
    if path.is_dir():
        csv_path = path / "metrics.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{path}: run directory has no metrics.csv")
        return csv_path, path / "config.yaml"
    if path.is_file():
        # A config.yaml next to a file named metrics.csv describes it; next to another CSV it may not.
        return path, (path.parent / "config.yaml" if path.name == "metrics.csv" else None)
    raise FileNotFoundError(f"{path}: no such run directory or metrics CSV")


def load_runs(path: str | os.PathLike[str]) -> list[RunMetrics]:
    """Load a run directory (``RUN/metrics.csv``) or a metrics CSV; one :class:`RunMetrics` per model in it.

    A CSV whose ``model`` column holds several models gives one run per model, labelled by that column.
    Otherwise the label is ``config.yaml``'s ``name`` (or ``model.name``), else the ``model`` column, else the run
    directory's name (the CSV's stem for a CSV not named ``metrics.csv``).

    Raises:
        FileNotFoundError: ``path`` or ``metrics.csv`` is missing (the message names the path).
        ValueError: The CSV is empty, has no ``case_id`` column, has no numeric metric column, has non-integer
            ``repeat``/``fold`` values, or lists a ``(repeat, case_id)`` twice for one model.
    """
    path = Path(path)
    csv_path, config_path = _resolve_csv(path)
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items()} for row in reader]
    if not header:
        raise ValueError(f"{csv_path}: empty file (no header row)")
    if "case_id" not in header:
        raise ValueError(f"{csv_path}: no 'case_id' column (columns: {header})")
    if not rows:
        raise ValueError(f"{csv_path}: no rows")

    metric_cols: list[str] = []
    for col in header:
        if col in _ID_COLUMNS:
            continue
        parsed = [_parse_float(r.get(col, "")) for r in rows]
        if any(p is None for p in parsed):
            logger.debug("%s: column %r is not numeric; ignored", csv_path, col)
        elif all(not (r.get(col) or "").strip() for r in rows):
            logger.debug("%s: column %r is empty; ignored", csv_path, col)
        else:
            metric_cols.append(col)
    if not metric_cols:
        raise ValueError(f"{csv_path}: no numeric metric columns (columns: {header})")

    def _int_col(name: str) -> np.ndarray:
        if name not in header:
            logger.warning("%s: no %r column; taking 0 for every row", csv_path, name)
            return np.zeros(len(rows), dtype=int)
        out = []
        for i, r in enumerate(rows):
            v = _parse_float(r.get(name, ""))
            if v is None or not math.isfinite(v) or v != int(v):
                raise ValueError(f"{csv_path}: row {i + 2}: {name}={r.get(name)!r} is not an integer")
            out.append(int(v))
        return np.asarray(out, dtype=int)

    repeat = _int_col("repeat")
    fold = _int_col("fold")
    case_id = [r.get("case_id", "").strip() for r in rows]
    model_col = [r.get("model", "").strip() for r in rows] if "model" in header else [""] * len(rows)
    values = {c: np.asarray([_parse_float(r.get(c, "")) for r in rows], dtype=float) for c in metric_cols}

    models = list(dict.fromkeys(model_col))
    if len(models) > 1:
        labels = [m or "(no model)" for m in models]
        select = [np.asarray([m == want for m in model_col]) for want in models]
    else:
        label = _read_config_label(config_path) if config_path is not None else None
        if label is None:
            label = models[0] if models and models[0] else None
        if label is None:
            label = csv_path.parent.name if csv_path.name == "metrics.csv" else csv_path.stem
        labels = [label or csv_path.stem]
        select = [np.ones(len(rows), dtype=bool)]

    runs = []
    for label, mask in zip(labels, select, strict=True):
        idx = np.flatnonzero(mask)
        run = RunMetrics(
            label=label,
            source=csv_path,
            repeat=repeat[idx],
            fold=fold[idx],
            case_id=[case_id[i] for i in idx],
            values={c: v[idx] for c, v in values.items()},
        )
        seen: dict[tuple[int, str], int] = {}
        for j, key in enumerate(run.keys()):
            if key in seen:
                raise ValueError(
                    f"{csv_path}: model {label!r} lists case {key[1]!r} twice in repeat {key[0]} "
                    f"(rows {idx[seen[key]] + 2} and {idx[j] + 2}); a case must be in one test fold per repeat"
                )
            seen[key] = j
        runs.append(run)
        logger.debug("loaded %s: %s, %d rows, metrics %s", csv_path, label, len(run), run.metrics)
    return runs


def load_run(path: str | os.PathLike[str]) -> RunMetrics:
    """Load one model's run: a run directory (``RUN/metrics.csv``) or a metrics CSV.

    See :func:`load_runs` for labelling; this raises a ``ValueError`` when the CSV holds several models.
    """
    runs = load_runs(path)
    if len(runs) > 1:
        raise ValueError(f"{path}: holds {len(runs)} models ({[r.label for r in runs]}); use load_runs() to split them")
    return runs[0]


# --------------------------------------------------------------------------------------------------- statistics


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries stay NaN and are not counted.

    Args:
        pvalues: Raw p-values.

    Returns:
        Adjusted p-values in the input order: the ``i``-th smallest of ``m`` is ``max_{j<=i} min(1, (m-j+1) p_j)``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out.tolist()


def _summary_stats(values: np.ndarray, repeat: np.ndarray, fold: np.ndarray) -> dict[str, Any]:
    """Per-case statistics (``agseg.metrics.table.summarize``) and mean ± std (ddof=1) of the per-fold means."""
    case_level = summarize_cases([{"v": float(v)} for v in values], ["v"])["v"]
    defined = np.isfinite(values)
    fold_means = []
    for r, k in sorted(set(zip(repeat.tolist(), fold.tolist(), strict=True))):
        sel = defined & (repeat == r) & (fold == k)
        if sel.any():
            fold_means.append(float(values[sel].mean()))
    fm = np.asarray(fold_means, dtype=float)
    return {
        "n": case_level.n,
        "n_defined": case_level.n_defined,
        "n_undefined": case_level.n_undefined,
        "n_nan": case_level.n_nan,
        "n_inf": case_level.n_inf,
        "mean": case_level.mean,
        "std": case_level.std,
        "median": case_level.median,
        "min": case_level.min,
        "max": case_level.max,
        "n_folds": int(fm.size),
        "fold_mean": float(fm.mean()) if fm.size else math.nan,
        "fold_std": float(fm.std(ddof=1)) if fm.size > 1 else math.nan,
    }


def _kruskal(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, "Kruskal-Wallis needs defined values in both models"
    if np.all(np.concatenate([a, b]) == a[0]):
        return 0.0, 1.0, "all values identical: Kruskal-Wallis p set to 1"
    res = stats.kruskal(a, b)
    return float(res.statistic), float(res.pvalue), ""


def _wilcoxon(d: np.ndarray) -> tuple[float, float, str]:
    if d.size == 0:
        return math.nan, math.nan, ""
    if np.all(d == 0):
        return 0.0, 1.0, "all paired differences are zero: Wilcoxon p set to 1"
    res = stats.wilcoxon(d)
    return float(res.statistic), float(res.pvalue), ""


def _pair_stats(a: RunMetrics, b: RunMetrics, metric: str) -> dict[str, Any]:
    va, vb = a.values[metric], b.values[metric]
    da, db = va[np.isfinite(va)], vb[np.isfinite(vb)]
    kw_stat, kw_p, kw_note = _kruskal(da, db)
    notes = [kw_note] if kw_note else []

    index_b = {key: j for j, key in enumerate(b.keys())}
    ia, ib = [], []
    for i, key in enumerate(a.keys()):
        j = index_b.get(key)
        if j is not None:
            ia.append(i)
            ib.append(j)
    ia_arr, ib_arr = np.asarray(ia, dtype=int), np.asarray(ib, dtype=int)
    common = ia_arr.size
    other_fold = int(np.sum(a.fold[ia_arr] != b.fold[ib_arr])) if common else 0
    both = np.isfinite(va[ia_arr]) & np.isfinite(vb[ib_arr]) if common else np.zeros(0, dtype=bool)
    diffs = va[ia_arr][both] - vb[ib_arr][both] if common else np.zeros(0)
    w_stat, w_p, w_note = _wilcoxon(diffs)
    if common == 0:
        notes.append("no common (repeat, case_id): Wilcoxon not computed")
    elif diffs.size == 0:
        notes.append("no common case with both values defined: Wilcoxon not computed")
    if w_note:
        notes.append(w_note)
    if other_fold:
        notes.append(f"{other_fold} common case(s) were in different folds: the runs used different splits")
    return {
        "metric": metric,
        "model_a": a.label,
        "model_b": b.label,
        "n_a": int(da.size),
        "n_b": int(db.size),
        "kw_statistic": kw_stat,
        "kw_p": kw_p,
        "kw_p_holm": math.nan,
        "n_pairs": int(diffs.size),
        "n_pairs_undefined": int(common - diffs.size),
        "n_pairs_other_fold": other_fold,
        "median_diff": float(np.median(diffs)) if diffs.size else math.nan,
        "mean_diff": float(diffs.mean()) if diffs.size else math.nan,
        "wilcoxon_statistic": w_stat,
        "wilcoxon_p": w_p,
        "wilcoxon_p_holm": math.nan,
        "note": "; ".join(notes),
    }


@dataclass
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes:
        runs: The compared runs (labels unique).
        metrics: The compared metric names.
        summary: One dict per (model, metric) with the keys of :data:`SUMMARY_COLUMNS`.
        pairwise: One dict per (metric, pair of models) with the keys of :data:`PAIRWISE_COLUMNS`; pairs follow
            the order of ``runs`` (``model_a`` before ``model_b``); differences are ``a - b``.
        omnibus: Metric -> Kruskal-Wallis ``(statistic, p)`` over all models (NaN with fewer than 3 models).
        notes: Warnings about the comparison (missing metrics, fewer than two models, ...).
    """

    runs: list[RunMetrics]
    metrics: list[str]
    summary: list[dict[str, Any]] = field(default_factory=list)
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    omnibus: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Model labels, in run order."""
        return [r.label for r in self.runs]

    def summary_row(self, model: str, metric: str) -> dict[str, Any]:
        """The summary row of ``model`` and ``metric``."""
        for row in self.summary:
            if row["model"] == model and row["metric"] == metric:
                return row
        raise KeyError(f"no summary for model {model!r}, metric {metric!r}")

    def pair(self, metric: str, model_a: str, model_b: str) -> dict[str, Any]:
        """The pairwise row of ``metric`` for models ``model_a`` and ``model_b`` (either order as stored)."""
        for row in self.pairwise:
            if row["metric"] == metric and {row["model_a"], row["model_b"]} == {model_a, model_b}:
                return row
        raise KeyError(f"no pairwise row for {metric!r}: {model_a!r} vs {model_b!r}")


def _unique_labels(runs: list[RunMetrics]) -> None:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    seen: dict[str, int] = {}
    for r in runs:
        if counts[r.label] > 1:
            base = r.label
            seen[base] = seen.get(base, 0) + 1
            r.label = f"{base} ({r.source.parent.name})" if r.source.name == "metrics.csv" else f"{base} ({seen[base]})"
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):  # same directory names too: number them
        for i, r in enumerate(runs):
            r.label = f"{r.label} #{i + 1}"
    if any(counts[k] > 1 for k in counts):
        logger.warning("duplicate model labels made unique: %s (use --label to name them)", [r.label for r in runs])


def compare_runs(
    runs: Sequence[RunMetrics | str | os.PathLike[str]],
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> Comparison:
    """Per-model summaries and pairwise tests for every metric.

    Args:
        runs: :class:`RunMetrics`, run directories or metrics CSVs (a CSV with several models gives several runs).
        metrics: Metrics to compare; default: those present in every run, in the first run's column order.
        labels: Model labels overriding the loaded ones, one per run (after expanding multi-model CSVs).

    Returns:
        The :class:`Comparison`. With one run only the summary is filled and ``notes`` says why no test was run.

    Raises:
        ValueError: No runs, a ``labels`` count that differs from the runs, a requested metric missing from a run,
            or no metric common to all runs.
        FileNotFoundError: A run path does not exist.
    """
    loaded: list[RunMetrics] = []
    for r in runs:
        if isinstance(r, RunMetrics):
            loaded.append(RunMetrics(r.label, r.source, r.repeat, r.fold, list(r.case_id), dict(r.values)))
        else:
            loaded.extend(load_runs(r))
    if not loaded:
        raise ValueError("no runs to compare")
    if labels:
        if len(labels) != len(loaded):
            raise ValueError(f"{len(labels)} label(s) given for {len(loaded)} run(s) ({[r.label for r in loaded]})")
        for r, lab in zip(loaded, labels, strict=True):
            r.label = str(lab)
    _unique_labels(loaded)

    notes: list[str] = []
    if metrics:
        metric_list = list(dict.fromkeys(metrics))
        for r in loaded:
            missing = [m for m in metric_list if m not in r.values]
            if missing:
                raise ValueError(f"{r.source}: run {r.label!r} has no metric(s) {missing} (it has {r.metrics})")
    else:
        metric_list = [m for m in loaded[0].metrics if all(m in r.values for r in loaded[1:])]
        left_out = sorted({m for r in loaded for m in r.metrics} - set(metric_list))
        if left_out:
            notes.append(f"metrics not in every run, not compared: {left_out}")
        if not metric_list:
            raise ValueError(f"no metric is common to all runs: {[(r.label, r.metrics) for r in loaded]}")

    cmp = Comparison(runs=loaded, metrics=metric_list, notes=notes)
    for r in loaded:
        for m in metric_list:
            cmp.summary.append({"model": r.label, "metric": m, **_summary_stats(r.values[m], r.repeat, r.fold)})

    if len(loaded) < 2:
        cmp.notes.append(f"only one model ({loaded[0].label!r}): pairwise tests need at least two runs; summary only")
        return cmp

    for m in metric_list:
        rows = [_pair_stats(a, b, m) for a, b in combinations(loaded, 2)]
        for key in ("kw", "wilcoxon"):
            for row, adj in zip(rows, holm([row[f"{key}_p"] for row in rows]), strict=True):
                row[f"{key}_p_holm"] = adj
        cmp.pairwise.extend(rows)
        samples = [r.values[m][np.isfinite(r.values[m])] for r in loaded]
        if len(loaded) > 2 and all(s.size for s in samples) and not np.all(np.concatenate(samples) == samples[0][0]):
            res = stats.kruskal(*samples)
            cmp.omnibus[m] = (float(res.statistic), float(res.pvalue))
        else:
            cmp.omnibus[m] = (math.nan, math.nan)
    if any(row["n_pairs"] == 0 for row in cmp.pairwise):
        cmp.notes.append("some pairs of runs share no defined (repeat, case_id): their Wilcoxon p is n/a")
    if any(row["n_pairs_other_fold"] for row in cmp.pairwise):
        cmp.notes.append("some runs put the same case in different folds: they did not share one splits.json")
    return cmp


# --------------------------------------------------------------------------------------------------- output


def format_p(p: float) -> str:
    """A p-value as shown in ``compare.md``: ``n/a``, ``1.2e-05`` below 0.001, else 3 significant digits."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3g}"


def _fmt(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _model_rows(c: Comparison, cell: Callable[[dict[str, Any]], str]) -> list[list[str]]:
    """One row per model: its label, then ``cell(summary row)`` for every metric."""
    return [[r.label, *(cell(c.summary_row(r.label, m)) for m in c.metrics)] for r in c.runs]


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else its last two parts (no machine paths)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(*Path(path).parts[-2:]).as_posix()


def to_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown: runs, per-model tables (per case and per fold), pairwise tests per metric."""
    c = comparison
    out = ["# Model comparison", ""]
    run_rows = []
    for r in c.runs:
        run_rows.append(
            [
                r.label,
                _display_path(r.source),
                str(len(r)),
                str(len(set(r.repeat.tolist()))),
                str(len(set(r.fold.tolist()))),
            ]
        )
    out += [_md_table(["Model", "Source", "Rows", "Repeats", "Folds"], run_rows), ""]

    out += ["## Per-model results", "", "Per case, all folds and repeats: mean ± std (median); undefined values"]
    out += ["(NaN/inf) are left out and counted.", ""]

    def per_case(s: dict[str, Any]) -> str:
        cell = f"{_fmt(s['mean'])} ± {_fmt(s['std'])} ({_fmt(s['median'])})"
        return cell + (f" [{s['n_undefined']}/{s['n']} undefined]" if s["n_undefined"] else "")

    def per_fold(s: dict[str, Any]) -> str:
        return f"{_fmt(s['fold_mean'])} ± {_fmt(s['fold_std'])} ({s['n_folds']} folds)"

    out += [_md_table(["Model", *c.metrics], _model_rows(c, per_case)), ""]
    out += ["Mean ± std of the per-fold means (as the thesis Tables 4.1-4.8 report fold averages):", ""]
    rows = _model_rows(c, per_fold)
    out += [_md_table(["Model", *c.metrics], rows), ""]

    if c.pairwise:
        out += ["## Pairwise tests", ""]
        out += [
            "Kruskal-Wallis on the defined per-case values of each model (as thesis Table 4.9); paired Wilcoxon "
            "signed-rank on the differences #1 − #2 of the cases in both runs, matched on (repeat, case_id); "
            "Holm adjustment across the pairs of each metric.",
            "",
        ]
        for m in c.metrics:
            rows = []
            for p in (p for p in c.pairwise if p["metric"] == m):
                rows.append(
                    [
                        p["model_a"],
                        p["model_b"],
                        format_p(p["kw_p"]),
                        format_p(p["kw_p_holm"]),
                        format_p(p["wilcoxon_p"]),
                        format_p(p["wilcoxon_p_holm"]),
                        str(p["n_pairs"])
                        + (f" (+{p['n_pairs_undefined']} undefined)" if p["n_pairs_undefined"] else ""),
                        _fmt(p["median_diff"]),
                    ]
                )
            out += [f"### {m}", ""]
            if len(c.runs) > 2:
                _, pv = c.omnibus.get(m, (math.nan, math.nan))
                out += [f"Kruskal-Wallis over all {len(c.runs)} models: p = {format_p(pv)}", ""]
            header = [
                "Model #1",
                "Model #2",
                "Kruskal-Wallis p",
                "KW p (Holm)",
                "Wilcoxon p",
                "Wilcoxon p (Holm)",
                "pairs",
                "median diff (#1 − #2)",
            ]
            out += [_md_table(header, rows), ""]
        pair_notes = [f"{p['metric']}: {p['model_a']} vs {p['model_b']}: {p['note']}" for p in c.pairwise if p["note"]]
    else:
        pair_notes = []
    if c.notes or pair_notes:
        out += ["## Notes", ""] + [f"- {n}" for n in [*c.notes, *pair_notes]] + [""]
    return "\n".join(out)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [repr(float(v)) if isinstance(v, float | np.floating) else v for v in (row[c] for c in columns)]
        )
    return buf.getvalue()


def _safe_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric) or "metric"


def _boxplot_png(comparison: Comparison, metric: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data, ticks = [], []
    for r in comparison.runs:
        v = r.values[metric]
        x = v[np.isfinite(v)]
        data.append(x)
        n_undef = int(v.size - x.size)
        ticks.append(f"{r.label}\nn={x.size}" + (f", {n_undef} undefined" if n_undef else ""))
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


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """Write ``summary.csv``, ``pairwise.csv``, ``compare.md`` and ``boxplot_<metric>.png`` into ``out_dir``.

    Every file is written atomically (temporary file in ``out_dir``, then ``os.replace``).

    Args:
        comparison: From :func:`compare_runs`.
        out_dir: Output folder (created).
        plots: Also write one box plot per metric (one box per model, undefined values left out and counted in
            the tick label).

    Returns:
        The written paths, in that order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("summary.csv", _csv_text(SUMMARY_COLUMNS, comparison.summary)),
        ("pairwise.csv", _csv_text(PAIRWISE_COLUMNS, comparison.pairwise)),
        ("compare.md", to_markdown(comparison)),
    ):
        atomic_write_text(out / name, text)
        written.append(out / name)
    if plots:
        for m in comparison.metrics:
            path = out / f"boxplot_{_safe_name(m)}.png"
            atomic_write_bytes(path, _boxplot_png(comparison, m))
            written.append(path)
    logger.info("wrote %d file(s) to %s", len(written), out)
    return written
