"""Experiments from a config: train one model on one split, or cross-validate it, leaving a complete run directory.

A training run directory::

    RUN/config.yaml          resolved experiment config
    RUN/env.json             package and library versions, machine, start time, command
    RUN/split.json           the case ids used for training and validation
    RUN/preprocess.json      the fitted preprocessing
    RUN/labels.json          the label set (values, names, where it came from) and the label values of every case
    RUN/checkpoints/         last.pt (resume), best.pt
    RUN/log.csv, RUN/tb/     per-epoch metrics (CSV, TensorBoard)
    RUN/model/               model.json + model.safetensors: the bundle `agseg predict --run RUN` uses

A cross-validation directory::

    CV/config.yaml, CV/env.json, CV/splits.json, CV/labels.json (one label set for every fold)
    CV/init_from.json        with --init-from: the source and each fold's starting weights
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agseg.config import ConfigError, ExperimentConfig, from_dict, save_config
from agseg.data.cache import PreprocessCache
from agseg.data.datasets import CaseRef, DatasetIndex, load_dataset
from agseg.data.errors import DataError
from agseg.data.io import mask_path_for
from agseg.data.label_set import LabelSet, count_labels, declared_labels, resolve_label_set
from agseg.data.preprocess import Preprocessor, invert
from agseg.data.torch_dataset import ClassificationDataset, SegmentationDataset, case_target
from agseg.experiments.evaluate import case_metrics
from agseg.experiments.init_from import (
    INIT_RECORD,
    check_init_record,
    check_resumed_source,
    cv_init_sources,
    fold_name,
    refuse_inside,
    seen_cases,
    weights_file,
)
from agseg.experiments.splits import SplitPlan, load_or_create_splits, make_splits
from agseg.fileio import atomic_write_text
from agseg.inference.bundle import ModelBundle
from agseg.inference.predictor import Predictor, safe_write
from agseg.losses import DeepSupervisionLoss, create_loss
from agseg.metrics import ID_COLUMNS, summarize, write_csv, write_summary_json
from agseg.nets.base import pruning_levels_of, spatial_dims_of, unwrap, uses_deep_supervision
from agseg.nets.compat import legacy_model_kwargs, resolved_kwargs
from agseg.nets.registry import create_model, get_model_spec
from agseg.runtime import barrier, memory_format_for, resolve_device, set_threads, world
from agseg.tasks import get_task
from agseg.training.callbacks import ShardRecorder, default_callbacks
from agseg.training.checkpoint import load_state_dict_file, transfer_weights
from agseg.training.sampling import BalancedSampler, balance_strata, balanced_weights
from agseg.training.trainer import Trainer, TrainResult
from agseg.weights import load_checkpoint

__all__ = ["CVResult", "TrainRun", "experiment_label_set", "load_index", "run_cv", "train_model"]

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
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or None,
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
    index = load_dataset(cfg.data.path, layout, **cfg.data.layout_kwargs())
    if cfg.task == "classification":
        cases = [c for c in index if case_target(c) is not None]
        what = "no case with a class: nothing to train or evaluate a classifier on"
    else:
        cases = index.labelled()
        what = "no case with a mask: nothing to train or evaluate on"
    if cfg.data.limit:
        cases = cases[: cfg.data.limit]
    if not cases:
        raise DataError(cfg.data.path, what)
    return dataclasses.replace(index, cases=cases)


def _validated(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` checked as a loaded config is (an ``ExperimentConfig`` built by hand skips the YAML loader)."""
    try:
        return from_dict(cfg.to_dict())
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def experiment_label_set(
    cfg: ExperimentConfig, cases: Sequence[CaseRef], cache: PreprocessCache | None, index: DatasetIndex | None = None
) -> tuple[LabelSet, dict[str, dict[int, int]]]:
    """The experiment's label set and each case's label counts, every case checked against the set.

    From ``data.labels``, else what the dataset declares (``dataset.json``, a descriptor), else counted over
    ``cases`` (raw masks, once: the counts are cached). For a classifier, the classes are the cases' targets.

    Raises:
        DataError: a case holding a value outside a declared set (naming its mask file).
    """
    declared, source = (cfg.data.labels, "data.labels") if cfg.data.labels is not None else (None, "")
    if declared is None and index is not None:
        declared, source = declared_labels(index)
    if cfg.task == "classification":
        targets = {c.case_id: case_target(c) for c in cases}
        counts = {cid: {int(t): 1} for cid, t in targets.items() if t is not None}
        if declared is not None:
            ls = LabelSet.from_mapping(declared, source)
            for c in cases:
                ls.check([case_target(c)], c.image_paths[0], c.case_id)
        else:
            values = {t for t in targets.values() if t is not None}
            ls = LabelSet.from_values(values, source=f"classes of {len(counts)} cases")
        return ls, counts
    return resolve_label_set(list(cases), declared, source, cache, progress=True, extra=_preprocess_mask_rules(cfg))


