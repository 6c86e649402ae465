"""Classifier comparisons: McNemar (known answers), DeLong against its definition, the paired bootstrap, and
``agseg compare`` on two classifier CVs (tables, Markdown, CSVs)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from agseg.cli import app
from agseg.experiments.compare import compare_runs, load_run, write_comparison
from agseg.experiments.stats import auc_bootstrap, classifier_pair_stats, delong, mcnemar


def test_mcnemar_known_answers():
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)  # 10 cases only a right, 2 only b right, 5 both
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    r = mcnemar(a, b)
    assert (r["b"], r["c"], r["method"]) == (10, 2, "exact")
    assert r["p"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # two-sided binomial, n = 12
    a = np.array([True] * 30 + [False] * 15)
    r = mcnemar(a, ~a)
    assert r["method"] == "chi2" and r["statistic"] == pytest.approx(14**2 / 45)
    assert r["p"] == pytest.approx(sps.chi2.sf(14**2 / 45, 1))
    assert mcnemar(a, ~a, exact=True)["p"] == pytest.approx(sps.binomtest(30, 45).pvalue)
    same = mcnemar(a, a)
    assert same["p"] == 1.0 and same["method"] == "none"
    with pytest.raises(ValueError, match="same cases"):
        mcnemar(a, a[:3])


def _delong_by_definition(y, sa, sb):
    """DeLong et al. 1988 straight from the definition: psi(x, y) = 1, 1/2, 0; V10, V01 as means of psi."""
    y = np.asarray(y, bool)
    comps = []
    for s in (sa, sb):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps.append((psi.mean(), psi.mean(1), psi.mean(0)))
    m, n = int(y.sum()), int((~y).sum())
    s10 = np.cov(np.stack([comps[0][1], comps[1][1]]))
    s01 = np.cov(np.stack([comps[0][2], comps[1][2]]))
    cov = s10 / m + s01 / n
    z = (comps[0][0] - comps[1][0]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return comps[0][0], comps[1][0], cov, z, 2 * sps.norm.sf(abs(z))


def test_delong_matches_its_definition_and_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150).astype(bool)
    sa = np.round(y * 0.8 + rng.normal(0, 0.6, 150), 1)  # rounded: ties within and between the classes
    sb = np.round(y * 0.5 + 0.5 * sa + rng.normal(0, 0.6, 150), 1)  # correlated with a
    r = delong(y, sa, sb)
    aa, ab, cov, z, p = _delong_by_definition(y, sa, sb)
    assert r["auc_a"] == pytest.approx(aa) and r["auc_a"] == pytest.approx(roc_auc_score(y, sa))
    assert r["auc_b"] == pytest.approx(ab)
    assert (r["var_a"], r["var_b"], r["cov"]) == pytest.approx((cov[0, 0], cov[1, 1], cov[0, 1]))
    assert r["statistic"] == pytest.approx(z) and r["p"] == pytest.approx(p)
    assert r["cov"] > 0  # the scores are correlated: the paired test is sharper than an unpaired one


def test_delong_variance_agrees_with_a_paired_bootstrap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(bool)
    sa, sb = y * 1.0 + rng.normal(0, 1, 300), y * 0.6 + rng.normal(0, 1, 300)
    r = delong(y, sa, sb)
    diffs = []
    for _ in range(1000):
        i = rng.integers(0, 300, 300)
        diffs.append(roc_auc_score(y[i], sa[i]) - roc_auc_score(y[i], sb[i]))
    se = math.sqrt(r["var_a"] + r["var_b"] - 2 * r["cov"])
    assert se == pytest.approx(np.std(diffs, ddof=1), rel=0.15)


def test_delong_edge_cases():
    y = np.array([1, 1, 0, 0, 1, 0], bool)
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.5])
    assert delong(y, s, s)["p"] == 1.0 and delong(y, s, s)["statistic"] == 0.0
    assert math.isnan(delong(np.ones(4, bool), s[:4], s[:4])["p"])


def test_the_bootstrap_for_three_classes():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 3, 120)
    good = np.eye(3)[t] * 2 + rng.normal(0, 1, (120, 3))
    bad = np.eye(3)[t] * 0.3 + rng.normal(0, 1, (120, 3))
    soft = [np.exp(v) / np.exp(v).sum(1, keepdims=True) for v in (good, bad)]
    r = auc_bootstrap(t, soft[0], soft[1], [0, 1, 2], n_boot=300)
    assert r["auc_a"] == pytest.approx(roc_auc_score(t, soft[0], multi_class="ovr"))
    assert r["diff"] > 0.2 and r["p"] < 0.01 and r["n_boot"] == 300
    assert auc_bootstrap(t, soft[0], soft[0], [0, 1, 2], n_boot=100)["p"] == 1.0


def test_pairs_are_matched_on_their_keys():
    keys = [(0, f"c{i}") for i in range(40)]
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, 40)
    pa = np.clip(t * 0.6 + rng.uniform(0, 0.4, 40), 0, 1)
    pb = rng.uniform(0, 1, 40)
    order = rng.permutation(40)  # b lists the same cases in another order
    pred_a, pred_b = (pa > 0.5).astype(int), (pb[order] > 0.5).astype(int)
    keys_b, folds = [keys[i] for i in order], np.zeros(40)
    r = classifier_pair_stats(t, t[order], pred_a, pred_b, pa, pb[order], keys, keys_b, folds, folds, [0, 1])
    want = delong(t == 1, pa, pb)
    assert r["n_pairs"] == 40 and r["auc_method"] == "delong"
    assert r["auc_p"] == pytest.approx(want["p"]) and r["auc_a"] == pytest.approx(roc_auc_score(t, pa))
    assert r["mcnemar_p"] == pytest.approx(mcnemar((pa > 0.5) == t, (pb > 0.5) == t)["p"])


def _write_cv(root, name, target, probs, folds=5):
    run = root / name
    run.mkdir(parents=True)
    (run / "labels.json").write_text(json.dumps({"labels": {"0": "normal", "1": "tuberculosis"}}), encoding="utf-8")
    with (run / "metrics.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "repeat", "fold", "case_id", "predicted", "predicted_class", "prob_normal",
                    "prob_tuberculosis", "target", "correct"])  # fmt: skip
        for i, (t, p) in enumerate(zip(target, probs, strict=True)):
            pred = int(p > 0.5)
            w.writerow([name, 0, i % folds, f"case{i:03d}", pred, ["normal", "tuberculosis"][pred], repr(float(1 - p)),
                        repr(float(p)), int(t), float(pred == t)])  # fmt: skip
    return run


def test_compare_two_classifier_cvs(tmp_path):
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, 100)
    strong = np.clip(0.5 + (t - 0.5) * 0.8 + rng.normal(0, 0.2, 100), 0, 1)
    weak = np.clip(0.5 + (t - 0.5) * 0.3 + rng.normal(0, 0.25, 100), 0, 1)
    a, b = _write_cv(tmp_path, "ag_sononet", t, strong), _write_cv(tmp_path, "sononet", t, weak)
    run = load_run(a)
    assert run.is_classifier and run.classes == [0, 1] and run.probs.shape == (100, 2)
    cmp = compare_runs([a, b])
    assert cmp.metrics == ["correct"]  # the per-case tables keep working: correct's mean is the accuracy
    s = {r["model"]: r for r in cmp.classifier_summary}
    assert s["ag_sononet"]["roc_auc"] == pytest.approx(roc_auc_score(t, strong))
    assert s["sononet"]["accuracy"] == pytest.approx(np.mean((weak > 0.5) == t)) and s["sononet"]["n_folds"] == 5
    (pair,) = cmp.classifier_pairwise
    assert pair["auc_method"] == "delong" and pair["auc_p"] == pytest.approx(delong(t == 1, strong, weak)["p"])
    assert pair["auc_p"] < 0.05 and pair["mcnemar_p_holm"] == pytest.approx(pair["mcnemar_p"])  # one pair: Holm = p
    written = {p.name for p in write_comparison(cmp, tmp_path / "cmp", plots=False)}
    assert {"classifier_summary.csv", "classifier_pairwise.csv", "compare.md"} <= written
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "## Classifiers" in md and "delong" in md and "McNemar p" in md
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "classifier_pairwise.csv").is_file()


def test_segmentation_comparisons_have_no_classifier_section(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(
            "model,repeat,fold,case_id,dice\n" + "".join(f"{name},0,{i % 2},c{i},{0.5 + i / 100}\n" for i in range(6)),
            encoding="utf-8",
        )
    cmp = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert cmp.classifier_summary == [] and cmp.classifier_pairwise == []
    write_comparison(cmp, tmp_path / "out", plots=False)
    assert not (tmp_path / "out" / "classifier_summary.csv").exists()
    assert "## Classifiers" not in (tmp_path / "out" / "compare.md").read_text(encoding="utf-8")
