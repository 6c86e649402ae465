"""Image-level classification metrics: confusion, accuracy, precision/recall/F1 per class and macro, ROC AUC.

Functions on label arrays (any integer class values) and probability arrays, checked against scikit-learn in
``tests/metrics/test_classification.py``. Edge cases (stated, as every agseg metric does):

* precision of a class that is never predicted, recall of a class absent from the targets: undefined (NaN), as
  scikit-learn's ``zero_division=np.nan``; F1 = 2 TP / (2 TP + FP + FN) is NaN only when the class is in neither;
* macro averages are the mean over the classes where the per-class value is defined (scikit-learn's with
  ``zero_division=np.nan``), NaN when none is;
* ROC AUC (the Mann-Whitney statistic, ties counting one half): NaN when the targets hold one class only. Binary:
  the probability of the positive class (the larger value). More classes: one-vs-rest per class, macro-averaged
  over the classes present in the targets (scikit-learn's ``multi_class="ovr", average="macro"``, which refuses
  absent classes instead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "CLASSIFICATION_METRICS",
    "auc_binary",
    "classification_metrics",
    "classification_summary",
    "confusion_matrix",
    "roc_auc",
]

#: The dataset-level metrics :func:`classification_metrics` returns (besides the per-class ones).
CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")


def confusion_matrix(target: Any, predicted: Any, classes: Sequence[int]) -> np.ndarray:
    """``C[i, j]`` = number of cases of class ``classes[i]`` predicted as ``classes[j]`` (int64 ``(K, K)``).

    Raises:
        ValueError: different lengths, or a value outside ``classes``.
    """
    t, p = np.asarray(target).astype(np.int64).ravel(), np.asarray(predicted).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} targets but {p.size} predictions")
    index = {int(c): i for i, c in enumerate(classes)}
    bad = sorted({int(v) for v in np.concatenate([t, p]) if int(v) not in index})
    if bad:
        raise ValueError(f"class value(s) {bad} are not among the classes {list(classes)}")
    cm = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(cm, ([index[int(v)] for v in t], [index[int(v)] for v in p]), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _mean_defined(values: Sequence[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def auc_binary(positive: Any, scores: Any) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive``: P(score of a positive > score of a negative), ties 1/2
    (the Mann-Whitney U statistic over ``n_pos * n_neg``). NaN without positives or negatives."""
    pos = np.asarray(positive, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(target: Any, probs: Any, classes: Sequence[int]) -> float:
    """ROC AUC of class probabilities ``probs`` ``(N, K)`` (columns in ``classes`` order; ``(N,)`` or ``(N, 1)``:
    the positive class of a binary problem) for ``target``. Binary: the AUC of the larger class's probability;
    more classes: the one-vs-rest AUCs averaged over the classes present in ``target`` (see the module docstring)."""
    t = np.asarray(target).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if len(classes) == 2:
        pos = p if p.ndim == 1 else p[:, -1]
        return auc_binary(t == int(classes[1]), pos)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {p.shape} for {len(classes)} classes: expected (N, {len(classes)})")
    return _mean_defined([auc_binary(t == int(c), p[:, i]) for i, c in enumerate(classes) if (t == int(c)).any()])


def classification_metrics(
    target: Any,
    predicted: Any,
    probs: Any | None = None,
    classes: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Accuracy, precision/recall/F1 per class and macro-averaged, ROC AUC (with ``probs``).

    Args:
        target: true class values ``(N,)``.
        predicted: predicted class values ``(N,)``.
        probs: class probabilities ``(N, K)`` in ``classes`` order (or the positive class's, binary), or None.
        classes: the class values (default: those in target and predicted, sorted).
        names: ``{value: suffix}`` for the per-class keys (default the values): ``precision_<suffix>``, ...

    Returns:
        A flat dict: ``n``, ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``roc_auc`` (NaN
        without ``probs``), and ``precision_<c>``, ``recall_<c>``, ``f1_<c>``, ``support_<c>`` per class.
    """
    t = np.asarray(target).astype(np.int64).ravel()
    p = np.asarray(predicted).astype(np.int64).ravel()
    cls = [int(c) for c in (classes if classes is not None else sorted(set(t.tolist()) | set(p.tolist())))]
    cm = confusion_matrix(t, p, cls)
    out: dict[str, float] = {"n": float(t.size), "accuracy": _ratio(np.trace(cm), cm.sum())}
    per: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for i, c in enumerate(cls):
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        values = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
        key = str(names.get(c, c)) if names else str(c)
        for m, v in values.items():
            out[f"{m}_{key}"] = v
            per[m].append(v)
        out[f"support_{key}"] = float(cm[i, :].sum())
    for m, values in per.items():
        out[f"{m}_macro"] = _mean_defined(values)
    out["roc_auc"] = roc_auc(t, probs, cls) if probs is not None else math.nan
    return out


def classification_summary(
    rows: Sequence[Mapping[str, Any]],
    classes: Sequence[int],
    names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The classification block of a CV's ``summary.json`` from its per-case rows.

    Args:
        rows: per-case rows with ``target``, ``predicted``, one ``prob_<class>`` column per class (in ``classes``
            order, as :meth:`~agseg.inference.predictor.Predictor.classification_row` writes them) and, for the per-fold
            part, ``repeat`` and ``fold``.
        classes: the class values.
        names: column suffix per class value (``{0: "normal", 1: "tuberculosis"}``).

    Returns:
        ``{"pooled": metrics over every case, "per_fold": [{"repeat", "fold", **metrics}], "fold_mean": {...},
        "fold_std": {...} (ddof = 1), "n_folds": ...}`` with the keys of :func:`classification_metrics`.
    """
    prob_cols = [k for k in (rows[0] if rows else {}) if str(k).startswith("prob_")]

    def metrics(sub: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        t = [int(r["target"]) for r in sub]
        p = [int(r["predicted"]) for r in sub]
        probs = np.asarray([[float(r[c]) for c in prob_cols] for r in sub]) if len(prob_cols) == len(classes) else None
        return classification_metrics(t, p, probs, classes, names)

    out: dict[str, Any] = {"pooled": metrics(rows) if rows else {}, "per_fold": []}
    keys = sorted({(int(r.get("repeat", 0)), int(r.get("fold", 0))) for r in rows})
    for rep, fold in keys:
        sub = [r for r in rows if int(r.get("repeat", 0)) == rep and int(r.get("fold", 0)) == fold]
        out["per_fold"].append({"repeat": rep, "fold": fold, **metrics(sub)})
    names_ = [k for k in (out["per_fold"][0] if out["per_fold"] else {}) if k not in ("repeat", "fold")]
    out["fold_mean"], out["fold_std"] = {}, {}
    for k in names_:
        v = np.asarray([f[k] for f in out["per_fold"]], dtype=np.float64)
        v = v[np.isfinite(v)]
        out["fold_mean"][k] = float(v.mean()) if v.size else math.nan
        out["fold_std"][k] = float(v.std(ddof=1)) if v.size > 1 else math.nan
    out["n_folds"] = len(out["per_fold"])
    return out