def _preprocess_mask_rules(cfg: ExperimentConfig) -> Any:
    """The preprocessing's own mask rules (``data.preprocess.mask_threshold`` / ``label_map``), or None."""
    from agseg.data.labels import MaskSpec

    pre = cfg.data.preprocess
    if pre.mask_threshold is None and pre.label_map is None:
        return None
    return MaskSpec(threshold=pre.mask_threshold, label_map=pre.label_map)


def _labels_record(ls: LabelSet, counts: dict[str, dict[int, int]]) -> dict[str, Any]:
    per_value = {str(v): sum(1 for c in counts.values() if v in c) for v in ls.values}
    return {
        "labels": {str(v): n for v, n in ls.to_dict().items()},
        "source": ls.source,
        "binary": ls.binary,
        "out_channels": ls.out_channels,
        "cases_with_value": per_value,
        "cases": {cid: sorted(c) for cid, c in counts.items()},
    }


def _cache(cfg: ExperimentConfig, run_dir: Path) -> PreprocessCache:
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir.resolve().parent / ".agseg_cache"
    return PreprocessCache(root)


def _resolve_model(
    cfg: ExperimentConfig, in_channels: int, spatial_dims: int, label_set: LabelSet
) -> tuple[str, dict[str, Any]]:
    spec = get_model_spec(cfg.model.name)  # unknown names fail here, listing the valid ones
    kwargs = dict(cfg.model.kwargs)
    kwargs.setdefault("spatial_dims", spatial_dims)
    kwargs.setdefault("in_channels", in_channels)
    kwargs.setdefault("out_channels", label_set.out_channels)
    for key, have in (
        ("spatial_dims", spatial_dims),
        ("in_channels", in_channels),
        ("out_channels", label_set.out_channels),
    ):
        want = {**spec.defaults, **kwargs}.get(key)
        if want != have:
            what = f"the label set {{{label_set.describe()}}} needs" if key == "out_channels" else "the data has"
            raise ConfigError(f"model.{key} is {want} but {what} {have}")
    return cfg.model.name, kwargs


#: model settings whose default changed, with the earlier default: a run saved without the key ran with it
_EARLIER_DEFAULTS = {"model.up_mode": "interp"}

