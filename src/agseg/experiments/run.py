"""Experiments from a config: train one model on one split, or cross-validate it, leaving a complete run directory.

A training run directory::

    RUN/config.yaml          resolved experiment config
    RUN/env.json             package and library versions, machine, start time, command
    RUN/split.json           the case ids used for training and validation
    RUN/preprocess.json      the fitted preprocessing
    RUN/checkpoints/         last.pt (resume), best.pt
    RUN/log.csv, RUN/tb/     per-epoch metrics (CSV, TensorBoard)
    RUN/model/               model.json + model.safetensors: the bundle `agseg predict --run RUN` uses

A cross-validation directory::

    CV/config.yaml, CV/env.json, CV/splits.json
    CV/repeat{r}_fold{f}/    a training run directory per fold, plus metrics.csv (test cases) and predictions/
    CV/metrics.csv           every test case of every finished fold (model, repeat, fold, case_id, metrics...)
    CV/summary.json          per metric: mean/std/median over cases, mean/std over folds, undefined counts
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agseg.config import ExperimentConfig, save_config
from agseg.data.augment import AugmentConfig
from agseg.data.cache import PreprocessCache
from agseg.data.datasets import CaseRef, DatasetIndex, load_dataset
from agseg.data.errors import DataError
from agseg.data.io import mask_path_for
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.data.torch_dataset import SegmentationDataset
from agseg.experiments.evaluate import case_metrics
from agseg.experiments.splits import SplitPlan, load_or_create_splits, make_splits
from agseg.fileio import atomic_write_text
from agseg.inference.bundle import ModelBundle
from agseg.inference.predictor import Predictor, _safe_write
from agseg.losses import DeepSupervisionLoss, create_loss
from agseg.metrics import summarize, write_csv, write_summary_json
from agseg.nets.registry import create_model, get_model_spec
from agseg.training.checkpoint import load_state_dict_file, transfer_weights
from agseg.training.trainer import Trainer, TrainResult

__all__ = ["CVResult", "TrainRun", "load_index", "run_cv", "train_model"]

log = logging.getLogger(__name__)


def environment() -> dict[str, Any]:
    """Versions and machine facts for the run record."""
    import monai
    import scipy
    import SimpleITK

    from agseg import __version__

    return {
        "agseg": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "SimpleITK": SimpleITK.Version.VersionString(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def _write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def load_index(cfg: ExperimentConfig) -> DatasetIndex:
    """The dataset named by ``cfg.data`` (only labelled cases; the first ``limit`` when set).

    Raises:
        DataError: missing path, unknown layout, or no labelled case.
    """
    if not cfg.data.path:
        raise DataError("data.path", "the config names no dataset (set data.path)")
    layout = None if cfg.data.layout == "auto" else cfg.data.layout
    index = load_dataset(cfg.data.path, layout, **cfg.data.options)
    cases = index.labelled()
    if cfg.data.limit:
        cases = cases[: cfg.data.limit]
    if not cases:
        raise DataError(cfg.data.path, "no case with a mask: nothing to train or evaluate on")
    return dataclasses.replace(index, cases=cases)


def _cache(cfg: ExperimentConfig, run_dir: Path) -> PreprocessCache:
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir.resolve().parent / ".agseg_cache"
    return PreprocessCache(root)


def _labels_of(dataset: SegmentationDataset, n: int = 16) -> list[int]:
    """Label values found in up to ``n`` evenly spaced (preprocessed, cached) training cases."""
    values: set[int] = set()
    step = max(1, len(dataset) // n)
    for i in range(0, len(dataset), step):
        values |= {int(v) for v in np.unique(dataset.load(i)[1])}
    return sorted(values | {0})


def _resolve_model(
    cfg: ExperimentConfig, in_channels: int, spatial_dims: int, labels: Sequence[int]
) -> tuple[str, dict[str, Any]]:
    spec = get_model_spec(cfg.model.name)  # unknown names fail here, listing the valid ones
    kwargs = dict(cfg.model.kwargs)
    n_classes = max(labels) + 1
    kwargs.setdefault("spatial_dims", spatial_dims)
    kwargs.setdefault("in_channels", in_channels)
    kwargs.setdefault("out_channels", 1 if n_classes <= 2 else n_classes)
    for key, have in (("spatial_dims", spatial_dims), ("in_channels", in_channels)):
        want = {**spec.defaults, **kwargs}.get(key)
        if want != have:
            raise ValueError(f"model.{key} is {want} but the data has {have}")
    return cfg.model.name, kwargs


@dataclass
class TrainRun:
    """A trained model and where its record is."""

    run_dir: Path
    model: torch.nn.Module
    bundle: ModelBundle
    result: TrainResult


def train_model(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    train_cases: Sequence[CaseRef],
    val_cases: Sequence[CaseRef],
    resume: bool = False,
    init_from: str | Path | None = None,
    init_classes: Sequence[int] | None = None,
    evaluate_val: bool = False,
) -> TrainRun:
    """Train ``cfg.model`` on ``train_cases`` (validating on ``val_cases``) into ``run_dir``.

    Args:
        cfg: the experiment config.
        run_dir: output folder (created).
        train_cases, val_cases: the split.
        resume: continue from ``run_dir/checkpoints/last.pt`` when it exists.
        init_from: weights to start from (a run/bundle folder, a ``.safetensors`` or a checkpoint): tensors that fit
            are copied (U-Net weights into an Attention U-Net, seed 001).
        init_classes: with ``init_from``, the source's output classes to keep (fine-tuning on a subset of classes).
        evaluate_val: after training, predict the validation cases in their original grid and write their per-case
            metrics (``metrics.csv``) and ``summary.json`` into ``run_dir``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    _write_json(run_dir / "env.json", environment())
    _write_json(
        run_dir / "split.json", {"train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases]}
    )
    cache = _cache(cfg, run_dir)
    pre = Preprocessor(PreprocessConfig.from_dict(cfg.data.preprocess))
    if pre.needs_fit:
        pre.fit(list(train_cases), cache=cache, progress=True)
    _write_json(run_dir / "preprocess.json", pre.to_dict())
    augment = AugmentConfig.from_dict(cfg.data.augment) if cfg.data.augment else None
    train_ds = SegmentationDataset(list(train_cases), pre, cache=cache, augment=augment, seed=cfg.seed)
    val_ds = SegmentationDataset(list(val_cases), pre, cache=cache) if val_cases else None
    first_image = train_ds.load(0)[0]
    labels = _labels_of(train_ds)
    name, kwargs = _resolve_model(cfg, int(first_image.shape[0]), first_image.ndim - 1, labels)
    torch.manual_seed(cfg.seed)
    model = create_model(name, **kwargs)
    if init_from is not None:
        source = Path(init_from)
        if source.is_dir():
            source = (
                source / "model" / "model.safetensors" if (source / "model").is_dir() else source / "model.safetensors"
            )
        n_src = None
        if init_classes is not None:
            meta = source.parent / "model.json"
            n_src = (
                json.loads(meta.read_text(encoding="utf-8"))["model_kwargs"]["out_channels"] if meta.is_file() else None
            )
        report = transfer_weights(model, load_state_dict_file(source), init_classes, n_src)
        _write_json(run_dir / "init_from.json", {"source": str(source), **report.__dict__})
    loss = create_loss(cfg.train.loss, **cfg.train.loss_kwargs)
    if getattr(model, "deep_supervision", False):
        loss = DeepSupervisionLoss(loss, cfg.train.ds_weights)
    patch = list(augment.patch_size) if augment is not None and augment.patch_size else None
    bundle = ModelBundle(
        model_name=name,
        model_kwargs=kwargs,
        preprocess=pre.to_dict(),
        labels=[0, 1] if kwargs["out_channels"] == 1 else list(range(kwargs["out_channels"])),
        patch_size=patch,
        class_names={str(k): v for k, v in (cfg.eval.class_names or {}).items()} or None,
        info={"experiment": cfg.name, "data": cfg.data.path, "n_train": len(train_cases), "n_val": len(val_cases)},
    )
    trainer = Trainer(
        model,
        loss,
        train_ds,
        val_ds,
        cfg.train,
        run_dir,
        seed=cfg.seed,
        config_dict={"experiment": cfg.to_dict(), "bundle": bundle.to_dict()},
        num_workers=cfg.data.num_workers,
    )
    result = trainer.fit(resume=resume)
    bundle.info.update({"epochs": result.epochs_run, "best_epoch": result.best_epoch if result.best_epoch > 0 else None,
                        "selected_epoch": result.selected_epoch, "train_seconds": result.seconds})  # fmt: skip
    bundle.save(run_dir / "model", trainer.model)
    if evaluate_val and val_cases:
        predictor = Predictor(trainer.model, bundle, device=cfg.train.device, amp=cfg.train.amp)
        rows = [{"model": cfg.name, **r} for r in evaluate_cases(predictor, val_cases, cfg.eval.metrics)]
        write_csv(rows, run_dir / "metrics.csv")
        write_summary_json(summarize(rows), run_dir / "summary.json", name=cfg.name, cases="validation",
                           epochs=result.epochs_run, best_epoch=result.best_epoch, seconds=result.seconds)  # fmt: skip
    return TrainRun(run_dir, trainer.model, bundle, result)


def evaluate_cases(
    predictor: Predictor,
    cases: Sequence[CaseRef],
    metrics: Sequence[str],
    pred_dir: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predict each case in its original grid and compute its metrics against its (original) mask."""
    labels = predictor.bundle.labels
    multi = [v for v in labels if v != 0] if len(labels) > 2 else None
    rows = []
    for ref in tqdm(cases, desc="testing", unit="case", leave=False, disable=None if progress else True):
        case = ref.load()
        pred = predictor.predict_array(case.image, case.geometry)
        row: dict[str, Any] = {"case_id": case.case_id}
        row.update(case_metrics(pred.label, case.label, case.geometry.array_spacing, metrics, multi))
        rows.append(row)
        if pred_dir is not None:
            _safe_write(
                ref.image_paths[0], mask_path_for(ref.image_paths[0], pred_dir), pred.label, pred.geometry, True
            )
    return rows


@dataclass
class CVResult:
    """Outcome of :func:`run_cv`."""

    out_dir: Path
    plan: SplitPlan
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    folds_done: int
    folds_total: int
    seconds: float


def _fold_name(repeat: int, fold: int) -> str:
    return f"repeat{repeat}_fold{fold}"


def run_cv(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    folds: Sequence[int] | None = None,
    repeats: Sequence[int] | None = None,
    splits: str | Path | None = None,
    progress: bool = True,
) -> CVResult:
    """k-fold (x repeats) cross-validation of ``cfg``: per fold train, predict the test fold, per-case metrics.

    Splits are seeded and grouped by patient, saved as ``splits.json`` and reused: pass the same ``splits`` file to
    every model of a comparison so the statistics are paired. Finished folds (``metrics.csv`` present) are not
    rerun, an interrupted fold resumes from its last checkpoint, and ``folds``/``repeats`` select a subset so
    folds can run on different machines; the summary covers every finished fold.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    _write_json(out / "env.json", environment())
    index = load_index(cfg)
    by_id = {c.case_id: c for c in index}
    ids = list(by_id)
    groups = [c.patient_id or c.case_id for c in index]
    split_path = Path(splits or cfg.cv.splits or out / "splits.json")
    plan = load_or_create_splits(
        split_path, ids, groups, n_folds=cfg.cv.folds, n_repeats=cfg.cv.repeats, seed=cfg.seed,
        val_fraction=cfg.cv.val_fraction,
    )  # fmt: skip
    if split_path.resolve() != (out / "splits.json").resolve():
        plan.to_json(out / "splits.json")
    selected = [
        f for f in plan.folds if (folds is None or f.fold in folds) and (repeats is None or f.repeat in repeats)
    ]
    if not selected:
        raise ValueError(
            f"no fold selected: folds {folds}, repeats {repeats} of a {plan.n_repeats}x{plan.n_folds} plan"
        )
    for i, fold in enumerate(selected, 1):
        fdir = out / _fold_name(fold.repeat, fold.fold)
        if (fdir / "metrics.csv").is_file():
            log.info("fold %s already done: skipped", fdir.name)
            continue
        log.info("[%d/%d] %s: train %d, val %d, test %d", i, len(selected), fdir.name, len(fold.train), len(fold.val),
                 len(fold.test))  # fmt: skip
        run = train_model(cfg, fdir, [by_id[c] for c in fold.train], [by_id[c] for c in fold.val], resume=True)
        predictor = Predictor(run.model, run.bundle, device=cfg.train.device, amp=cfg.train.amp)
        pred_dir = fdir / "predictions" if cfg.eval.save_predictions else None
        rows = evaluate_cases(predictor, [by_id[c] for c in fold.test], cfg.eval.metrics, pred_dir, progress)
        rows = [{"model": cfg.name, "repeat": fold.repeat, "fold": fold.fold, **r} for r in rows]
        write_csv(rows, fdir / "metrics.csv")
    return gather_cv(out, cfg, plan, t0)


def gather_cv(out: Path, cfg: ExperimentConfig, plan: SplitPlan, t0: float | None = None) -> CVResult:
    """Merge the finished folds' ``metrics.csv`` into ``out/metrics.csv`` and ``out/summary.json``."""
    from agseg.metrics import read_csv

    rows: list[dict[str, Any]] = []
    done = 0
    for fold in plan.folds:
        f = out / _fold_name(fold.repeat, fold.fold) / "metrics.csv"
        if f.is_file():
            rows += read_csv(f)
            done += 1
    metric_cols = [k for k in (rows[0] if rows else {}) if k not in ("model", "repeat", "fold", "case_id")]
    summary = summarize(rows, metric_cols) if rows else {}
    per_fold: dict[str, dict[str, float]] = {}
    for m in metric_cols:
        means = []
        for fold in plan.folds:
            vals = [float(r[m]) for r in rows if int(r["repeat"]) == fold.repeat and int(r["fold"]) == fold.fold]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                means.append(float(np.mean(vals)))
        per_fold[m] = {
            "fold_mean": float(np.mean(means)) if means else None,
            "fold_std": float(np.std(means, ddof=1)) if len(means) > 1 else None,
        }
    seconds = time.perf_counter() - t0 if t0 is not None else None
    if rows:
        write_csv(rows, out / "metrics.csv")
    write_summary_json(
        summary, out / "summary.json", name=cfg.name, model=cfg.model.name, folds_done=done,
        folds_total=len(plan.folds), n_folds=plan.n_folds, n_repeats=plan.n_repeats, per_fold=per_fold,
        seconds=seconds,
    )  # fmt: skip
    if done < len(plan.folds):
        log.warning("%d of %d folds finished: the summary covers those only", done, len(plan.folds))
    return CVResult(out, plan, rows, {k: v.as_dict() for k, v in summary.items()}, done, len(plan.folds), seconds or 0)


def train_split(cfg: ExperimentConfig, index: DatasetIndex) -> tuple[list[CaseRef], list[CaseRef]]:
    """All cases for training with a seeded, patient-grouped validation part (``cfg.cv.val_fraction``)."""
    cases = list(index)
    if cfg.cv.val_fraction <= 0 or len(cases) < 2:
        return cases, []
    ids = [c.case_id for c in cases]
    groups = [c.patient_id or c.case_id for c in cases]
    n_val_groups = max(1, round(len(set(groups)) * cfg.cv.val_fraction))
    n_folds = max(2, min(len(set(groups)), round(len(set(groups)) / n_val_groups)))
    fold = make_splits(ids, groups, n_folds=n_folds, seed=cfg.seed, val_fraction=0.0).folds[0]
    val = set(fold.test)
    return [c for c in cases if c.case_id not in val], [c for c in cases if c.case_id in val]
