"""Overlap metrics on binary masks (2D or 3D): Dice, IoU, precision, recall/sensitivity, specificity, accuracy.

Inputs are boolean numpy arrays of the same shape (torch tensors and integer/float arrays are converted:
non-zero is foreground). ``spacing`` is accepted for a uniform signature with :mod:`agseg.metrics.distance` and
checked, but overlap ratios do not depend on it (every voxel has the same volume).

Counts: ``TP = |P n R|``, ``FP = |P \\ R|``, ``FN = |R \\ P|``, ``TN`` the rest (``P`` prediction, ``R`` reference).

Empty-mask convention (one rule for every ratio): a ratio whose denominator is zero is **1.0 when the
prediction equals the reference** (nothing to find and nothing found) and **NaN otherwise** (undefined; the
aggregator :func:`agseg.metrics.table.summarize` counts it in ``n_undefined``, never drops it):

==============  ============================  ==================  ==================  ==================
metric          formula                       both empty          pred empty only     ref empty only
==============  ============================  ==================  ==================  ==================
dice            2TP / (2TP + FP + FN)         1.0                 0.0                 0.0
iou             TP / (TP + FP + FN)           1.0                 0.0                 0.0
precision       TP / (TP + FP)                1.0                 NaN                 0.0
recall          TP / (TP + FN)                1.0                 0.0                 NaN
specificity     TN / (TN + FP)                1.0                 1.0                 < 1 (defined)
accuracy        (TP + TN) / N                 1.0                 defined             defined
==============  ============================  ==================  ==================  ==================

(``specificity`` is 0/0 only when the reference fills the whole image: 1.0 if the prediction does too, else NaN.)
MONAI (``compute_dice``/``compute_iou`` with ``ignore_empty=True``, ``compute_confusion_matrix_metric``) returns NaN
for Dice/IoU/precision/recall when both masks are empty and NaN for Dice/IoU when only the reference is empty;
where both are defined the values are identical (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PooledOverlap",
    "accuracy",
    "as_bool",
    "check_pair",
    "confusion",
    "dice",
    "iou",
    "jaccard",
    "per_class",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
]


def as_bool(x: Any, name: str = "mask") -> np.ndarray:
    """``x`` (numpy array, torch tensor, nested list) as a boolean numpy array (non-zero = foreground)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric or boolean array, got dtype {arr.dtype}")
    return arr != 0


