"""Per-case metrics for predicted masks against references: in memory (CV) or for two folders (``agseg evaluate``).

Metrics are computed in the reference's grid with its spacing (array order), so distances are in millimetres
for medical formats and in pixels for PNG. Binary tasks (one foreground label) give columns ``dice``, ``hd95``,
...; multi-class tasks give one column per label (``dice_1``, ``dice_2``, ...) and their mean over labels
(``dice``, ...). Undefined values (e.g. a distance when the prediction is empty) stay NaN/inf in the rows and
are counted, never dropped, by the summary (:func:`agseg.metrics.summarize`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import data_files, read_mask, split_ext
from agseg.data.label_set import LabelSet
from agseg.metrics import (
    DEFAULT_METRICS,
    ID_COLUMNS,
    PooledOverlap,
    evaluate_case,
    get_metric,
    read_csv,
    summarize,
    write_csv,
    write_summary_json,
)
from agseg.metrics.table import read_csv_table

__all__ = ["case_metrics", "evaluate_folders", "evaluate_run", "pair_masks", "pooled_overlap"]

log = logging.getLogger(__name__)


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None,
    metrics: Sequence[str],
    labels: Sequence[int] | None = None,
    suffixes: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Metrics of one case. ``labels=None``: binary (non-zero is foreground); else one column per label plus the
    mean over labels under the plain metric name (NaN when any label's value is NaN; inf when any is inf).

    ``suffixes`` names the per-label columns (``{1: "anterior"}`` -> ``dice_anterior``; the label set's
    :meth:`~agseg.data.label_set.LabelSet.column_suffixes`); by default the value (``dice_1``).

    The mean over labels leaves out labels absent from both masks: their per-label value is the empty-mask
    convention (Dice 1.0), which says nothing about this case and would inflate the mean (a stray label value that
    no case holds scored 1.0 and hid a foreground Dice of 0). When no label is present in either mask the mean is
    that convention value."""
    for m in metrics:
        get_metric(m)  # unknown names fail here, listing the valid ones
    if labels is None:
        return evaluate_case(pred != 0, ref != 0, spacing=spacing, metrics=metrics)
    raw = evaluate_case(pred, ref, spacing=spacing, metrics=metrics, labels=labels)
    names = {int(lab): (suffixes or {}).get(int(lab), str(int(lab))) for lab in labels}
    row = {}
    for lab in labels:
        for m in metrics:
            row[f"{m}_{names[int(lab)]}"] = raw[f"{m}_{int(lab)}"]
    present = [int(lab) for lab in labels if np.any(pred == lab) or np.any(ref == lab)]
    used = present or [int(lab) for lab in labels]
    for m in metrics:
        row[m] = float(np.mean([raw[f"{m}_{lab}"] for lab in used]))
    return row


class _Pool:
    """Pooled counts for a binary task (``labels=None``: non-zero is foreground) or one per label, keyed by the
    label's column suffix (its class name) when ``names`` gives one, else by its value."""

    def __init__(self, labels: Sequence[int] | None, names: Mapping[int, str] | None = None) -> None:
        self.labels = None if labels is None else [int(lab) for lab in labels]
        self.names = dict(names or {})
        self.acc = {lab: PooledOverlap() for lab in (self.labels or [None])}

    def add(self, pred: np.ndarray, ref: np.ndarray) -> None:
        for lab, pooled in self.acc.items():
            if lab is None:
                pooled.add(pred != 0, ref != 0)
            else:
                pooled.add(pred == lab, ref == lab)

    def result(self) -> dict[str, Any]:
        if self.labels is None:
            return self.acc[None].result()
        return {self.names.get(lab, str(lab)): pooled.result() for lab, pooled in self.acc.items()}


def pooled_overlap(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], labels: Sequence[int] | None = None
) -> dict[str, Any]:
    """Dataset-level (pooled) overlap of ``(pred, ref)`` label maps (:class:`agseg.metrics.PooledOverlap`).

    ``labels=None``: one dict (``dice``, ``precision``, ``recall``, ..., counts), non-zero is foreground; a label
    list: ``{"1": {...}, "2": {...}}``.
    """
    pool = _Pool(labels)
    for pred, ref in pairs:
        pool.add(np.asarray(pred), np.asarray(ref))
    return pool.result()


