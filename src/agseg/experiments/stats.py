"""The statistics of a model comparison, as pure functions on arrays: summaries, Kruskal-Wallis, Wilcoxon, Holm.

Reproduces the statistics of the thesis (seed 000): per-model "mean ± std" over folds and repeats (Tables
4.1-4.8) and pairwise Kruskal-Wallis p-values (Table 4.9), and adds a paired Wilcoxon signed-rank test on the
cases two models share. Nothing here reads files or draws: :mod:`agseg.experiments.compare` loads the runs and
calls these, :mod:`agseg.report` renders their rows.

Conventions: values are float arrays in which NaN and ``±inf`` mark undefined values (e.g. a Hausdorff distance
with an empty prediction); they are left out of every statistic and counted, never silently dropped. Degenerate
tests (all values identical, all paired differences zero) give ``p = 1`` with a note instead of SciPy's NaN or
error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from agseg.metrics.table import summarize as summarize_cases

__all__ = [
    "PAIRWISE_COLUMNS",
    "SUMMARY_COLUMNS",
    "adjust_pairwise",
    "holm",
    "kruskal_all",
    "kruskal_pair",
    "match_pairs",
    "pair_stats",
    "summary_stats",
    "wilcoxon_paired",
]

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
"""Columns of a summary row: ``model`` and ``metric``, then the keys of :func:`summary_stats`."""

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
"""Columns of a pairwise row: ``metric``, ``model_a``, ``model_b``, then the keys of :func:`pair_stats`."""


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


def adjust_pairwise(rows: Sequence[dict[str, Any]]) -> None:
    """Fill ``kw_p_holm`` and ``wilcoxon_p_holm`` of one metric's pairwise rows (:func:`holm` across the rows).

    Args:
        rows: The :func:`pair_stats` rows of every pair of models for one metric; changed in place.
    """
    for key in ("kw", "wilcoxon"):
        for row, adj in zip(rows, holm([row[f"{key}_p"] for row in rows]), strict=True):
            row[f"{key}_p_holm"] = adj


def summary_stats(values: np.ndarray, repeat: np.ndarray, fold: np.ndarray) -> dict[str, Any]:
    """Per-case statistics of one model's metric and mean ± std of its per-fold means.

    Args:
        values: Per-case values, shape ``(N,)``; NaN / inf are undefined.
        repeat: Repeat index of each value, shape ``(N,)``.
        fold: Fold index of each value, shape ``(N,)``.

    Returns:
        ``n``, ``n_defined``, ``n_undefined``, ``n_nan``, ``n_inf``, ``mean``, ``std`` (ddof=1), ``median``,
        ``min``, ``max`` over the defined per-case values (:func:`agseg.metrics.table.summarize`), then
        ``n_folds`` (``(repeat, fold)`` pairs with a defined value), ``fold_mean`` and ``fold_std`` (ddof=1) of
        the per-fold means (NaN when there are none / fewer than two).
    """
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


def kruskal_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """Kruskal-Wallis H test (``scipy.stats.kruskal``) of two samples of defined values.

    Args:
        a: Defined values of one model, shape ``(n_a,)``.
        b: Defined values of the other, shape ``(n_b,)``.

    Returns:
        ``(statistic, p, note)``: NaN with a note when a sample is empty; ``(0, 1)`` with a note when every value
        is identical (SciPy would fail); otherwise SciPy's result and an empty note.
    """
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, "Kruskal-Wallis needs defined values in both models"
    if np.all(np.concatenate([a, b]) == a[0]):
        return 0.0, 1.0, "all values identical: Kruskal-Wallis p set to 1"
    res = sps.kruskal(a, b)
    return float(res.statistic), float(res.pvalue), ""


def kruskal_all(samples: Sequence[np.ndarray]) -> tuple[float, float]:
    """Kruskal-Wallis H test over several models' defined values (the omnibus test with three or more models).

    Args:
        samples: One array of defined values per model.

    Returns:
        ``(statistic, p)``; NaN when there are fewer than three samples, one is empty, or every value is identical.
    """
    if len(samples) > 2 and all(s.size for s in samples) and not np.all(np.concatenate(samples) == samples[0][0]):
        res = sps.kruskal(*samples)
        return float(res.statistic), float(res.pvalue)
    return math.nan, math.nan


def wilcoxon_paired(d: np.ndarray) -> tuple[float, float, str]:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, SciPy defaults) on paired differences.

    Args:
        d: Paired differences ``a - b``, shape ``(n_pairs,)``, all defined.

    Returns:
        ``(statistic, p, note)``: NaN without a note when ``d`` is empty (the caller says why); ``(0, 1)`` with a
        note when every difference is zero; otherwise SciPy's result and an empty note.
    """
    if d.size == 0:
        return math.nan, math.nan, ""
    if np.all(d == 0):
        return 0.0, 1.0, "all paired differences are zero: Wilcoxon p set to 1"
    res = sps.wilcoxon(d)
    return float(res.statistic), float(res.pvalue), ""


