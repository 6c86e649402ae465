"""Classification metrics against scikit-learn, and their stated edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from agseg.metrics import auc_binary, classification_metrics, classification_summary, confusion_matrix, roc_auc


@pytest.fixture
def three_classes():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[t]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return t, probs.argmax(1), probs


def test_multiclass_matches_sklearn(three_classes):
    t, p, probs = three_classes
    m = classification_metrics(t, p, probs, classes=[0, 1, 2])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t, p, labels=[0, 1, 2], zero_division=np.nan)
    for i in range(3):
        assert m[f"precision_{i}"] == pytest.approx(prec[i]) and m[f"recall_{i}"] == pytest.approx(rec[i])
        assert m[f"f1_{i}"] == pytest.approx(f1[i]) and m[f"support_{i}"] == sup[i]
    for avg in ("precision", "recall", "f1"):
        want = skm.precision_recall_fscore_support(t, p, average="macro", zero_division=np.nan)[
            ("precision", "recall", "f1").index(avg)
        ]
        assert m[f"{avg}_macro"] == pytest.approx(want)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(t, probs, multi_class="ovr", average="macro"))
    np.testing.assert_array_equal(confusion_matrix(t, p, [0, 1, 2]), skm.confusion_matrix(t, p, labels=[0, 1, 2]))


def test_binary_matches_sklearn_with_names_and_one_probability_column():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, 120)
    score = np.clip(0.3 * t + rng.uniform(0, 0.7, 120), 0, 1).round(2)  # rounded: ties
    p = (score > 0.5).astype(int)
    m = classification_metrics(t, p, score, classes=[0, 1], names={0: "normal", 1: "tb"})
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(t, score))
    assert m["recall_tb"] == pytest.approx(skm.recall_score(t, p)) and m["precision_normal"] == pytest.approx(
        skm.precision_score(t, p, pos_label=0)
    )
    two = classification_metrics(t, p, np.stack([1 - score, score], 1), classes=[0, 1])
    assert two["roc_auc"] == m["roc_auc"] and two["f1_1"] == pytest.approx(skm.f1_score(t, p))
    assert auc_binary(t == 1, score) == pytest.approx(skm.roc_auc_score(t, score))


def test_edge_cases_are_nan_not_zero():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 0, 0, 1, 1], classes=[0, 1, 2])
    assert math.isnan(m["precision_2"]) and m["recall_2"] == 0.0 and m["f1_2"] == 0.0
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # the undefined class is left out
    assert math.isnan(m["roc_auc"])  # no probabilities
    absent = classification_metrics([0, 0], [0, 0], [0.2, 0.4], classes=[0, 1])
    assert math.isnan(absent["roc_auc"]) and math.isnan(absent["f1_1"]) and absent["accuracy"] == 1.0
    # one-vs-rest over the classes present (scikit-learn refuses a class absent from the targets)
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    assert roc_auc([0, 1, 0], probs, [0, 1, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not among the classes"):
        confusion_matrix([0, 3], [0, 0], [0, 1])


def test_summary_pooled_and_per_fold():
    rows = []
    rng = np.random.default_rng(2)
    for fold in range(3):
        for i in range(20):
            t = int(i % 2)
            prob = float(np.clip(0.5 + (0.3 if t else -0.3) + rng.normal(0, 0.25), 0, 1))
            rows.append({"repeat": 0, "fold": fold, "target": t, "predicted": int(prob > 0.5),
                         "prob_normal": 1 - prob, "prob_tb": prob})  # fmt: skip
    s = classification_summary(rows, [0, 1], {0: "normal", 1: "tb"})
    t = [r["target"] for r in rows]
    assert s["pooled"]["roc_auc"] == pytest.approx(skm.roc_auc_score(t, [r["prob_tb"] for r in rows]))
    assert s["n_folds"] == 3 and len(s["per_fold"]) == 3
    accs = [skm.accuracy_score([r["target"] for r in rows if r["fold"] == f],
                               [r["predicted"] for r in rows if r["fold"] == f]) for f in range(3)]  # fmt: skip
    assert s["fold_mean"]["accuracy"] == pytest.approx(np.mean(accs))
    assert s["fold_std"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    assert "f1_tb" in s["fold_mean"] and "recall_normal" in s["pooled"]