def check_pair(
    pred: Any, ref: Any, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
    """Convert ``pred`` and ``ref`` to boolean arrays and check shapes (and ``spacing``, one entry per axis).

    Raises:
        ValueError: naming both shapes when they differ, or when ``spacing`` has the wrong length or
            non-positive entries.
    """
    p, r = as_bool(pred, "pred"), as_bool(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {r.shape}")
    if p.ndim == 0:
        raise ValueError("pred and ref must have at least one axis")
    sp: tuple[float, ...] | None = None
    if spacing is not None:
        sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
        if len(sp) == 1 and p.ndim > 1:
            sp = sp * p.ndim
        if len(sp) != p.ndim:
            raise ValueError(f"spacing {tuple(sp)} must have one entry per axis of the {p.ndim}-D masks {p.shape}")
        if not all(s > 0 and math.isfinite(s) for s in sp):
            raise ValueError(f"spacing entries must be finite and > 0, got {sp}")
    return p, r, sp


def confusion(pred: Any, ref: Any) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` voxel counts of two binary masks of the same shape."""
    p, r, _ = check_pair(pred, ref)
    return _counts(p, r)


def _counts(p: np.ndarray, r: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(p & r))
    np_ = int(np.count_nonzero(p))
    nr = int(np.count_nonzero(r))
    fp, fn = np_ - tp, nr - tp
    tn = int(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: int, den: int, identical: bool) -> float:
    if den == 0:
        return 1.0 if identical else float("nan")
    return num / den


def dice(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Dice similarity coefficient ``2TP / (2TP + FP + FN)`` (thesis eq. 3.2, the F1 score).

    Both empty: 1.0; exactly one empty: 0.0. ``spacing`` is checked and otherwise unused.
    """
    tp, fp, fn, _ = _counts(*check_pair(pred, ref, spacing)[:2])
    return _ratio(2 * tp, 2 * tp + fp + fn, fp == 0 and fn == 0)


def iou(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Intersection over union (Jaccard) ``TP / (TP + FP + FN)``. Both empty: 1.0; exactly one empty: 0.0."""
    tp, fp, fn, _ = _counts(*check_pair(pred, ref, spacing)[:2])
    return _ratio(tp, tp + fp + fn, fp == 0 and fn == 0)


jaccard = iou


def precision(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Precision ``TP / (TP + FP)`` (thesis eq. 3.1). Both empty: 1.0; empty prediction only: NaN."""
    tp, fp, fn, _ = _counts(*check_pair(pred, ref, spacing)[:2])
    return _ratio(tp, tp + fp, fn == 0)


def recall(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Recall = sensitivity ``TP / (TP + FN)`` (thesis eq. 3.1). Both empty: 1.0; empty reference only: NaN."""
    tp, fp, fn, _ = _counts(*check_pair(pred, ref, spacing)[:2])
    return _ratio(tp, tp + fn, fp == 0)


def sensitivity(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Sensitivity, the same as :func:`recall`."""
    return recall(pred, ref, spacing)


def specificity(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Specificity ``TN / (TN + FP)``. 0/0 only when the reference fills the image: 1.0 if pred does too, else NaN."""
    _, fp, fn, tn = _counts(*check_pair(pred, ref, spacing)[:2])
    return _ratio(tn, tn + fp, fn == 0)


def accuracy(pred: Any, ref: Any, spacing: Sequence[float] | None = None) -> float:
    """Accuracy ``(TP + TN) / N`` (always defined for a non-empty array)."""
    p, r, _ = check_pair(pred, ref, spacing)
    tp, _, _, tn = _counts(p, r)
    return _ratio(tp + tn, p.size, True)


def per_class(
    metric: Callable[..., float] | str,
    pred: Any,
    ref: Any,
    labels: Iterable[int] | None = None,
    *,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    **kwargs: Any,
) -> dict[int, float]:
    """One value per class of two integer label maps (multi-class helper).

    Args:
        metric: a binary metric function (any of this module or :mod:`agseg.metrics.distance`) or its name
            (``"dice"``, ``"hd95"``, ...).
        pred: predicted label map ``(*spatial)`` (integer).
        ref: reference label map, same shape.
        labels: the classes to evaluate; default: every label present in either map, plus ``1..max``
            (so a class missing from both still gets its "both empty" value).
        include_background: with ``labels=None``, also evaluate label 0.
        spacing: voxel spacing, one entry per axis (passed on).
        **kwargs: passed to the metric (e.g. ``percentile=95``).

    Returns:
        ``{label: value}`` in increasing label order.
    """
    if isinstance(metric, str):
        from agseg.metrics import get_metric  # late import: the registry lives in the package

        metric = get_metric(metric)
    if hasattr(pred, "detach"):
        pred = pred.detach().cpu().numpy()
    if hasattr(ref, "detach"):
        ref = ref.detach().cpu().numpy()
    p, r = np.asarray(pred), np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {r.shape}")
    if labels is None:
        present = set(np.unique(p).tolist()) | set(np.unique(r).tolist())
        top = int(max(present)) if present else 0
        labs = sorted(present | set(range(1, top + 1)))
        if not include_background:
            labs = [lab for lab in labs if lab != 0]
    else:
        labs = sorted(int(lab) for lab in labels)
    return {int(lab): float(metric(p == lab, r == lab, spacing=spacing, **kwargs)) for lab in labs}


class PooledOverlap:
    """Dataset-level ("pooled", micro-averaged) overlap: confusion counts summed over all cases, then the ratios.

    The mean of per-case Dice weighs a 20-voxel case like a 20 000-voxel one; the pooled Dice weighs every voxel
    alike. Challenges on many small images (DSB 2018 nuclei) and several papers report pooled figures, so both
    are worth seeing. Same formulas and empty-mask convention as the per-case functions.

    >>> pooled = PooledOverlap()
    >>> pooled.add([1, 1, 0, 0], [1, 0, 0, 0])
    >>> pooled.add([0, 0], [1, 1])
    >>> round(pooled.result()["dice"], 4)  # 2*1 / (2*1 + 1 + 2)
    0.4
    """

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = self.tn = 0
        self.n_cases = 0

    def add(self, pred: Any, ref: Any) -> None:
        """Add one case (binary masks of the same shape)."""
        tp, fp, fn, tn = confusion(pred, ref)
        self.tp, self.fp, self.fn, self.tn = self.tp + tp, self.fp + fp, self.fn + fn, self.tn + tn
        self.n_cases += 1

    def result(self) -> dict[str, float | int]:
        """``dice``, ``iou``, ``precision``, ``recall`` (= ``sensitivity``), ``specificity`` of the summed counts,
        plus the counts and ``n_cases``."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        same = fp == 0 and fn == 0
        rec = _ratio(tp, tp + fn, same)
        return {
            "dice": _ratio(2 * tp, 2 * tp + fp + fn, same),
            "iou": _ratio(tp, tp + fp + fn, same),
            "precision": _ratio(tp, tp + fp, same),
            "recall": rec,
            "sensitivity": rec,
            "specificity": _ratio(tn, tn + fp, same),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "n_cases": self.n_cases,
        }