#: config keys that may differ between a run and its resumption (how, not what, is computed)
RUNTIME_KEYS = ("train.threads", "train.device", "data.num_workers", "data.cache_dir")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_changes(old: ExperimentConfig, new: ExperimentConfig, allowed: Sequence[str] = RUNTIME_KEYS) -> list[str]:
    """``"key: old -> new"`` for every setting that differs between two configs, except ``allowed`` ones."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    out = []
    for key in sorted(set(a) | set(b)):
        if key in allowed or any(key.startswith(f"{p}.") for p in allowed):
            continue
        if key in _EARLIER_DEFAULTS and key not in a and b.get(key) == _EARLIER_DEFAULTS[key]:
            continue  # a run made before the default changed, now resumed with the config that names the old one
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def check_run_dir(
    run_dir: Path,
    cfg: ExperimentConfig,
    resume: bool,
    overwrite: bool,
    allowed: Sequence[str] = RUNTIME_KEYS,
    remove: bool = True,
) -> None:
    """Refuse to write into ``run_dir`` unless it is new or empty, it is this run being resumed with the same
    settings, or ``overwrite`` (which removes the old agseg run first; with ``remove=False`` only checked, so that
    other checks can run before anything is deleted). Called before anything is written.

    Raises:
        DataError: a folder holding something that is not an agseg run, or a run without ``resume``/``overwrite``.
        ConfigError: ``resume`` with settings that differ from the run's (each difference listed).
    """
    if world()[1] > 1:  # torchrun: rank 0 checks (and removes, with overwrite) for every process
        if world()[0] != 0:
            barrier()
            return
        try:
            _check_run_dir(run_dir, cfg, resume, overwrite, allowed, remove)
        finally:
            barrier()
        return
    _check_run_dir(run_dir, cfg, resume, overwrite, allowed, remove)


def _check_run_dir(
    run_dir: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool, allowed: Sequence[str], remove: bool = True
) -> None:
    from agseg.config import load_config

    if not run_dir.exists() or not any(not p.name.startswith(".") for p in run_dir.iterdir()):
        return  # new, empty, or holding only hidden entries (the preprocessing cache)
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise DataError(run_dir, "is not empty and holds no agseg run: choose a new or empty --out folder")
    if overwrite:
        import shutil

        if remove:
            log.warning("--overwrite: removing the earlier run in %s", run_dir)
            shutil.rmtree(run_dir)
        return
    if not resume:
        raise DataError(
            run_dir, "holds a run already: pass --resume to continue it, --overwrite to replace it, or another --out"
        )
    try:
        before = load_config(stored)
    except ConfigError as err:
        raise DataError(stored, f"cannot be read to resume the run: {err}") from None
    changes = config_changes(before, cfg, allowed)
    if changes:
        raise ConfigError(
            f"{run_dir} was made with other settings ({'; '.join(changes)}): continue it with its own config, or "
            "start a new run (another --out, or --overwrite)"
        )


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
    label_set: LabelSet | None = None,
    index: DatasetIndex | None = None,
    callbacks: Sequence[Any] | None = None,
    overwrite: bool = False,
    extra_allowed: Sequence[str] = ("train.epochs",),
    cache: PreprocessCache | None = None,
) -> TrainRun:
    """Train ``cfg.model`` on ``train_cases`` (validating on ``val_cases``) into ``run_dir``.

    Args:
        cfg: the experiment config.
        run_dir: output folder (created once the data checks have passed).
        train_cases, val_cases: the split.
        resume: continue from ``run_dir/checkpoints/last.pt`` when it exists.
        init_from: weights to start from (a run/bundle folder, a ``.safetensors`` or a checkpoint): tensors that fit
            are copied (U-Net weights into an Attention U-Net, seed 001).
        init_classes: with ``init_from``, the source's output classes to keep (fine-tuning on a subset of classes).
        evaluate_val: after training, predict the validation cases in their original grid and write their per-case
            metrics (``metrics.csv``) and ``summary.json`` into ``run_dir``.
        label_set: the experiment's label set (a CV passes one for all folds); None: resolved here over the train
            and validation cases (:func:`experiment_label_set`).
        index: the dataset index the cases come from (for the label set it declares).
        callbacks: trainer callbacks; None: the defaults (progress, log.csv, TensorBoard, checkpoints, ...).
        overwrite: replace an earlier run in ``run_dir`` (without it, a folder holding a run is refused unless
            ``resume`` continues it with the same settings; ``train.epochs`` may grow).

    Raises:
        ConfigError: a config problem (checked before anything is written).
        DataError: a bad case or label value (checked before the run directory is written).
    """
    cfg = _validated(cfg)
    task = get_task(cfg.task)
    run_dir = Path(run_dir)
    resolve_device(cfg.train.device)  # a device that is not here fails before anything is written
    # only checked here: an --overwrite removes the old run once every check below has passed
    check_run_dir(run_dir, cfg, resume, overwrite, allowed=(*RUNTIME_KEYS, *extra_allowed), remove=False)
    source = weights_file(init_from).resolve() if init_from is not None else None  # before any write
    if overwrite and source is not None:
        refuse_inside(run_dir, [source], init_from)  # the weights would go with the old run
    if source is not None and resume and not overwrite:
        check_resumed_source(run_dir, source)
    seen = seen_cases(source) if source is not None else None  # read before --overwrite could delete an ancestor
    source_state = load_state_dict_file(source) if source is not None else None  # a file without weights, too
    n_src = None
    if source is not None and init_classes is not None:
        meta = source.parent / "model.json"
        try:
            if meta.is_file():
                n_src = json.loads(meta.read_text(encoding="utf-8"))["model_kwargs"]["out_channels"]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(meta, f"cannot tell the source's classes ({type(err).__name__}: {err})") from None
    set_threads(cfg.train.threads)
    cache = cache or _cache(cfg, run_dir)
    check_data(cfg, [*train_cases, *val_cases], cache)
    if label_set is None:
        label_set, counts = experiment_label_set(cfg, [*train_cases, *val_cases], cache, index)
    else:
        counts = _checked_counts(cfg, label_set, [*train_cases, *val_cases], cache)
    pre = Preprocessor(cfg.data.preprocess)
    if pre.needs_fit:
        pre.fit(list(train_cases), cache=cache, progress=True)
    augment = cfg.data.augment
    ds_cls = ClassificationDataset if task.name == "classification" else SegmentationDataset
    kw = {"cache": cache, "label_set": label_set}
    train_ds = ds_cls(list(train_cases), pre, augment=augment, seed=cfg.seed, **kw)
    val_ds = ds_cls(list(val_cases), pre, **kw) if val_cases else None
    first_image = train_ds.load(0)[0]
    name, kwargs = _resolve_model(cfg, int(first_image.shape[0]), first_image.ndim - 1, label_set)
    rank, world_size = world()
    sampler = _balanced_sampler(cfg, train_cases, train_ds, task.name, world_size)  # checked before any write
    torch.manual_seed(cfg.seed)
    model = create_model(name, **kwargs)
    last = run_dir / "checkpoints" / "last.pt"
    # a run started under earlier model defaults continues with its own net; an init-from source saved under them
    # gives its decoder to a net whose config does not choose one (so that its up-sampling weights fit). Only
    # looked for when the config leaves such a default unnamed.
    legacy = None
    if resolved_kwargs(model, kwargs) != kwargs:
        resumed = resume and not overwrite and last.is_file()  # an --overwrite's old run is not continued
        earlier = (load_checkpoint(last).get("model") if resumed else None) or source_state
        legacy = legacy_model_kwargs(model, name, kwargs, earlier) if earlier else None
    if legacy is not None:
        kwargs = legacy
        torch.manual_seed(cfg.seed)
        model = create_model(name, **kwargs)
    kwargs = resolved_kwargs(model, kwargs)  # the bundle names the defaults that changed once
    report = transfer_weights(model, source_state, init_classes, n_src) if source is not None else None
    if overwrite:
        check_run_dir(run_dir, cfg, resume, overwrite=True)  # every check passed: the old run goes now
    barrier()  # every process has checked the run directory before the first writes it
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        _write_json(run_dir / "env.json", environment())
        _write_json(
            run_dir / "split.json", {"train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases]}
        )
        _write_json(run_dir / "preprocess.json", pre.to_dict())
        _write_json(run_dir / "labels.json", _labels_record(label_set, counts))
    barrier()
    if init_from is not None and rank == 0:
        _write_json(run_dir / INIT_RECORD, {"source": str(source), **report.__dict__, "seen": seen})
    loss_name = task.default_loss if cfg.train.loss == "auto" else cfg.train.loss
    loss = create_loss(loss_name, **cfg.train.loss_kwargs)
    if uses_deep_supervision(model):
        loss = DeepSupervisionLoss(loss, cfg.train.ds_weights)
    loss = task.adapt_loss(loss)
    patch = list(augment.patch_size) if augment is not None and augment.patch_size else None
    bundle = ModelBundle(
        model_name=name,
        model_kwargs=kwargs,
        preprocess=pre.to_dict(),
        labels=list(label_set.values),
        patch_size=patch,
        class_names={str(v): n for v, n in label_set.to_dict().items()},
        info={"experiment": cfg.name, "data": cfg.data.path, "n_train": len(train_cases), "n_val": len(val_cases),
              "loss": loss_name, "labels_source": label_set.source,
              **_channel_patterns(cfg, train_cases)},
        task=task.name,
        mirror_axes=list(cfg.eval.mirror_axes) or None,
        exclude_classes=[int(c) for c in cfg.train.loss_kwargs.get("exclude_classes") or ()] or None,
    )  # fmt: skip
    if world_size > 1:  # torchrun: DDP over the processes, each training on its shard of the cases
        model, sampler = _distributed(model, train_ds, cfg)
        callbacks = [*(callbacks if callbacks is not None else default_callbacks(run_dir, cfg.train)),
                     ShardRecorder(run_dir, sampler, [c.case_id for c in train_cases])]  # fmt: skip
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
        callbacks=callbacks,
        task=task,
        sampler=sampler,
    )
    result = trainer.fit(resume=resume)
    if world_size > 1:
        net = unwrap(trainer.model)
        with torch.no_grad():  # rank 0's net (its batch-norm statistics, its selected epoch) on every process
            for t in net.state_dict().values():
                torch.distributed.broadcast(t, 0)
        trainer.model = net
        ShardRecorder.write_digest(run_dir, net)
        barrier()
        if rank != 0:  # rank 0 writes the model and scores the validation cases
            return TrainRun(run_dir, net, bundle, result)
    if cfg.train.attention_every:
        from agseg.viz.attention import plot_saved_attention

        plot_saved_attention(run_dir / "attention")
    bundle.info.update({"epochs": result.epochs_run, "best_epoch": result.best_epoch if result.best_epoch > 0 else None,
                        "selected_epoch": result.selected_epoch, "train_seconds": result.seconds})  # fmt: skip
    bundle.save(run_dir / "model", trainer.model)
    if evaluate_val and val_cases:
        predictor = Predictor(trainer.model, bundle, device=cfg.train.device, amp=cfg.train.amp)
        rows = [
            {"model": cfg.name, **r} for r in evaluate_cases(predictor, val_cases, cfg.eval.metrics, grid=cfg.eval.grid)
        ]
        write_csv(rows, run_dir / "metrics.csv")
        extra = (
            {"classification": _classification_block(run_dir, rows, label_set)} if task.name == "classification" else {}
        )
        write_summary_json(summarize(rows), run_dir / "summary.json", name=cfg.name, cases="validation",
                           epochs=result.epochs_run, best_epoch=result.best_epoch, seconds=result.seconds,
                           **extra)  # fmt: skip
    return TrainRun(run_dir, trainer.model, bundle, result)


def _distributed(model: torch.nn.Module, train_ds: Any, cfg: ExperimentConfig) -> tuple[torch.nn.Module, Any]:
    """``model`` wrapped in ``DistributedDataParallel`` (SyncBatchNorm with ``train.sync_batchnorm``) on this
    process's device in the trainer's memory format, and the ``DistributedSampler`` that shards the training cases."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    device = resolve_device(cfg.train.device)
    if cfg.train.sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("train.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    fmt = memory_format_for(spatial_dims_of(model)) if cfg.train.channels_last else None
    if fmt is not None:
        model = model.to(memory_format=fmt)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return ddp, DistributedSampler(train_ds, shuffle=True, seed=cfg.seed)


def check_data(cfg: ExperimentConfig, cases: Sequence[CaseRef], cache: PreprocessCache | None) -> None:
    """Read every case once before any work (cached by file signature) and refuse what would fail mid-run: a bad
    file (named), mixed channel counts, or mixed sizes the preprocessing keeps while batches hold several cases."""
    from agseg.data.validate import check_cases, check_consistency

    pre, aug = cfg.data.preprocess, cfg.data.augment
    fixed = bool(pre.target_size or pre.crop_or_pad or (aug is not None and aug.patch_size))
    check_consistency(cases, check_cases(cases, cache, progress=True), fixed, cfg.train.batch_size)


def _channel_patterns(cfg: ExperimentConfig, cases: Sequence[CaseRef]) -> dict[str, list[str]]:
    """How prediction finds a case's channel files in a case folder: the layout's ``channels`` patterns, or the
    channel file names every training case shares (BRATS ``Flair_...``, ``T1c_...``); nothing for one channel or
    per-case names (nnU-Net ``CASE_0000`` files are grouped by their suffix)."""
    from agseg.data.io import split_ext

    if cfg.data.options.channels:
        return {"channel_patterns": list(cfg.data.options.channels)}
    stems = {tuple(split_ext(p)[0] for p in c.image_paths) for c in cases}
    if len(stems) == 1 and len(next(iter(stems))) > 1:
        return {"channel_patterns": list(next(iter(stems)))}
    return {}


def _checked_counts(
    cfg: ExperimentConfig, label_set: LabelSet, cases: Sequence[CaseRef], cache: PreprocessCache | None
) -> dict[str, dict[int, int]]:
    """Every case's label counts, each checked against ``label_set`` (raises a ``DataError`` naming the file)."""
    if cfg.task == "classification":
        out = {}
        for c in cases:
            label_set.check([case_target(c)], c.image_paths[0], c.case_id)
            out[c.case_id] = {int(case_target(c)): 1}  # type: ignore[arg-type]
        return out
    counts = count_labels(cases, cache, extra=_preprocess_mask_rules(cfg))
    by_id = {c.case_id: c for c in cases}
    for cid, c in counts.items():
        label_set.check(c.keys(), by_id[cid].mask_paths[0], cid)
    return counts


def evaluate_cases(
    predictor: Predictor,
    cases: Sequence[CaseRef],
    metrics: Sequence[str],
    pred_dir: Path | None = None,
    progress: bool = True,
    grid: str = "original",
) -> list[dict[str, Any]]:
    """Predict each case and score it: segmentation in the original grid against its (original) mask (or, with
    ``grid="working"``, on the preprocessed grid against the mask preprocessed alike), with one column per class
    named after the label set; classification against its class (target, prediction, the probability of each
    class, and whether it was right)."""
    ls = predictor.label_set
    multi = list(ls.foreground) if not ls.binary else None
    suffixes = ls.column_suffixes() if multi else None
    rows = []
    crop = predictor.pre.config.crop_to_mask is not None  # the model sees each case cropped to its mask
    for ref in tqdm(cases, desc="testing", unit="case", leave=False, disable=None if progress else True):
        case = ref.load(with_mask=predictor.task != "classification" or crop)
        working = grid == "working" and predictor.task != "classification"
        pred = None if working else predictor.predict_known_case(case.image, case.geometry, case.label)
        row: dict[str, Any] = {"case_id": case.case_id}
        if predictor.task == "classification":
            target = case_target(ref)
            row.update(predictor.classification_row(case.case_id, pred))
            row.pop("case")
            row.update({"target": target, "correct": float(int(pred.label) == target)})
            rows.append(row)
            continue
        if working:  # one prediction: scored on the working grid, mapped back for the saved mask
            work = predictor.pre.apply(case.image, case.geometry, case.label)
            probs, wgeom, _ = predictor.probabilities(case.image, case.geometry, grid="working", prepared=work)
            wlabel = predictor.prediction(probs, wgeom, {}).label
            row.update(case_metrics(wlabel, work.label, wgeom.array_spacing, metrics, multi, suffixes))
            if pred_dir is not None:
                orig, ogeom = invert(probs, work.record, kind="prob")
                pred = predictor.prediction(orig, ogeom, {})
        else:
            assert pred is not None
            row.update(case_metrics(pred.label, case.label, case.geometry.array_spacing, metrics, multi, suffixes))
        rows.append(row)
        if pred_dir is not None and pred is not None:
            safe_write(
                ref.image_paths[0], mask_path_for(ref.image_paths[0], pred_dir), pred.label, pred.geometry, True,
                binary=ls.binary, overwrite=True,  # the fold's own predictions (a rerun of an unfinished fold)
            )  # fmt: skip
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


def _check_balance(cfg: ExperimentConfig, cases: Sequence[CaseRef], task: str, world_size: int) -> list[tuple] | None:
    """The cases' ``train.balance`` strata (None without it); raises ConfigError for a balance these cases or this
    launch cannot have. ``run_cv`` calls it over the whole dataset before writing anything."""
    if cfg.train.balance is None:
        return None
    if world_size > 1:
        raise ConfigError("train.balance is not supported under torchrun (each process draws its own shard)")
    targets = [case_target(c) for c in cases] if task == "classification" else None
    for c, t in zip(cases, targets or (), strict=False):
        if t is None:  # named here, before a balance message that would blame the setting
            raise DataError(c.image_paths[0], "case has no class (a classification dataset needs one)", c.case_id)
    try:
        return balance_strata([c.case_id for c in cases], targets, cfg.train.balance)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _balanced_sampler(cfg: ExperimentConfig, train_cases: Sequence[CaseRef], train_ds: Any, task: str, world_size: int):
    """The ``train.balance`` sampler (:mod:`agseg.training.sampling`), or None for a plain shuffle."""
    if cfg.train.balance is None:
        return None
    _check_balance(cfg, train_cases, task, world_size)
    targets = list(train_ds.targets) if task == "classification" else None
    strata = balance_strata([c.case_id for c in train_cases], targets, cfg.train.balance)
    counts = Counter(strata)
    log.info("balanced sampling over %d strata: %s", len(counts),
             ", ".join(f"{'/'.join(map(str, k))} {n}" for k, n in sorted(counts.items())))  # fmt: skip
    return BalancedSampler(balanced_weights(strata), seed=cfg.seed)


def run_cv(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    folds: Sequence[int] | None = None,
    repeats: Sequence[int] | None = None,
    splits: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    init_from: str | Path | None = None,
) -> CVResult:
    """k-fold (x repeats) cross-validation of ``cfg``: per fold train, predict the test fold, per-case metrics.

    ``init_from`` starts every fold from other weights where they fit (as :func:`train_model`). Another CV folder
    maps fold to fold (seed 003's AG-Sononet from a trained Sononet, measured by CV): each fold starts from the same
    fold's model there, and is refused when that model trained or chose its epoch on any of this fold's test cases
    or their patients (other splits). A run folder or weights file starts every fold from the same weights, refused
    likewise where its run's ``split.json`` shows such a case (one fold of another CV); weights with no record (a
    shipped model, a file from elsewhere) cannot be checked. The models a source was itself started from are checked
    too (:mod:`agseg.experiments.init_from`). A CV keeps its source (``CV/init_from.json``) across resumes.

    Splits are seeded and grouped by patient, saved as ``splits.json`` and reused: pass the same ``splits`` file to
    every model of a comparison so the statistics are paired. Finished folds (``metrics.csv`` present) are not
    rerun, an interrupted fold resumes from its last checkpoint, and ``folds``/``repeats`` select a subset so
    folds can run on different machines; the summary covers every finished fold.
    """
    t0 = time.perf_counter()
    cfg = _validated(cfg)
    out = Path(out_dir)
    resolve_device(cfg.train.device)  # a device that is not here fails before anything is written
    # a CV folder resumes, with the same settings only; an --overwrite removes the old one once every check passed
    check_run_dir(out, cfg, resume=True, overwrite=overwrite, remove=False)
    index = load_index(cfg)
    cache = _cache(cfg, out)  # beside the CV folder, shared by its folds
    check_data(cfg, list(index), cache)
    label_set, counts = experiment_label_set(cfg, list(index), cache, index)
    rank = world()[0]
    by_id = {c.case_id: c for c in index}
    ids = list(by_id)
    groups = [c.patient_id or c.case_id for c in index]
    split_path = Path(splits or cfg.cv.splits or out / "splits.json")
    split_args = {"n_folds": cfg.cv.folds, "n_repeats": cfg.cv.repeats, "seed": cfg.seed,
                  "val_fraction": cfg.cv.val_fraction, "strata": _strata(cfg, index)}  # fmt: skip
    # the plan in memory first: the fold selection and --init-from are checked before anything is written to --out
    replaced = overwrite and split_path.resolve().is_relative_to(out.resolve())  # goes with the old CV
    if split_path.exists() and not replaced:
        plan = load_or_create_splits(split_path, ids, groups, **split_args)
    else:
        plan = make_splits(ids, groups, split_args["n_folds"], split_args["n_repeats"], split_args["seed"],
                           split_args["val_fraction"], split_args["strata"])  # fmt: skip
    selected = [
        f for f in plan.folds if (folds is None or f.fold in folds) and (repeats is None or f.repeat in repeats)
    ]
    if not selected:
        raise ValueError(
            f"no fold selected: folds {folds}, repeats {repeats} of a {plan.n_repeats}x{plan.n_folds} plan"
        )
    sources = cv_init_sources(init_from, selected, out, plan, fresh=overwrite)
    record = check_init_record(out, init_from, sources, plan, selected, fresh=overwrite)
    _check_balance(cfg, list(index), cfg.task, world()[1])
    if overwrite:
        refuse_inside(out, list(sources.values()), init_from)  # --overwrite would delete them before fold 0
        check_run_dir(out, cfg, resume=True, overwrite=True)  # every check passed: the old CV goes now
    barrier()  # torchrun: every process has checked the folder before rank 0 writes into it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _write_json(out / "env.json", environment())
        _write_json(out / "labels.json", _labels_record(label_set, counts))
        if not split_path.exists() or replaced:
            plan.to_json(split_path)
            log.info("created %s: %d repeat(s) x %d folds over %d cases", split_path, plan.n_repeats, plan.n_folds,
                     len(ids))  # fmt: skip
        if split_path.resolve() != (out / "splits.json").resolve():
            plan.to_json(out / "splits.json")
        if record is not None:
            _write_json(out / INIT_RECORD, record)
        else:
            (out / INIT_RECORD).unlink(missing_ok=True)  # a stale record of a source no fold started from
    barrier()
    if rank != 0:  # the splits rank 0 wrote
        plan = load_or_create_splits(out / "splits.json", ids, groups, **split_args)
        selected = [
            f for f in plan.folds if (folds is None or f.fold in folds) and (repeats is None or f.repeat in repeats)
        ]
    for i, fold in enumerate(selected, 1):
        fdir = out / fold_name(fold.repeat, fold.fold)
        if (fdir / "metrics.csv").is_file():
            log.info("fold %s already done: skipped", fdir.name)
            continue
        log.info("[%d/%d] %s: train %d, val %d, test %d", i, len(selected), fdir.name, len(fold.train), len(fold.val),
                 len(fold.test))  # fmt: skip
        run = train_model(
            cfg, fdir, [by_id[c] for c in fold.train], [by_id[c] for c in fold.val], resume=True,
            label_set=label_set, index=index, extra_allowed=(), cache=cache, init_from=sources.get(fdir.name),
        )  # fmt: skip
        if rank != 0:  # torchrun: rank 0 tests the fold and writes its tables
            barrier()
            continue
        predictor = Predictor(run.model, run.bundle, device=cfg.train.device, amp=cfg.train.amp)
        pred_dir = fdir / "predictions" if cfg.eval.save_predictions else None
        test = [by_id[c] for c in fold.test]
        rows = evaluate_cases(predictor, test, cfg.eval.metrics, pred_dir, progress, grid=cfg.eval.grid)
        ident = {"repeat": fold.repeat, "fold": fold.fold}
        levels = pruning_levels_of(run.model)
        for level in levels[:-1]:  # ANU-Net: every pruning level scored from the same trained net (seed 002)
            pruned = Predictor(run.model, run.bundle, device=cfg.train.device, amp=cfg.train.amp, prune=level)
            lrows = evaluate_cases(pruned, test, cfg.eval.metrics, None, progress, grid=cfg.eval.grid)
            write_csv([{"model": f"{cfg.name}_L{level}", **ident, **r} for r in lrows], fdir / f"metrics_L{level}.csv")
        write_csv([{"model": cfg.name, **ident, **r} for r in rows], fdir / "metrics.csv")  # last: marks the fold done
        barrier()
    if rank != 0:
        return CVResult(out, plan, [], {}, 0, len(plan.folds), 0)
    result = gather_cv(out, cfg, plan, t0)
    _gather_levels(out, cfg, plan)
    if (
        result.folds_done == result.folds_total
        and cfg.eval.postprocess
        and cfg.eval.save_predictions
        and cfg.task == "segmentation"
    ):
        from agseg.experiments.postprocessing import cv_postprocessing

        cv_postprocessing(out, progress=progress)
    return result


def gather_cv(out: Path, cfg: ExperimentConfig, plan: SplitPlan, t0: float | None = None) -> CVResult:
    """Merge the finished folds' ``metrics.csv`` into ``out/metrics.csv`` and ``out/summary.json``."""
    from agseg.metrics import read_csv

    rows: list[dict[str, Any]] = []
    done = 0
    columns: dict[str, list[str]] = {}
    for fold in plan.folds:
        f = out / fold_name(fold.repeat, fold.fold) / "metrics.csv"
        if f.is_file():
            from agseg.metrics.table import read_csv_table

            header = [c for c in read_csv_table(f)[0] if c not in ID_COLUMNS]
            if columns and header != next(iter(columns.values())):
                first, cols = next(iter(columns.items()))
                raise DataError(
                    f,
                    f"has the metric columns {header}, but {first} has {cols}: the folds were evaluated differently "
                    "(another agseg version or config?); re-score them with `agseg evaluate --run`, or rerun the fold "
                    "after deleting its metrics.csv",
                )
            columns[str(f)] = header
            for r in read_csv(f, text_columns=("model", "case_id", "predicted_class")):
                rows.append({**r, "repeat": int(r["repeat"]), "fold": int(r["fold"])})
            done += 1
    metric_cols = [k for k in (rows[0] if rows else {}) if k not in ID_COLUMNS]
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
    extra = {"classification": _classification_block(out, rows)} if cfg.task == "classification" and rows else {}
    write_summary_json(
        summary, out / "summary.json", name=cfg.name, model=cfg.model.name, folds_done=done,
        folds_total=len(plan.folds), n_folds=plan.n_folds, n_repeats=plan.n_repeats, per_fold=per_fold,
        seconds=seconds, grid=cfg.eval.grid, **extra,
    )  # fmt: skip
    if done < len(plan.folds):
        log.warning("%d of %d folds finished: the summary covers those only", done, len(plan.folds))
    return CVResult(out, plan, rows, {k: v.as_dict() for k, v in summary.items()}, done, len(plan.folds), seconds or 0)


def _classification_block(run_dir: Path, rows: Sequence[dict[str, Any]], label_set: LabelSet | None = None) -> dict:
    """Accuracy, precision/recall/F1 per class and macro, ROC AUC over a classifier's per-case rows: pooled over
    every case and per (repeat, fold) with their mean and std (:func:`agseg.metrics.classification_summary`)."""
    from agseg.metrics.classification import classification_summary

    if label_set is None:
        record = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
        label_set = LabelSet.from_mapping({int(k): v for k, v in record["labels"].items()}, record.get("source", ""))
    classes = list(label_set.values)
    return classification_summary(rows, classes, {v: label_set.column_suffix(v) for v in classes})


def _gather_levels(out: Path, cfg: ExperimentConfig, plan: SplitPlan) -> None:
    """For a pruned net's levels (``metrics_L{l}.csv`` in the folds): ``out/metrics_L{l}.csv`` and
    ``out/summary_L{l}.json``, one table per level, comparable with ``agseg compare`` like separate models."""
    from agseg.metrics import read_csv

    levels = sorted({int(p.stem.split("_L")[1]) for p in out.glob("repeat*_fold*/metrics_L*.csv")})
    for level in levels:
        rows = []
        for fold in plan.folds:
            f = out / fold_name(fold.repeat, fold.fold) / f"metrics_L{level}.csv"
            if f.is_file():
                for r in read_csv(f, text_columns=("model", "case_id")):
                    rows.append({**r, "repeat": int(r["repeat"]), "fold": int(r["fold"])})
        if rows:
            write_csv(rows, out / f"metrics_L{level}.csv")
            cols = [k for k in rows[0] if k not in ID_COLUMNS]
            write_summary_json(summarize(rows, cols), out / f"summary_L{level}.json", name=f"{cfg.name}_L{level}",
                               level=level, n_cases=len(rows))  # fmt: skip


def _strata(cfg: ExperimentConfig, cases: Sequence[CaseRef]) -> list[int] | None:
    """Each case's class for stratified folds (classifiers); None for segmentation (grouped folds only)."""
    if cfg.task != "classification":
        return None
    return [int(case_target(c)) for c in cases]  # type: ignore[arg-type]  (load_index kept cases with a class)


def train_split(cfg: ExperimentConfig, index: DatasetIndex) -> tuple[list[CaseRef], list[CaseRef]]:
    """All cases for training with a seeded, patient-grouped validation part (``cfg.cv.val_fraction``)."""
    cases = list(index)
    if cfg.cv.val_fraction <= 0 or len(cases) < 2:
        return cases, []
    ids = [c.case_id for c in cases]
    groups = [c.patient_id or c.case_id for c in cases]
    n_val_groups = max(1, round(len(set(groups)) * cfg.cv.val_fraction))
    n_folds = max(2, min(len(set(groups)), round(len(set(groups)) / n_val_groups)))
    strata = _strata(cfg, cases)
    fold = make_splits(ids, groups, n_folds=n_folds, seed=cfg.seed, val_fraction=0.0, strata=strata).folds[0]
    val = set(fold.test)
    return [c for c in cases if c.case_id not in val], [c for c in cases if c.case_id in val]