@dataclass
class Evaluation:
    """Result of :func:`evaluate_folders` / :func:`evaluate_run`.

    Attributes:
        rows: one dict of metrics per case.
        summary: metric -> :class:`agseg.metrics.MetricSummary` fields (mean, std, median, n_undefined, ...).
        pooled: dataset-level overlap from summed counts (:func:`pooled_overlap`): binary tasks one dict,
            multi-class tasks one dict per label.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    pooled: dict[str, Any]
    missing: list[str] = field(default_factory=list)


#: what ``agseg predict`` writes beside a mask ``<name>``: probability and attention maps, figures
_SIDE_OUTPUT = re.compile(r"^(?P<base>.+)_(?:prob(?:_.+)?|attention|att_.+|boxes)$")


def _prediction_files(pred_dir: Path, pred_suffix: str, refs: Iterable[str] = ()) -> dict[str, Path]:
    """``{case name: prediction file}``, leaving out ``agseg predict``'s side outputs (``x_prob.png``,
    ``x_attention.png``, ``x_att_level1.png``, ``x_boxes.png`` beside ``x.png``): they are not masks to score. A
    name that is also a reference's (``refs``) is always a prediction."""
    preds: dict[str, Path] = {}
    for p in data_files(pred_dir):
        stem = split_ext(p)[0]
        if pred_suffix and stem.endswith(pred_suffix):
            stem = stem[: -len(pred_suffix)]
        preds[stem] = p
    keep = set(refs)
    side = {n for n in preds if n not in keep and (m := _SIDE_OUTPUT.match(n)) and m["base"] in preds}
    return {n: p for n, p in preds.items() if n not in side}


