"""The pure statistics of a comparison: pairing, Kruskal-Wallis and Wilcoxon against SciPy, Holm, fold means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from agseg.experiments.stats import (
    PAIRWISE_COLUMNS,
    SUMMARY_COLUMNS,
    adjust_pairwise,
    holm,
    kruskal_all,
    kruskal_pair,
    match_pairs,
    pair_stats,
    summary_stats,
    wilcoxon_paired,
)


def _holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down test at level ``alpha`` (NaN never rejected): reject the ``i``-th smallest p-value while
    every smaller one ``p_(j)`` is ``<= alpha / (m - j + 1)``."""
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    reject = np.zeros(p.shape, bool)
    for j, i in enumerate(order):
        if p[i] > alpha / (len(order) - j):
            break
        reject[i] = True
    return reject


def test_holm_adjusted_p_is_the_smallest_level_that_rejects():
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = rng.uniform(0, 0.2, rng.integers(1, 8))
        p[rng.random(p.size) < 0.2] = math.nan
        adj = np.asarray(holm(p.tolist()))
        assert np.array_equal(np.isnan(adj), np.isnan(p))
        for alpha in np.linspace(0.001, 0.5, 60):
            np.testing.assert_array_equal(adj <= alpha, _holm_rejects(p, alpha), err_msg=f"{p}, alpha {alpha}")


def test_match_pairs_by_key_not_by_position():
    ia, ib = match_pairs([(0, "a"), (0, "b"), (1, "a"), (0, "c")], [(0, "c"), (1, "a"), (0, "a"), (2, "z")])
    assert ia.tolist() == [0, 2, 3] and ib.tolist() == [2, 1, 0]
    empty = match_pairs([(0, "a")], [(0, "b")])
    assert empty[0].size == 0 and empty[1].size == 0


def test_pair_stats_pairs_on_keys_and_matches_scipy():
    rng = np.random.default_rng(0)
    n = 30
    keys = [(r, f"c{i}") for r in range(2) for i in range(n // 2)]
    a = rng.normal(0.8, 0.05, n)
    b = a + rng.normal(0.03, 0.02, n)
    a[3], b[7] = math.nan, math.inf  # undefined: out of both tests, counted
    perm = rng.permutation(n)  # model b lists its cases in another order and put two of them in other folds
    fold_a = np.arange(n) % 5
    fold_b = fold_a[perm].copy()
    fold_b[:2] += 1
    row = pair_stats(a, b[perm], keys, [keys[i] for i in perm], fold_a, fold_b)
    assert set(row) == set(PAIRWISE_COLUMNS) - {"metric", "model_a", "model_b"}
    ok = np.isfinite(a) & np.isfinite(b)
    assert row["kw_p"] == pytest.approx(stats.kruskal(a[np.isfinite(a)], b[np.isfinite(b)]).pvalue, rel=1e-12)
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a[ok] - b[ok]).pvalue, rel=1e-12)
    assert row["wilcoxon_statistic"] == pytest.approx(stats.wilcoxon(a[ok] - b[ok]).statistic)
    assert (row["n_a"], row["n_b"], row["n_pairs"], row["n_pairs_undefined"]) == (n - 1, n - 1, n - 2, 2)
    assert row["n_pairs_other_fold"] == 2 and "different folds" in row["note"]
    assert row["median_diff"] == pytest.approx(np.median(a[ok] - b[ok]))
    assert row["mean_diff"] == pytest.approx(np.mean(a[ok] - b[ok]))
    assert math.isnan(row["kw_p_holm"]) and math.isnan(row["wilcoxon_p_holm"])


def test_degenerate_tests_and_no_common_cases():
    assert kruskal_pair(np.full(4, 0.5), np.full(3, 0.5))[:2] == (0.0, 1.0)
    stat, p, note = kruskal_pair(np.zeros(0), np.ones(3))
    assert math.isnan(stat) and math.isnan(p) and "both" in note
    assert wilcoxon_paired(np.zeros(5))[:2] == (0.0, 1.0)
    assert all(math.isnan(v) for v in wilcoxon_paired(np.zeros(0))[:2])
    row = pair_stats(np.ones(3), np.arange(3.0), [1, 2, 3], [4, 5, 6], np.zeros(3), np.zeros(3))
    assert row["n_pairs"] == 0 and math.isnan(row["wilcoxon_p"]) and "no common" in row["note"]


def test_kruskal_all_matches_scipy_with_three_or_more_models():
    rng = np.random.default_rng(1)
    samples = [rng.normal(m, 1, 12) for m in (0.0, 0.5, 1.5)]
    res = stats.kruskal(*samples)
    assert kruskal_all(samples) == pytest.approx((res.statistic, res.pvalue), rel=1e-12)
    assert all(math.isnan(v) for v in kruskal_all(samples[:2]))  # two models: the pairwise test says it all
    assert all(math.isnan(v) for v in kruskal_all([np.ones(3)] * 3))


def test_adjust_pairwise_fills_holm_of_each_test():
    rows = [{"kw_p": p, "wilcoxon_p": w} for p, w in ((0.01, 0.2), (0.04, math.nan), (0.03, 0.01))]
    adjust_pairwise(rows)
    np.testing.assert_allclose([r["kw_p_holm"] for r in rows], [0.03, 0.06, 0.06])
    np.testing.assert_allclose([r["wilcoxon_p_holm"] for r in rows], [0.2, math.nan, 0.02])


def test_summary_stats_fold_means_by_hand():
    values = np.array([1.0, 3.0, math.inf, 5.0, math.nan, math.nan, 2.0])
    repeat = np.array([0, 0, 0, 0, 1, 1, 1])
    fold = np.array([0, 0, 1, 1, 0, 0, 1])
    s = summary_stats(values, repeat, fold)
    assert set(s) == set(SUMMARY_COLUMNS) - {"model", "metric"}
    assert (s["n"], s["n_defined"], s["n_undefined"], s["n_nan"], s["n_inf"]) == (7, 4, 3, 2, 1)
    assert s["mean"] == pytest.approx(11 / 4) and s["median"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 3, 5, 2], ddof=1))
    # folds (0,0): mean 2; (0,1): 5 (inf left out); (1,0): all undefined, not a fold mean; (1,1): 2
    assert s["n_folds"] == 3 and s["fold_mean"] == pytest.approx(3.0)
    assert s["fold_std"] == pytest.approx(np.std([2, 5, 2], ddof=1))
