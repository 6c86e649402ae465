"""Choose post-processing on a finished cross-validation, as nnU-Net does, and estimate its effect honestly.

From every fold's saved test predictions and the references: per foreground class, does keeping the ``k`` largest
connected components (k = 1, 2, 3) raise the mean Dice over all CV cases? The decision taken on all folds is what
``agseg predict --run CV`` applies (``postprocessing.json``). Because that decision has seen every case, the effect
is also estimated cross-validated: for each fold, the decision is taken on the other folds and applied to this one,
so that no case's post-processed score was chosen on itself (``metrics_postprocessed.csv`` and the summary).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import mask_path_for, read_mask
from agseg.data.label_set import LabelSet
from agseg.experiments.evaluate import case_metrics
from agseg.fileio import atomic_write_text
from agseg.inference.postprocess import apply_postprocessing, choose_postprocessing
from agseg.metrics import read_csv, summarize, write_csv

__all__ = ["cv_postprocessing"]

log = logging.getLogger(__name__)


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None and np.isfinite(float(r[key]))]
    return float(np.mean(vals)) if vals else None


def cv_postprocessing(
    cv_dir: str | Path, metrics: Sequence[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Choose and estimate post-processing for the CV in ``cv_dir`` (every fold finished, predictions saved).

    Writes ``cv_dir/postprocessing.json`` (the decision on all folds, the per-class mean Dice of each candidate, and
    the cross-validated estimate before/after) and ``cv_dir/metrics_postprocessed.csv`` (every case with the
    decision of the other folds applied).

    Raises:
        DataError: a fold without saved predictions, or a missing prediction file.
    """
    from agseg.config import load_config
    from agseg.experiments.run import load_index

    cv_dir = Path(cv_dir)
    cfg = load_config(cv_dir / "config.yaml")
    metrics = list(metrics or cfg.eval.metrics)
    index = {c.case_id: c for c in load_index(cfg)}
    folds = sorted(d for d in cv_dir.glob("repeat*_fold*") if (d / "metrics.csv").is_file())
    if not folds:
        raise DataError(cv_dir, "no finished fold (repeat*_fold*/metrics.csv)")
    bundle = json.loads((folds[0] / "model" / "model.json").read_text(encoding="utf-8"))
    ls = LabelSet.from_bundle(bundle["labels"], bundle.get("class_names"))
    classes = list(ls.foreground)
    multi = None if ls.binary else classes
    suffixes = ls.column_suffixes() if multi else None
    cases: dict[str, list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...], dict[str, Any]]]] = {}
    jobs = [(f, r) for f in folds for r in read_csv(f / "metrics.csv", text_columns=("model", "case_id"))]
    for fold, row in tqdm(
        jobs, desc="reading predictions", unit="case", leave=False, disable=None if progress else True
    ):
        ref = index[str(row["case_id"])]
        pp = mask_path_for(ref.image_paths[0], fold / "predictions")
        if not pp.exists():
            raise DataError(
                pp, f"prediction of test case {ref.case_id!r} of {fold.name} is missing (eval.save_predictions)"
            )
        case = ref.load()
        pred, _ = read_mask(pp)
        label = case.label
        if multi is None:  # binary: a raster mask holds 255 for the class, a reference may hold any non-zero value
            pred = np.where(pred != 0, classes[0], 0).astype(np.int32)
            label = np.where(label != 0, classes[0], 0).astype(np.int32)
        ident = {"model": row.get("model"), "repeat": int(row["repeat"]), "fold": int(row["fold"])}
        cases.setdefault(fold.name, []).append((ref.case_id, pred, label, case.geometry.array_spacing, ident))
    every = [(p, r) for items in cases.values() for _, p, r, _, _ in items]
    decision = choose_postprocessing(every, classes)
    rows_before: list[dict[str, Any]] = []
    rows_after: list[dict[str, Any]] = []
    per_fold: dict[str, Any] = {}
    for name, items in tqdm(cases.items(), desc="cross-validated post-processing", leave=False,
                            disable=None if progress else True):  # fmt: skip
        others = [(p, r) for other, its in cases.items() if other != name for _, p, r, _, _ in its]
        fold_decision = choose_postprocessing(others, classes) if others else decision
        per_fold[name] = fold_decision["keep_largest"]
        for cid, pred, ref, spacing, ident in items:
            before = {**ident, "case_id": cid, **case_metrics(pred, ref, spacing, metrics, multi, suffixes)}
            post = apply_postprocessing(pred, fold_decision)
            after = {**ident, "case_id": cid, **case_metrics(post, ref, spacing, metrics, multi, suffixes)}
            rows_before.append(before)
            rows_after.append(after)
    write_csv(rows_after, cv_dir / "metrics_postprocessed.csv")
    cols = [k for k in rows_after[0] if k not in ("model", "repeat", "fold", "case_id")]
    estimate = {
        "before": {k: v.as_dict() for k, v in summarize(rows_before, cols).items()},
        "after": {k: v.as_dict() for k, v in summarize(rows_after, cols).items()},
        "decision_per_fold": per_fold,
    }
    out = {**decision, "cv_estimate": estimate, "note": (
        "keep_largest was chosen on every CV case; cv_estimate applies, to each fold, the decision taken on the "
        "other folds (metrics_postprocessed.csv), so no case's post-processed score was chosen on itself")}  # fmt: skip
    atomic_write_text(cv_dir / "postprocessing.json", json.dumps(out, indent=2, default=float) + "\n")
    log.info(
        "post-processing %s: mean Dice %.4f -> %.4f (cross-validated)",
        decision["keep_largest"] or "none",
        _mean(rows_before, "dice") or float("nan"),
        _mean(rows_after, "dice") or float("nan"),
    )
    return out