def match_pairs(keys_a: Sequence[Any], keys_b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the keys present in both sequences, in the order of ``keys_a``.

    Args:
        keys_a: Pairing key of each row of one model, e.g. ``(repeat, case_id)``; hashable, unique.
        keys_b: The same for the other model.

    Returns:
        ``(ia, ib)``, integer arrays of equal length with ``keys_a[ia[k]] == keys_b[ib[k]]``.
    """
    index_b = {key: j for j, key in enumerate(keys_b)}
    ia, ib = [], []
    for i, key in enumerate(keys_a):
        j = index_b.get(key)
        if j is not None:
            ia.append(i)
            ib.append(j)
    return np.asarray(ia, dtype=int), np.asarray(ib, dtype=int)


def pair_stats(
    values_a: np.ndarray,
    values_b: np.ndarray,
    keys_a: Sequence[Any],
    keys_b: Sequence[Any],
    fold_a: np.ndarray,
    fold_b: np.ndarray,
) -> dict[str, Any]:
    """Kruskal-Wallis (unpaired) and Wilcoxon (paired on the keys) tests of one metric for two models.

    Args:
        values_a: Per-case values of model ``a``, shape ``(N_a,)``; NaN / inf are undefined.
        values_b: The same for model ``b``, shape ``(N_b,)``.
        keys_a: Pairing key of each row of ``a`` (``(repeat, case_id)``), ``N_a`` unique entries.
        keys_b: The same for ``b``.
        fold_a: Fold of each row of ``a``, shape ``(N_a,)``; matched rows in different folds are counted.
        fold_b: The same for ``b``.

    Returns:
        The keys of :data:`PAIRWISE_COLUMNS` after ``metric``, ``model_a``, ``model_b``: ``n_a``, ``n_b``
        (defined values), ``kw_statistic``, ``kw_p``, ``n_pairs`` (matched with both values defined),
        ``n_pairs_undefined``, ``n_pairs_other_fold``, ``median_diff`` and ``mean_diff`` of ``a - b``,
        ``wilcoxon_statistic``, ``wilcoxon_p``, ``note``; ``kw_p_holm`` and ``wilcoxon_p_holm`` are NaN (the
        adjustment needs every pair of the metric: :func:`holm`).
    """
    va, vb = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    da, db = va[np.isfinite(va)], vb[np.isfinite(vb)]
    kw_stat, kw_p, kw_note = kruskal_pair(da, db)
    notes = [kw_note] if kw_note else []

    ia, ib = match_pairs(keys_a, keys_b)
    common = ia.size
    other_fold = int(np.sum(np.asarray(fold_a)[ia] != np.asarray(fold_b)[ib])) if common else 0
    both = np.isfinite(va[ia]) & np.isfinite(vb[ib]) if common else np.zeros(0, dtype=bool)
    diffs = va[ia][both] - vb[ib][both] if common else np.zeros(0)
    w_stat, w_p, w_note = wilcoxon_paired(diffs)
    if common == 0:
        notes.append("no common (repeat, case_id): Wilcoxon not computed")
    elif diffs.size == 0:
        notes.append("no common case with both values defined: Wilcoxon not computed")
    if w_note:
        notes.append(w_note)
    if other_fold:
        notes.append(f"{other_fold} common case(s) were in different folds: the runs used different splits")
    return {
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
