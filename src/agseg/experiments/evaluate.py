"""Per-case metrics for predicted masks against references: in memory (CV) or for two folders (``agseg evaluate``).

Metrics are computed in the reference's grid with its spacing (array order), so distances are in millimetres
for medical formats and in pixels for PNG. Binary tasks (one foreground label) give columns ``dice``, ``hd95``,
...; multi-class tasks give one column per label (``dice_1``, ``dice_2``, ...) and their mean over labels
(``dice``, ...). Undefined values (e.g. a distance when the prediction is empty) stay NaN/inf in the rows and
are counted, never dropped, by the summary (:func:`agseg.metrics.summarize`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import data_files, read_mask, split_ext
from agseg.metrics import evaluate_case, get_metric, summarize, write_csv, write_summary_json

__all__ = ["case_metrics", "evaluate_folders", "pair_masks"]

log = logging.getLogger(__name__)


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None,
    metrics: Sequence[str],
    labels: Sequence[int] | None = None,
) -> dict[str, float]:
    """Metrics of one case. ``labels=None``: binary (non-zero is foreground); else one column per label plus the
    mean over labels under the plain metric name (NaN when any label's value is NaN; inf when any is inf)."""
    for m in metrics:
        get_metric(m)  # unknown names fail here, listing the valid ones
    if labels is None:
        return evaluate_case(pred != 0, ref != 0, spacing=spacing, metrics=metrics)
    row = evaluate_case(pred, ref, spacing=spacing, metrics=metrics, labels=labels)
    for m in metrics:
        row[m] = float(np.mean([row[f"{m}_{int(lab)}"] for lab in labels]))
    return row


def pair_masks(pred_dir: str | Path, ref_dir: str | Path, pred_suffix: str = "") -> list[tuple[str, Path, Path]]:
    """Match prediction and reference files by name (format-agnostic: ``a.png`` pairs with ``a.png``;
    ``ct_pred.nii.gz`` with ``ct.nii.gz`` when ``pred_suffix="_pred"``).

    Raises:
        DataError: a folder is missing or no file pairs up (the message names the folders).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise DataError(d, "folder not found")
    refs = {split_ext(p)[0]: p for p in data_files(ref_dir)}
    preds: dict[str, Path] = {}
    for p in data_files(pred_dir):
        stem = split_ext(p)[0]
        if pred_suffix and stem.endswith(pred_suffix):
            stem = stem[: -len(pred_suffix)]
        preds[stem] = p
    common = sorted(set(refs) & set(preds))
    if not common:
        raise DataError(pred_dir, f"no prediction file matches a reference in {ref_dir} by name")
    for name in sorted(set(refs) - set(preds)):
        log.warning("no prediction for reference %s", refs[name])
    for name in sorted(set(preds) - set(refs)):
        log.warning("no reference for prediction %s", preds[name])
    return [(name, preds[name], refs[name]) for name in common]


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path | None = None,
    metrics: Sequence[str] = ("dice", "iou", "precision", "sensitivity", "specificity", "hd", "hd95", "assd"),
    labels: Sequence[int] | str | None = "auto",
    ref_threshold: float | None = None,
    pred_suffix: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-case metrics for two folders of masks, written to ``out_dir/metrics.csv`` and ``out_dir/summary.json``.

    Args:
        pred_dir: predicted masks (any supported format).
        ref_dir: reference masks, matched by file name.
        out_dir: where to write; None writes nothing.
        metrics: metric names (``agseg.metrics.list_metrics()``).
        labels: ``"auto"`` (binary when the references hold one foreground value, else every non-zero value),
            ``None`` (binary, non-zero is foreground), or an explicit list.
        ref_threshold: binarise references as ``value > ref_threshold`` (anti-aliased PNG masks: 127).
        pred_suffix: suffix of prediction names to ignore when pairing.

    Returns:
        ``(rows, summary)``; ``summary`` maps metric -> :class:`agseg.metrics.MetricSummary` fields.

    Raises:
        DataError: a pair whose shapes differ (both files named), unreadable files, or no pairs.
    """
    pairs = pair_masks(pred_dir, ref_dir, pred_suffix)
    loaded = []
    values: set[int] = set()
    for case_id, pp, rp in pairs:
        ref, geom = read_mask(rp)
        if ref_threshold is not None:
            ref = (ref > ref_threshold).astype(np.uint8)
        values |= {int(v) for v in np.unique(ref)}
        loaded.append((case_id, pp, rp, ref, geom))
    if labels == "auto":
        fg = sorted(values - {0})
        labels = None if len(fg) <= 1 else fg
    rows: list[dict[str, Any]] = []
    for case_id, pp, rp, ref, geom in tqdm(loaded, desc="evaluating", leave=False, disable=None):
        pred, _ = read_mask(pp)
        if pred.shape != ref.shape:
            raise DataError(pp, f"prediction shape {pred.shape} differs from reference {rp} shape {ref.shape}")
        row = {"case_id": case_id}
        row.update(case_metrics(pred, ref, geom.array_spacing, metrics, labels))  # type: ignore[arg-type]
        rows.append(row)
    summary = summarize(rows)
    if out_dir is not None:
        out = Path(out_dir)
        write_csv(rows, out / "metrics.csv")
        write_summary_json(summary, out / "summary.json", pred_dir=str(pred_dir), ref_dir=str(ref_dir))
    n_bad = {k: s.n_undefined for k, s in summary.items() if s.n_undefined}
    if n_bad:
        log.warning("undefined values (counted, not dropped): %s", n_bad)
    return rows, {k: s.as_dict() for k, s in summary.items()}
