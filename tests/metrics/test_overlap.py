"""Overlap metrics: against scikit-learn (exact) and MONAI (float32), the empty-mask convention, input checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_iou, get_confusion_matrix
from sklearn import metrics as skm

from agseg.metrics import (
    PooledOverlap,
    accuracy,
    confusion,
    dice,
    evaluate_case,
    iou,
    per_class,
    precision,
    recall,
    sensitivity,
    specificity,
)

SHAPES = [((64, 64), (0.7, 1.3)), ((32, 32, 32), (2.5, 0.8, 1.1))]


def _monai(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    p = torch.from_numpy(pred[None, None]).float()
    r = torch.from_numpy(ref[None, None]).float()
    cm = get_confusion_matrix(p, r, include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "dice": compute_dice(p, r, include_background=True).item(),
            "iou": compute_iou(p, r, include_background=True).item(),
        }
        for name in ("precision", "recall", "specificity", "accuracy"):
            out[name] = compute_confusion_matrix_metric(name, cm).item()
    return out


@pytest.mark.parametrize("shape,spacing", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overlap_matches_sklearn_exactly_and_monai(blobs, shape, spacing, seed):
    a, b = blobs(shape, seed)
    assert a.any() and b.any() and (a != b).any()
    y, x = b.ravel(), a.ravel()
    ours = {
        "dice": dice(a, b, spacing),
        "iou": iou(a, b, spacing),
        "precision": precision(a, b, spacing),
        "recall": recall(a, b, spacing),
        "specificity": specificity(a, b, spacing),
        "accuracy": accuracy(a, b, spacing),
    }
    # scikit-learn in float64: exact equality (same integer counts, same division)
    assert ours["dice"] == skm.f1_score(y, x)
    assert ours["iou"] == skm.jaccard_score(y, x)
    assert ours["precision"] == skm.precision_score(y, x)
    assert ours["recall"] == skm.recall_score(y, x)
    assert ours["specificity"] == skm.recall_score(~y, ~x)
    assert ours["accuracy"] == skm.accuracy_score(y, x)
    assert sensitivity(a, b) == ours["recall"]
    # MONAI computes in float32: equal to float32 rounding
    ref = _monai(a, b)
    for k, v in ours.items():
        assert v == pytest.approx(ref[k], rel=2e-7), k


def test_confusion_counts_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    ref = np.array([[1, 0, 0], [1, 1, 0]], bool)
    assert confusion(pred, ref) == (2, 1, 1, 2)
    assert dice(pred, ref) == 4 / 6
    assert iou(pred, ref) == 2 / 4
    assert precision(pred, ref) == 2 / 3
    assert recall(pred, ref) == 2 / 3
    assert specificity(pred, ref) == 2 / 3
    assert accuracy(pred, ref) == 4 / 6


Z = np.zeros((8, 8), bool)
A = Z.copy()
A[2:5, 3:6] = True
F = np.ones((8, 8), bool)
NAN = float("nan")

# (pred, ref) -> expected value per metric: the convention table of docs/metrics.md
CONVENTION = {
    "both_empty": (
        Z,
        Z,
        {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "specificity": 1.0, "accuracy": 1.0},
    ),
    "pred_empty": (Z, A, {"dice": 0.0, "iou": 0.0, "precision": NAN, "recall": 0.0, "specificity": 1.0}),
    "ref_empty": (A, Z, {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": NAN, "specificity": 1 - 9 / 64}),
    "both_full": (F, F, {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "specificity": 1.0}),
    "ref_full": (A, F, {"specificity": NAN, "precision": 1.0, "recall": 9 / 64}),
}
FUNCS = {
    "dice": dice,
    "iou": iou,
    "precision": precision,
    "recall": recall,
    "specificity": specificity,
    "accuracy": accuracy,
}


@pytest.mark.parametrize("case", list(CONVENTION))
def test_empty_mask_convention(case):
    pred, ref, expected = CONVENTION[case]
    for name, want in expected.items():
        got = FUNCS[name](pred, ref)
        if math.isnan(want):
            assert math.isnan(got), (case, name, got)
        else:
            assert got == pytest.approx(want, abs=1e-15), (case, name, got)


def test_monai_differs_only_where_documented():
    # both empty: MONAI (ignore_empty=True) gives NaN for Dice, IoU, precision and recall; we give 1.0
    m = _monai(Z, Z)
    for k in ("dice", "iou", "precision", "recall"):
        assert math.isnan(m[k])
        assert FUNCS[k](Z, Z) == 1.0
    # reference empty, prediction not: MONAI Dice/IoU NaN, ours 0.0; precision 0 and recall NaN in both
    m = _monai(A, Z)
    assert math.isnan(m["dice"]) and math.isnan(m["iou"])
    assert dice(A, Z) == 0.0 and iou(A, Z) == 0.0
    assert m["precision"] == precision(A, Z) == 0.0
    assert math.isnan(m["recall"]) and math.isnan(recall(A, Z))
    # prediction empty: both give Dice 0, recall 0, precision NaN
    m = _monai(Z, A)
    assert m["dice"] == dice(Z, A) == 0.0
    assert math.isnan(m["precision"]) and math.isnan(precision(Z, A))


def test_inputs_converted_and_checked():
    a = np.zeros((6, 7), np.uint8)
    a[1:4, 2:5] = 3
    t = torch.from_numpy(a.astype(np.int64))
    assert dice(t, a > 0) == 1.0
    assert dice(a.astype(float), torch.from_numpy(a > 0)) == 1.0
    with pytest.raises(ValueError, match=r"\(6, 7\).*\(7, 6\)"):
        dice(a, a.T)
    with pytest.raises(ValueError, match="spacing"):
        dice(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        iou(a, a, spacing=(1.0, 0.0))


def test_per_class_matches_binary_calls():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 4, (20, 20))
    ref = rng.integers(0, 4, (20, 20))
    ref[ref == 2] = 1  # class 2 only in the prediction
    pred[pred == 3] = 0
    ref[ref == 3] = 0  # class 3 in neither map
    out = per_class(dice, pred, ref)
    assert list(out) == [1, 2]
    for lab, v in out.items():
        assert v == dice(pred == lab, ref == lab)
    out = per_class("precision", pred, ref, labels=[0, 1, 2, 3])
    assert out[3] == 1.0  # absent from both: "both empty" value
    assert out[2] == 0.0
    assert list(per_class("dice", pred, ref, include_background=True)) == [0, 1, 2]


def test_evaluate_case_binary_and_multiclass():
    ref = np.zeros((16, 16), np.int64)
    ref[2:8, 2:8] = 1
    ref[10:14, 10:14] = 2
    pred = np.roll(ref, 1, axis=0)
    row = evaluate_case(pred > 0, ref > 0, spacing=(2.0, 1.0), metrics=("dice", "hd"), case_id="c1")
    assert row["case"] == "c1"
    assert row["dice"] == dice(pred > 0, ref > 0)
    assert row["hd"] == pytest.approx(2.0)
    row = evaluate_case(pred, ref, labels=[1, 2], metrics=("dice", "recall"))
    assert set(row) == {"dice_1", "dice_2", "recall_1", "recall_2"}
    assert row["dice_2"] == dice(pred == 2, ref == 2)


def test_pooled_overlap_is_sklearn_on_all_voxels_together():
    rng = np.random.default_rng(3)
    cases = [(rng.random(s) > 0.6, rng.random(s) > 0.5) for s in [(5, 7), (12, 9, 4), (30,)]]
    cases.append((np.zeros((4, 4), bool), np.zeros((4, 4), bool)))  # an empty case adds only true negatives
    pooled = PooledOverlap()
    for p, r in cases:
        pooled.add(p, r)
    res = pooled.result()
    p_all = np.concatenate([p.ravel() for p, _ in cases])
    r_all = np.concatenate([r.ravel() for _, r in cases])
    assert res["dice"] == pytest.approx(skm.f1_score(r_all, p_all))
    assert res["iou"] == pytest.approx(skm.jaccard_score(r_all, p_all))
    assert res["precision"] == pytest.approx(skm.precision_score(r_all, p_all))
    assert res["recall"] == res["sensitivity"] == pytest.approx(skm.recall_score(r_all, p_all))
    assert res["specificity"] == pytest.approx(skm.recall_score(~r_all, ~p_all))
    assert res["n_cases"] == 4 and res["tp"] + res["fp"] + res["fn"] + res["tn"] == p_all.size
    assert res["dice"] != pytest.approx(np.mean([dice(p, r) for p, r in cases]))  # not the per-case mean


def test_pooled_overlap_follows_the_empty_mask_convention():
    both_empty = PooledOverlap()
    both_empty.add(np.zeros(5), np.zeros(5))
    assert both_empty.result()["dice"] == 1.0 and both_empty.result()["precision"] == 1.0
    missed = PooledOverlap()
    missed.add(np.zeros(5), np.ones(5))
    assert missed.result()["dice"] == 0.0 and math.isnan(missed.result()["precision"])
    with pytest.raises(ValueError, match="same shape"):
        missed.add(np.zeros(4), np.zeros(5))
