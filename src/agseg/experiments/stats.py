"""The statistics of a model comparison, as pure functions on arrays: summaries, Kruskal-Wallis, Wilcoxon, Holm; for
classifiers McNemar's test on the same cases and DeLong's test (or a paired bootstrap) of the ROC AUC difference.

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
    "CLASSIFIER_PAIRWISE_COLUMNS",
    "PAIRWISE_COLUMNS",
    "SUMMARY_COLUMNS",
    "adjust_pairwise",
    "auc_bootstrap",
    "classifier_pair_stats",
    "delong",
    "holm",
    "kruskal_all",
    "kruskal_pair",
    "match_pairs",
    "mcnemar",
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


# ------------------------------------------------------------------------------------------------- classifiers
CLASSIFIER_PAIRWISE_COLUMNS = (
    "model_a",
    "model_b",
    "n_pairs",
    "n_pairs_other_fold",
    "accuracy_a",
    "accuracy_b",
    "only_a_correct",
    "only_b_correct",
    "mcnemar_method",
    "mcnemar_statistic",
    "mcnemar_p",
    "mcnemar_p_holm",
    "auc_a",
    "auc_b",
    "auc_diff",
    "auc_method",
    "auc_statistic",
    "auc_p",
    "auc_p_holm",
    "note",
)
"""Columns of a classifier pairwise row (``agseg compare`` on classifier runs): the keys of
:func:`classifier_pair_stats` after ``model_a``, ``model_b``."""

#: McNemar's exact binomial test is used below this many discordant pairs, the chi-square test from there on.
MCNEMAR_EXACT_BELOW = 25


def mcnemar(correct_a: Any, correct_b: Any, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test of two classifiers on the same cases: do they err on different numbers of cases?

    Only the discordant pairs count: ``b`` cases where only ``a`` is right, ``c`` where only ``b`` is. Exact (the
    two-sided binomial test of ``b`` in ``b + c`` trials with p = 1/2, ``scipy.stats.binomtest``) when ``b + c`` is
    below :data:`MCNEMAR_EXACT_BELOW` (``exact=None``), else the chi-square statistic with continuity correction
    ``(|b - c| - 1)^2 / (b + c)`` on one degree of freedom (Edwards 1948).

    Args:
        correct_a, correct_b: whether each model classified each case right, aligned ``(n,)``.
        exact: force the exact (True) or chi-square (False) version; None chooses by the count.

    Returns:
        ``{"b", "c", "method" ("exact" / "chi2" / "none"), "statistic" (b for exact, chi-square otherwise), "p"}``;
        without discordant pairs ``p = 1`` and method ``"none"``.
    """
    a, bb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"{a.size} and {bb.size} cases: McNemar needs the same cases for both models")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "method": "none", "statistic": 0.0, "p": 1.0}
    if exact if exact is not None else n < MCNEMAR_EXACT_BELOW:
        return {"b": b, "c": c, "method": "exact", "statistic": float(b), "p": float(sps.binomtest(b, n, 0.5).pvalue)}
    chi2 = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "method": "chi2", "statistic": float(chi2), "p": float(sps.chi2.sf(chi2, 1))}