def pair_masks(pred_dir: str | Path, ref_dir: str | Path, pred_suffix: str = "") -> list[tuple[str, Path, Path]]:
    """Match prediction and reference files by name (format-agnostic: ``a.png`` pairs with ``a.png``;
    ``ct_pred.nii.gz`` with ``ct.nii.gz`` when ``pred_suffix="_pred"``). References without a prediction are
    listed by :func:`unpaired` (and counted as missing by :func:`evaluate_folders`); the probability and attention
    maps ``agseg predict`` writes beside its masks are not predictions.

    Raises:
        DataError: a folder is missing or no file pairs up (the message names the folders).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise DataError(d, "folder not found")
    refs = {split_ext(p)[0]: p for p in data_files(ref_dir)}
    preds = _prediction_files(pred_dir, pred_suffix, refs)
    common = sorted(set(refs) & set(preds))
    if not common:
        raise DataError(pred_dir, f"no prediction file matches a reference in {ref_dir} by name")
    return [(name, preds[name], refs[name]) for name in common]


def unpaired(pred_dir: str | Path, ref_dir: str | Path, pred_suffix: str = "") -> tuple[list[Path], list[Path]]:
    """``(references without a prediction, predictions without a reference)``, matched as :func:`pair_masks`."""
    refs = {split_ext(p)[0]: p for p in data_files(ref_dir)}
    preds = _prediction_files(Path(pred_dir), pred_suffix, refs)
    return [refs[n] for n in sorted(set(refs) - set(preds))], [preds[n] for n in sorted(set(preds) - set(refs))]


def _few(paths: Sequence[Path], k: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:k])
    return names + (f" and {len(paths) - k} more" if len(paths) > k else "")


#: more foreground values than this in references read as labels: not a label map (anti-aliased or continuous)
MAX_AUTO_LABELS = 32
#: an 8-bit mask is anti-aliased when at least this share of its grey (1..254) pixels touch a 0 or 255 pixel
EDGE_FRACTION = 0.9


def _binary_or_antialiased(ref: np.ndarray) -> bool:
    """An 8-bit mask of one class drawn with 255: binary, or anti-aliased (its grey values form a thin band at the
    edges, so nearly every grey pixel touches a 0 or 255 one). A label map that uses 255 as one value beside a region
    of another ({0, 128, 255}) has grey pixels inside that region, and stays a label map."""
    if ref.dtype != np.uint8 or not ref.size or int(ref.max()) != 255:
        return False
    grey = (ref > 0) & (ref < 255)
    n_grey = int(grey.sum())
    if n_grey == 0:
        return True
    from scipy import ndimage

    # a 0 / 255 pixel or one of its 2 * ndim face neighbours (outside the image counts as neither)
    touch = ndimage.binary_dilation(~grey, ndimage.generate_binary_structure(ref.ndim, 1))
    return int((touch & grey).sum()) >= EDGE_FRACTION * n_grey


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[int] | str | None = "auto",
    ref_threshold: float | str | None = "auto",
    pred_suffix: str = "",
) -> Evaluation:
    """Per-case metrics for two folders of masks, written to ``out_dir/metrics.csv`` and ``out_dir/summary.json``
    (which also holds the pooled overlap).

    Args:
        pred_dir: predicted masks (any supported format).
        ref_dir: reference masks, matched by file name.
        out_dir: where to write; None writes nothing.
        metrics: metric names (``agseg.metrics.list_metrics()``); default :data:`agseg.metrics.DEFAULT_METRICS`.
        labels: ``"auto"`` (binary when the references hold one foreground value, else every non-zero value),
            ``None`` (binary, non-zero is foreground), or an explicit list.
        ref_threshold: binarise references as ``value > ref_threshold``; ``"auto"``: with ``labels`` ``"auto"`` or
            ``None``, an 8-bit reference whose maximum is 255 and whose other non-zero values are edges (binary 0/255,
            or anti-aliased: a band of grey at the edges, see :data:`EDGE_FRACTION`) is read as ``value > 127``;
            anything else, and every reference when ``labels`` names the classes, is kept as labels. ``None``:
            values are labels.
        pred_suffix: suffix of prediction names to ignore when pairing.

    Returns:
        The :class:`Evaluation` (rows, summary, pooled). A reference without a prediction gets a row with
        ``status: missing`` and no metric, so every metric counts it as missing (``n_missing``) instead of dropping
        it; :attr:`Evaluation.missing` lists them.

    Raises:
        DataError: a pair whose shapes or geometry differ (both files named), unreadable files, no pairs, or
            (``labels="auto"``) references with more than :data:`MAX_AUTO_LABELS` foreground values.
    """
    pairs = pair_masks(pred_dir, ref_dir, pred_suffix)
    missing, extra = unpaired(pred_dir, ref_dir, pred_suffix)
    if missing:
        log.warning("%d of %d references have no prediction (counted as missing): %s", len(missing),
                    len(missing) + len(pairs), _few(missing))  # fmt: skip
    if extra:
        log.warning("%d prediction(s) have no reference (not evaluated): %s", len(extra), _few(extra))
    loaded = []
    values: set[int] = set()
    auto_thresholded = []
    for case_id, pp, rp in pairs:
        ref, geom = read_mask(rp)
        if ref_threshold == "auto":
            if (labels == "auto" or labels is None) and _binary_or_antialiased(ref):
                ref = (ref > 127).astype(np.uint8)
                auto_thresholded.append(rp)
        elif ref_threshold is not None:
            ref = (ref > float(ref_threshold)).astype(np.uint8)
        values |= {int(v) for v in np.unique(ref)}
        loaded.append((case_id, pp, rp, ref, geom))
    if auto_thresholded:
        log.info("%d 8-bit reference(s) with maximum 255 read as foreground = value > 127 (--ref-threshold to "
                 "change)", len(auto_thresholded))  # fmt: skip
    if labels == "auto":
        fg = sorted(values - {0})
        if len(fg) > MAX_AUTO_LABELS:
            raise DataError(Path(ref_dir), f"the references hold {len(fg)} foreground values ({fg[0]}..{fg[-1]}): "
                            "not a label map (anti-aliased or continuous masks?); pass --ref-threshold T to binarise "
                            "them, or --labels to name the classes")  # fmt: skip
        labels = None if len(fg) <= 1 else fg
    rows: list[dict[str, Any]] = []
    pool = _Pool(labels)  # type: ignore[arg-type]
    for case_id, pp, rp, ref, geom in tqdm(loaded, desc="evaluating", leave=False, disable=None):
        pred, pgeom = read_mask(pp)
        if pred.shape != ref.shape:
            raise DataError(pp, f"prediction shape {pred.shape} differs from reference {rp} shape {ref.shape}")
        if reason := geom.mismatch(pgeom, 1e-3):
            raise DataError(pp, f"prediction is not on the reference's grid ({rp}): {reason}")
        row = {"case_id": case_id}
        row.update(case_metrics(pred, ref, geom.array_spacing, metrics, labels))  # type: ignore[arg-type]
        rows.append(row)
        pool.add(pred, ref)
    rows += [{"case_id": split_ext(p)[0], "status": "missing"} for p in missing]
    result = _finish(
        rows, pool.result(), out_dir, pred_dir=str(pred_dir), ref_dir=str(ref_dir),
        missing_predictions=[str(p) for p in missing], predictions_without_reference=[str(p) for p in extra],
    )  # fmt: skip
    result.missing = [str(p) for p in missing]
    return result


def _finish(rows: list[dict[str, Any]], pooled: dict[str, Any], out_dir: str | Path | None, **extra: Any) -> Evaluation:
    cols = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ID_COLUMNS]
    summary = summarize(rows, cols)
    if out_dir is not None:
        out = Path(out_dir)
        write_csv(rows, out / "metrics.csv")
        write_summary_json(summary, out / "summary.json", **extra, pooled=pooled)
    n_bad = {k: s.n_undefined - s.n_missing for k, s in summary.items() if s.n_undefined > s.n_missing}
    if n_bad:  # the missing rows (no prediction) are reported apart
        log.warning("undefined values (counted, not dropped): %s", n_bad)
    return Evaluation(rows, {k: s.as_dict() for k, s in summary.items()}, pooled)


def _fold_dirs(run_dir: Path) -> list[Path]:
    def done(d: Path) -> bool:
        return all((d / f).exists() for f in ("predictions", "config.yaml", "metrics.csv", "model/model.json"))

    if done(run_dir):
        return [run_dir]
    return sorted(d for d in run_dir.glob("repeat*_fold*") if done(d))


def _is_classifier(run: Path) -> bool:
    meta = run / "model" / "model.json"
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("task") == "classification"


def evaluate_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: bool = True,
    repredict: bool = False,
    mirror_axes: Sequence[int] | None = None,
    postprocess: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Re-evaluate the test cases of a CV run (``agseg cv``) or of one of its folds, without retraining: other
    metrics, or the pooled overlap, against the references of the dataset in each fold's config; or, with
    ``repredict``, predict every fold's test cases again with the fold's model under other inference settings
    (mirroring, post-processing), to measure their effect on the same folds.

    Args:
        run_dir: the CV folder (with ``repeat{r}_fold{f}/predictions``) or one fold folder.
        out_dir: where ``metrics.csv`` and ``summary.json`` go; None writes nothing.
        metrics: metric names (``agseg.metrics.list_metrics()``); default :data:`agseg.metrics.DEFAULT_METRICS`.
        progress: show a progress bar.
        repredict: predict the test cases again instead of reading the saved predictions.
        mirror_axes: with ``repredict``, test-time mirroring axes (None: each fold bundle's own setting).
        postprocess: with ``repredict``, a post-processing decision to apply (None: none).

    Returns:
        The :class:`Evaluation`; rows carry ``model``, ``repeat``, ``fold`` and ``case_id`` like the CV's table.

    Raises:
        DataError: no fold with predictions, a missing prediction (file named), or a shape mismatch.
    """
    from agseg.config import load_config
    from agseg.data import load_dataset
    from agseg.data.io import mask_path_for

    run_dir = Path(run_dir)
    for m in metrics:
        get_metric(m)
    folds = _fold_dirs(run_dir)
    if any(_is_classifier(d) for d in [run_dir, *run_dir.glob("repeat*_fold*")]):
        raise DataError(
            run_dir, "is a classifier's CV: its per-case table (target, prediction, probabilities) is metrics.csv; "
            "evaluate --run re-scores segmentation masks"
        )  # fmt: skip
    if not folds:
        raise DataError(
            run_dir, "no finished fold with predictions/ (expected a CV folder from `agseg cv` or one fold)"
        )
    jobs: list[tuple[Any, Path, dict[str, Any]]] = []
    labels: list[int] | None = None
    suffixes: dict[int, str] = {}
    working = []
    for fdir in folds:
        cfg = load_config(fdir / "config.yaml")
        if cfg.eval.grid == "working":
            working.append(fdir.name)
        index = load_dataset(
            cfg.data.path, None if cfg.data.layout == "auto" else cfg.data.layout, **cfg.data.layout_kwargs()
        )
        bundle = json.loads((fdir / "model" / "model.json").read_text(encoding="utf-8"))
        label_set = LabelSet.from_bundle(bundle["labels"], bundle.get("class_names"))
        labels = None if label_set.binary else list(label_set.foreground)
        suffixes = label_set.column_suffixes()
        header = set(read_csv_table(fdir / "metrics.csv")[0])
        named = any(c.endswith(f"_{x}") for c in header for x in suffixes.values())
        if labels and not named and any(c.endswith(f"_{v}") for c in header for v in labels):
            suffixes = {v: str(v) for v in labels}  # a fold scored before class names reached the columns
        # the fold's test cases, as its CV table lists them; ids stay strings ("001" is not 1.0)
        for row in read_csv(fdir / "metrics.csv", text_columns=("model", "case_id")):
            ident = {"model": cfg.name, "repeat": int(row["repeat"]), "fold": int(row["fold"])}
            jobs.append((index.get(str(row["case_id"])), fdir, {**ident, "case_id": str(row["case_id"])}))
    rows: list[dict[str, Any]] = []
    pool = _Pool(labels, suffixes)
    predictors: dict[Path, Any] = {}
    for ref, fdir, row in tqdm(jobs, desc="evaluating", unit="case", leave=False, disable=None if progress else True):
        case = ref.load()
        if repredict:
            from agseg.inference.predictor import Predictor

            if fdir not in predictors:
                predictors[fdir] = Predictor.from_path(
                    fdir, amp="auto", mirror_axes=mirror_axes, postprocess=dict(postprocess) if postprocess else False
                )
            pred = predictors[fdir].predict_array(case.image, case.geometry).label
        else:
            pp = mask_path_for(ref.image_paths[0], fdir / "predictions")
            if not pp.exists():
                raise DataError(pp, f"prediction for test case {ref.case_id!r} of {fdir.name} is missing")
            pred, _ = read_mask(pp)
        if pred.shape != case.label.shape:
            raise DataError(pp, f"prediction shape {pred.shape} differs from the reference shape {case.label.shape}")
        row.update(case_metrics(pred, case.label, case.geometry.array_spacing, metrics, labels, suffixes))
        rows.append(row)
        pool.add(pred, case.label)
    settings = {"repredict": repredict, "mirror_axes": list(mirror_axes) if mirror_axes is not None else None,
                "postprocess": dict(postprocess) if postprocess else None} if repredict else {}  # fmt: skip
    if working:
        log.warning(
            "%s scored its test cases on the working grid (eval.grid: working); these figures are on the original "
            "grid, so they are not the CV's own", ", ".join(working),
        )  # fmt: skip
    return _finish(
        rows, pool.result(), out_dir, run=str(run_dir), folds=[d.name for d in folds], grid="original", **settings
    )
