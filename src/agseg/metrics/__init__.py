"""agseg.metrics: segmentation metrics as functions on binary numpy arrays (2D or 3D), spacing-aware.

Every metric is ``metric(pred, ref, spacing=None, ...) -> float`` on boolean arrays of the same shape (torch
tensors and integer arrays are converted; non-zero is foreground). Empty masks follow one documented convention
(see ``docs/metrics.md``): overlap ratios are 1.0 when a 0/0 ratio compares identical masks and NaN otherwise;
distances are 0.0 when both masks are empty and ``inf`` when exactly one is.

Overlap (:mod:`~agseg.metrics.overlap`): :func:`dice`, :func:`iou`, :func:`precision`, :func:`recall`,
:func:`sensitivity`, :func:`specificity`, :func:`accuracy`, :func:`confusion`, multi-class :func:`per_class`,
dataset-level (pooled) ratios :class:`PooledOverlap`.
Distance (:mod:`~agseg.metrics.distance`): :func:`hausdorff` (thesis eq. 3.4; ``percentile=95`` gives HD95),
:func:`hd95`, :func:`assd`, :func:`surface`, :func:`surface_distances`.
Classification (:mod:`~agseg.metrics.classification`): :func:`classification_metrics` (accuracy, precision, recall,
F1 per class and macro, ROC AUC), :func:`classification_summary` (pooled and per fold, for a CV's ``summary.json``),
:func:`confusion_matrix`, :func:`roc_auc`, :func:`auc_binary`.
Tables (:mod:`~agseg.metrics.table`): :func:`evaluate_case`, :func:`summarize`, :func:`write_csv`,
:func:`write_summary_json`, :func:`read_csv`, :func:`read_csv_table`; :data:`DEFAULT_METRICS`, the one default list
of metric names.
"""

from __future__ import annotations

from collections.abc import Callable

from agseg.metrics.classification import (
    auc_binary,
    classification_metrics,
    classification_summary,
    confusion_matrix,
    roc_auc,
)
from agseg.metrics.distance import assd, hausdorff, hd95, surface, surface_distances
from agseg.metrics.overlap import (
    PooledOverlap,
    accuracy,
    as_bool,
    check_pair,
    confusion,
    dice,
    iou,
    jaccard,
    per_class,
    precision,
    recall,
    sensitivity,
    specificity,
)
from agseg.metrics.table import (
    DEFAULT_METRICS,
    ID_COLUMNS,
    MetricSummary,
    evaluate_case,
    format_summary,
    read_csv,
    read_csv_table,
    summarize,
    write_csv,
    write_summary_json,
)

__all__ = [
    "DEFAULT_METRICS",
    "ID_COLUMNS",
    "MetricSummary",
    "PooledOverlap",
    "accuracy",
    "as_bool",
    "assd",
    "auc_binary",
    "check_pair",
    "classification_metrics",
    "classification_summary",
    "confusion",
    "confusion_matrix",
    "dice",
    "evaluate_case",
    "format_summary",
    "get_metric",
    "hausdorff",
    "hd95",
    "iou",
    "jaccard",
    "list_metrics",
    "per_class",
    "precision",
    "read_csv",
    "read_csv_table",
    "recall",
    "roc_auc",
    "sensitivity",
    "specificity",
    "summarize",
    "surface",
    "surface_distances",
    "write_csv",
    "write_summary_json",
]

_METRICS: dict[str, Callable[..., float]] = {
    "dice": dice,
    "iou": iou,
    "precision": precision,
    "recall": recall,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "accuracy": accuracy,
    "hd": hausdorff,
    "hd95": hd95,
    "assd": assd,
}


def list_metrics() -> list[str]:
    """Names accepted by :func:`get_metric`, :func:`evaluate_case` and :func:`per_class`."""
    return sorted(_METRICS)


def get_metric(name: str) -> Callable[..., float]:
    """The metric function called ``name`` (``"dice"``, ``"hd95"``, ...).

    Raises:
        KeyError: listing the valid names.
    """
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; valid metrics: {', '.join(sorted(_METRICS))}") from None