def _midrank_components(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components of one score: ``V10`` per positive, ``V01`` per negative (ties 1/2),
    by the midrank algorithm of Sun and Xu (2014)."""
    m, n = pos.size, neg.size
    tx, ty = sps.rankdata(pos), sps.rankdata(neg)
    tz = sps.rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return float(auc), v10, v01


def delong(positive: Any, scores_a: Any, scores_b: Any) -> dict[str, Any]:
    """DeLong's test of two correlated ROC AUCs (DeLong, DeLong and Clarke-Pearson 1988) on the same cases.

    The AUC of each score is the Mann-Whitney statistic; its variance and the covariance of the two come from the
    structural components (``V10``: per positive case, the share of negatives it outscores; ``V01``: per negative,
    the share of positives that outscore it; ties 1/2): ``S = S10 / m + S01 / n``, ``z = (A_a - A_b) /
    sqrt(S_aa + S_bb - 2 S_ab)``, two-sided normal p. Computed by hand (midranks, Sun and Xu 2014, IEEE Signal
    Process. Lett. 21:1389) because neither SciPy nor scikit-learn provides it and agseg adds no statistics
    dependency for one test; ``tests/experiments/test_classifier_stats.py`` checks it against the components computed
    from their definition.

    Args:
        positive: the true class of each case as booleans (the positive class), ``(n,)``.
        scores_a, scores_b: each model's score (probability of the positive class) for the same cases.

    Returns:
        ``{"auc_a", "auc_b", "diff" (a - b), "var_a", "var_b", "cov", "statistic" (z), "p"}``; NaN statistic and p
        without positives or negatives, ``z = 0, p = 1`` when the difference has zero variance (identical scores).
    """
    y = np.asarray(positive, dtype=bool).ravel()
    sa, sb = np.asarray(scores_a, dtype=np.float64).ravel(), np.asarray(scores_b, dtype=np.float64).ravel()
    if not y.size == sa.size == sb.size:
        raise ValueError(f"{y.size} targets, {sa.size} and {sb.size} scores: DeLong needs the same cases")
    m, n = int(y.sum()), int((~y).sum())
    nan = {"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "var_a": math.nan, "var_b": math.nan,
           "cov": math.nan, "statistic": math.nan, "p": math.nan}  # fmt: skip
    if m < 2 or n < 2:
        return nan
    aa, v10a, v01a = _midrank_components(sa[y], sa[~y])
    ab, v10b, v01b = _midrank_components(sb[y], sb[~y])
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    out = {"auc_a": aa, "auc_b": ab, "diff": aa - ab, "var_a": float(cov[0, 0]), "var_b": float(cov[1, 1]),
           "cov": float(cov[0, 1])}  # fmt: skip
    if var <= 1e-15:
        return {**out, "statistic": 0.0, "p": 1.0}
    z = (aa - ab) / math.sqrt(var)
    return {**out, "statistic": float(z), "p": float(2 * sps.norm.sf(abs(z)))}


def auc_bootstrap(
    target: Any,
    probs_a: Any,
    probs_b: Any,
    classes: Sequence[int],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of the ROC AUC difference (for more than two classes: one-vs-rest macro AUC).

    Cases are resampled with replacement (the same resample for both models), ``n_boot`` times; the two-sided p is
    twice the smaller share of resampled differences on either side of 0 (at least ``1 / n_boot``), the statistic
    the observed difference over the bootstrap standard deviation. Resamples without every class are redrawn.

    Returns:
        ``{"auc_a", "auc_b", "diff", "statistic", "p", "n_boot"}``.
    """
    from agseg.metrics.classification import roc_auc

    t = np.asarray(target).astype(np.int64).ravel()
    pa, pb = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    aa, ab = roc_auc(t, pa, classes), roc_auc(t, pb, classes)
    present = set(np.unique(t).tolist())
    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    tries = 0
    while len(diffs) < n_boot and tries < 10 * n_boot:
        tries += 1
        idx = rng.integers(0, t.size, t.size)
        if set(np.unique(t[idx]).tolist()) != present:
            continue
        diffs.append(roc_auc(t[idx], pa[idx], classes) - roc_auc(t[idx], pb[idx], classes))
    d = np.asarray(diffs)
    if not d.size or not np.isfinite(aa - ab):
        return {"auc_a": aa, "auc_b": ab, "diff": aa - ab, "statistic": math.nan, "p": math.nan, "n_boot": 0}
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    p = min(1.0, max(2 * min(np.mean(d <= 0), np.mean(d >= 0)), 1 / d.size))
    if np.all(d == 0):
        p = 1.0
    return {"auc_a": aa, "auc_b": ab, "diff": aa - ab, "statistic": (aa - ab) / sd if sd > 0 else 0.0, "p": float(p),
            "n_boot": int(d.size)}  # fmt: skip


def classifier_pair_stats(
    target_a: Any,
    target_b: Any,
    predicted_a: Any,
    predicted_b: Any,
    probs_a: Any | None,
    probs_b: Any | None,
    keys_a: Sequence[Any],
    keys_b: Sequence[Any],
    fold_a: Any,
    fold_b: Any,
    classes: Sequence[int] | None,
) -> dict[str, Any]:
    """McNemar and the AUC test of two classifiers on the cases they share (matched on ``keys``).

    Binary problems use :func:`delong` on the positive class's probability (the larger class value); more classes a
    paired :func:`auc_bootstrap` of the one-vs-rest macro AUC. Without probabilities (or ``classes``) the AUC test
    is left out with a note.

    Returns:
        The keys of :data:`CLASSIFIER_PAIRWISE_COLUMNS` after ``model_a``, ``model_b`` (the Holm columns NaN).
    """
    ia, ib = match_pairs(keys_a, keys_b)
    ta, tb = np.asarray(target_a)[ia], np.asarray(target_b)[ib]
    notes = []
    if np.any(ta != tb):
        notes.append(f"{int(np.sum(ta != tb))} matched case(s) have different targets: left out")
    same = ta == tb
    ia, ib, t = ia[same], ib[same], ta[same]
    other_fold = int(np.sum(np.asarray(fold_a)[ia] != np.asarray(fold_b)[ib])) if ia.size else 0
    if other_fold:
        notes.append(f"{other_fold} common case(s) were in different folds: the runs used different splits")
    ca, cb = np.asarray(predicted_a)[ia] == t, np.asarray(predicted_b)[ib] == t
    row: dict[str, Any] = {"n_pairs": int(ia.size), "n_pairs_other_fold": other_fold}
    if not ia.size:
        notes.append("no common (repeat, case_id): no test")
        nan = dict.fromkeys(CLASSIFIER_PAIRWISE_COLUMNS[4:-1], math.nan)
        return {**row, **nan, "mcnemar_method": "", "auc_method": "", "note": "; ".join(notes)}
    mc = mcnemar(ca, cb)
    row.update({"accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()), "only_a_correct": mc["b"],
                "only_b_correct": mc["c"], "mcnemar_method": mc["method"], "mcnemar_statistic": mc["statistic"],
                "mcnemar_p": mc["p"], "mcnemar_p_holm": math.nan})  # fmt: skip
    auc = {"auc_a": math.nan, "auc_b": math.nan, "auc_diff": math.nan, "auc_method": "", "auc_statistic": math.nan,
           "auc_p": math.nan, "auc_p_holm": math.nan}  # fmt: skip
    if probs_a is not None and probs_b is not None and classes:
        pa, pb = np.asarray(probs_a, dtype=np.float64)[ia], np.asarray(probs_b, dtype=np.float64)[ib]
        if len(classes) == 2:
            pos_a, pos_b = (p if p.ndim == 1 else p[:, -1] for p in (pa, pb))
            res = delong(t == int(classes[1]), pos_a, pos_b)
            method = "delong"
        else:
            res = auc_bootstrap(t, pa, pb, classes)
            method = f"bootstrap ({res['n_boot']})"
        auc.update({"auc_a": res["auc_a"], "auc_b": res["auc_b"], "auc_diff": res["diff"], "auc_method": method,
                    "auc_statistic": res["statistic"], "auc_p": res["p"]})  # fmt: skip
        if not math.isfinite(res["p"]):
            notes.append("the AUC test needs cases of every class (at least 2 positives and 2 negatives)")
    else:
        notes.append("no class probabilities (prob_<class> columns): no AUC test")
    return {**row, **auc, "note": "; ".join(notes)}
