"""Typed experiment configuration: frozen dataclasses loaded from and saved to YAML, validated before any work.

An experiment config has these sections::

    name: cxr_attention_multi        # label of the run (used by `agseg compare`)
    seed: 0
    data:  {path: ../shared/data/cxr_lungs, layout: auto, labels: {0: background, 1: lung},
            options: {...}, preprocess: {...}, augment: {...}}
    model: {name: attention_unet, channels: [16, 32, 64, 128, 256], gating: multi}   # other keys -> create_model
    train: {epochs: 30, batch_size: 4, optimizer: adam, lr: 0.001, loss: dice_ce, ...}
    cv:    {folds: 5, repeats: 1, val_fraction: 0.1}
    eval:  {metrics: [dice, hd, hd95, sensitivity, specificity], mirror_axes: [1]}

Every section is typed, including ``data.options`` (:class:`LayoutOptions`), ``data.preprocess``
(:class:`~agseg.data.preprocess.PreprocessConfig`), ``data.augment`` (:class:`~agseg.data.augment.AugmentConfig`)
and ``model`` (checked against the registered builder's signature, then built once on the meta device so that a
bad value fails here). Loading raises one :class:`ConfigError` for the first problem, naming the key and the valid
choices, before any file is read or written: an unknown key or section, a value of the wrong type (``epochs: ten``),
an unknown model, loss, optimizer, schedule, metric, device or amp mode. The resolved config is written into every
run directory (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from agseg.data.augment import AugmentConfig
from agseg.data.preprocess import PreprocessConfig
from agseg.fileio import atomic_write_text
from agseg.metrics import DEFAULT_METRICS

__all__ = [
    "CVConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LayoutOptions",
    "ModelConfig",
    "TrainConfig",
    "check_model_kwargs",
    "from_dict",
    "load_config",
    "parse_labels",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message says where and what is valid."""


# ----------------------------------------------------------------------------------------------- typed coercion
_NONE = type(None)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is _NONE:
        return "null"
    if origin in (list, tuple, Sequence, Iterable, typing.get_origin(Sequence[int])):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``; ``where`` names the key in errors.

    Understands ``int``, ``float`` (numeric strings such as ``"1e-3"`` too, which YAML reads as strings), ``bool``,
    ``str``, ``X | None``, unions, ``list[X]``/``tuple[X, ...]``/``Sequence[X]`` (a scalar becomes a one-element
    sequence), ``dict[K, V]``/``Mapping[K, V]`` and ``Any``.

    Raises:
        ConfigError: the value does not fit, e.g. ``'train.epochs' must be an integer, got 'ten'``.
    """
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if _NONE in args:
                return None
            raise ConfigError(f"'{where}' must be {_type_name(tp)}, got null")
        exact = [a for a in args if a is not _NONE and isinstance(a, type) and type(value) is a]
        for a in exact + [a for a in args if a is not _NONE and a not in exact]:
            try:
                return coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"'{where}' must be {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise ConfigError(f"'{where}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{where}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{where}' must be a string, got {value!r}")
    if (
        origin in (list, tuple)
        or origin in (Sequence, Iterable)
        or str(origin)
        in (
            "<class 'collections.abc.Sequence'>",
            "<class 'collections.abc.Iterable'>",
        )
    ):
        item = args[0] if args else Any
        if isinstance(value, Mapping) or (isinstance(value, str) and item is not str):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        seq = list(value) if isinstance(value, list | tuple) else [value]
        out = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(seq)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or str(origin) == "<class 'collections.abc.Mapping'>":
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{where} key"): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    return value


def _hints(cls: Any) -> dict[str, Any]:
    target = cls.__init__ if inspect.isclass(cls) and not dataclasses.is_dataclass(cls) else cls
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be resolved: no type checks for that builder
        return {}


def _section(cls: type, where: str, values: Any) -> Any:
    """A frozen dataclass ``cls`` from a mapping: unknown keys and wrong types raise :class:`ConfigError`."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"section '{where}' must be a mapping, got {values!r}")
    valid = {f.name for f in fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(str(k) for k in set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{where}'; valid keys: {', '.join(sorted(valid))}")
    hints = _hints(cls)
    kwargs = {k: coerce(v, hints.get(k, Any), f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"'{where}': {err}") from None


def _choice(where: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"'{where}' is {value!r}; valid: {', '.join(valid)}")


# ------------------------------------------------------------------------------------------------------ labels
def parse_labels(spec: Any, where: str = "data.labels") -> dict[int, str] | None:
    """A label set ``{value: name}`` (sorted, 0 included as ``background`` when not named) from ``{value: name}``,
    ``{name: value}`` or a list of values (:func:`agseg.data.labels.parse_labels`).

    Raises:
        ConfigError: anything else, or no foreground value.
    """
    from agseg.data.labels import parse_labels as parse

    try:
        out = parse(spec)
    except ValueError as err:
        raise ConfigError(f"'{where}': {err}") from None
    if out is None:
        return None
    out.setdefault(0, "background")
    if len(out) < 2:
        raise ConfigError(f"'{where}' needs at least one foreground label besides 0")
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------------- the sections
@dataclass(frozen=True)
class LayoutOptions:
    """Options of the dataset layouts (``agseg data inspect`` shows what a dataset needs); only the keys a config
    sets are passed on, the layout's own defaults apply to the rest.

    Attributes:
        images: image folder (``folders``), or glob pattern of the scans (``luna16``).
        masks: mask folder(s); several are merged (Montgomery ``ManualMask/leftMask`` + ``rightMask``).
        mask_threshold: ``"auto"``, a number (``mask > threshold`` -> 1) or null (values are labels).
        label_map: ``{raw value: label}`` applied to the masks (LUNA16: ``{3: 1, 4: 1, 5: 0}``).
        labels: allowed label values after mapping, a list or ``{value: name}`` (``data.labels`` sets them when
            left out).
        merge: several mask files: ``"union"`` or ``"index"`` (file k -> label k + 1).
        patient_pattern: regex whose first group is the patient id (patient-grouped folds).
        class_pattern: regex on the case id whose first group (a number or a class name of ``data.labels``) is the
            image-level class of a case without one (classifiers; ``cxr_lungs``: ``'_(\\d)$'``).
        drop_alpha: drop the alpha channel of RGBA images.
        geometry_tol: tolerance of the image/mask geometry check.
        file, root: the case list file and the folder its paths are relative to (``list``).
        channels, mask, exclude: file patterns of the channel files, the mask and ignored files (``case_folders``).
    """

    images: str | None = None
    masks: str | list[str] | None = None
    mask_threshold: float | str | None = None
    label_map: dict[int, int] | None = None
    labels: Any = None
    merge: str | None = None
    patient_pattern: str | None = None
    class_pattern: str | None = None
    drop_alpha: bool | None = None
    geometry_tol: float | None = None
    file: str | None = None
    root: str | None = None
    channels: list[str] | None = None
    mask: str | None = None
    exclude: list[str] | None = None
    #: the keys the config set (null included: ``mask_threshold: null`` is a choice)
    given: tuple[str, ...] = field(default=(), compare=False, repr=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        if isinstance(self.mask_threshold, str) and self.mask_threshold != "auto":
            raise ValueError(f"mask_threshold must be 'auto', a number or null, got {self.mask_threshold!r}")
        if self.merge is not None and self.merge not in ("union", "index"):
            raise ValueError(f"merge must be 'union' or 'index', got {self.merge!r}")
        if self.labels is not None:
            from agseg.data.labels import parse_labels as parse

            parse(self.labels)  # a ValueError names the problem
        for name in ("patient_pattern", "class_pattern"):
            if getattr(self, name) is not None:
                try:
                    re.compile(getattr(self, name))
                except re.error as err:
                    raise ValueError(f"{name} is not a valid regular expression: {err}") from None

    @classmethod
    def from_mapping(cls, values: Any, where: str = "data.options") -> LayoutOptions:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"section '{where}' must be a mapping, got {values!r}")
        opts = _section(cls, where, values)
        return dataclasses.replace(opts, given=tuple(k for k in values))

    def to_kwargs(self) -> dict[str, Any]:
        """The options the config set, as keyword arguments of :func:`agseg.data.load_dataset`."""
        return {k: getattr(self, k) for k in self.given}

    def keys(self) -> list[str]:
        return list(self.given)

    def __bool__(self) -> bool:
        return bool(self.given)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is prepared.

    Attributes:
        path: dataset folder or descriptor file (YAML/CSV/JSON), relative paths resolved against the config file
            (:func:`load_config`) or, for a dict (:func:`from_dict`), the working directory.
        layout: dataset layout name, or ``"auto"`` to detect it (see ``agseg data inspect``).
        labels: the label set ``{value: name}`` (or a list of values); null: from the dataset (``dataset.json``, a
            descriptor), else counted over all cases once. Every case is checked against it.
        options: layout options (:class:`LayoutOptions`).
        preprocess: preprocessing (:class:`~agseg.data.preprocess.PreprocessConfig`), recorded in the run so that
            prediction can undo it.
        augment: augmentation (:class:`~agseg.data.augment.AugmentConfig`); empty or null for none.
        cache_dir: on-disk cache of preprocessed arrays; null for ``<run>/../.agseg_cache``.
        num_workers: DataLoader workers.
        limit: use only the first N cases (quick experiments); null for all.
    """

    path: str = ""
    layout: str = "auto"
    labels: dict[int, str] | None = None
    options: LayoutOptions = field(default_factory=LayoutOptions)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig | None = None
    cache_dir: str | None = None
    num_workers: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for all cases), got {self.limit}")

    def layout_kwargs(self) -> dict[str, Any]:
        """Layout options for :func:`agseg.data.load_dataset`: the config's, plus ``labels`` (the allowed values)
        from :attr:`labels` when the options do not set them."""
        kw = self.options.to_kwargs()
        if self.labels is not None and "labels" not in kw:
            kw["labels"] = dict(self.labels)
        return kw


@dataclass(frozen=True)
class ModelConfig:
    """A registered model and its arguments (everything but ``name`` goes to ``create_model``).

    ``spatial_dims``, ``in_channels`` and ``out_channels`` are filled from the data when left out.
    """

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "poly")
SELECTIONS = ("best", "last")


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained on one split.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: cases per step.
        grad_accum: micro-batches averaged per optimiser step (seed 001's gradient averaging).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: initial learning rate; momentum, nesterov, weight_decay as in ``torch.optim``.
        schedule: ``"constant"``, ``"cosine"``, ``"step"`` (``step_size`` epochs, factor ``gamma``) or ``"poly"``.
        warmup_epochs: warm-up epochs before the schedule.
        warmup_mode: ``"linear"`` (the lr ramps up to ``lr``) or ``"constant"`` (``warmup_factor * lr`` throughout the
            warm-up, then the schedule from ``lr``: seed 003's warm start, 0.01 for 5 epochs before 0.1).
        warmup_factor: the constant warm-up's fraction of ``lr``.
        loss: loss name (``agseg.losses.create_loss``) and ``loss_kwargs``; ``"auto"``: the task's default
            (``dice_ce`` for segmentation, ``ce`` for classification).
        ds_weights: deep-supervision weights per output (finest first); null for the loss's default.
        amp: ``"auto"`` (bf16 autocast where it helps: CPUs with AMX/AVX-512 bf16, CUDA; fp16 with loss scaling on
            CUDA devices without bf16), ``"bf16"``, ``"fp16"`` or ``"off"``.
        channels_last: channels-last memory format (faster convolutions with bf16 on CPU).
        deterministic: ``torch.use_deterministic_algorithms`` and single-threaded loading order.
        select: checkpoint used after training: ``"best"`` (lowest validation loss) or ``"last"``.
        val_every: validate every N epochs.
        max_steps_per_epoch: cap steps per epoch (quick experiments); null for no cap.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: torch intra-op threads; null leaves torch's default.
        attention_every: every N epochs, save the gates' attention maps on the first validation case
            (``attention/epoch_NNN.npz``) and, at the end, figures of their evolution (seed 001 Fig. 3); 0: off.
        early_stop_patience: stop when the validation loss has not improved for this many validated epochs; 0: off.
        early_stop_min_delta: the improvement that counts.
        balance: draw the training cases so that every stratum gets the same share of each epoch
            (:mod:`agseg.training.sampling`): ``"class"`` (classifiers), a regex whose first group names a case's
            group in its id (with classes: per group and class), or null (a plain shuffle).
        sync_batchnorm: under ``torchrun``, batch norm over the batches of all processes (``SyncBatchNorm``);
            otherwise each process normalises its own batch and rank 0's statistics are kept.
    """

    epochs: int = 50
    batch_size: int = 4
    grad_accum: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 30
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_mode: str = "linear"
    warmup_factor: float = 0.1
    loss: str = "auto"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    ds_weights: list[float] | None = None
    amp: str = "auto"
    channels_last: bool = True
    deterministic: bool = False
    select: str = "best"
    val_every: int = 1
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    threads: int | None = None
    attention_every: int = 0
    early_stop_patience: int = 0
    early_stop_min_delta: float = 0.0
    sync_batchnorm: bool = False
    balance: str | None = None

    def __post_init__(self) -> None:
        if self.balance is not None and self.balance != "class":
            try:
                groups = re.compile(self.balance).groups
            except re.error as err:
                raise ValueError(f"balance must be 'class' or a regex with a group: {self.balance!r}: {err}") from None
            if groups < 1:
                raise ValueError(f"balance {self.balance!r} has no group: write e.g. '^([A-Z]+)_' to name the part")
        for name in ("epochs", "batch_size", "grad_accum", "val_every", "step_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "attention_every", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_mode not in ("linear", "constant"):
            raise ValueError(f"warmup_mode must be 'linear' or 'constant', got {self.warmup_mode!r}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.warmup_factor}")
        if not (self.lr > 0 and self.lr < 1e3):
            raise ValueError(f"lr must be a positive learning rate below 1000, got {self.lr}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1 or null, got {self.max_steps_per_epoch}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")


@dataclass(frozen=True)
class CVConfig:
    """Cross-validation: ``folds`` x ``repeats``, grouped by patient, validation carved from training folds."""

    folds: int = 5
    repeats: int = 1
    val_fraction: float = 0.1
    splits: str | None = None

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class EvalConfig:
    """Per-case metrics computed on the test cases, in the original image grid and spacing (or the working grid).

    Attributes:
        metrics: metric names (``agseg.metrics.list_metrics()``).
        class_names: the older way to name classes (``{1: anterior}``); prefer ``data.labels``. When given, the
            names go into the label set.
        save_predictions: write each fold's test predictions (``predictions/``): needed to choose post-processing
            and by ``agseg evaluate --run``.
        mirror_axes: test-time augmentation by mirroring these spatial axes (array order; every subset, the
            probabilities averaged) when the CV predicts its test cases; stored in the model bundle as the default
            of ``agseg predict``. Empty: none.
        postprocess: after a finished CV, choose per class whether keeping the largest connected component(s)
            improves the CV's Dice (``postprocessing.json``); ``agseg predict --run CV`` applies the decision.
        grid: where the test cases are scored: ``"original"`` (default: the prediction mapped back to the image's
            own grid, against the original mask, with its spacing) or ``"working"`` (the prediction on the
            preprocessed grid against the mask preprocessed the same way, with that grid's spacing: how the thesis
            scores at 512x512 / 128^3, so that its Hausdorff figures can be compared). Saved predictions are always
            on the original grid.
    """

    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    class_names: dict[int, str] | None = None
    save_predictions: bool = True
    mirror_axes: list[int] = field(default_factory=list)
    postprocess: bool = True
    grid: str = "original"

    def __post_init__(self) -> None:
        if self.grid not in ("original", "working"):
            raise ValueError(f"grid must be 'original' or 'working', got {self.grid!r}")
        if any(a < 0 or a > 2 for a in self.mirror_axes):
            raise ValueError(f"mirror_axes are spatial axes 0, 1 or 2, got {self.mirror_axes}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; see the module docstring for the YAML shape."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"``: the task of the registered model."""
        from agseg.nets.registry import get_model_spec

        return get_model_spec(self.model.name).task

    def to_dict(self) -> dict[str, Any]:
        data = self.data
        return {
            "name": self.name,
            "seed": self.seed,
            "data": {
                "path": data.path,
                "layout": data.layout,
                "labels": dict(data.labels) if data.labels is not None else None,
                "options": data.options.to_kwargs(),
                "preprocess": data.preprocess.to_dict(),
                "augment": data.augment.to_dict() if data.augment is not None else {},
                "cache_dir": data.cache_dir,
                "num_workers": data.num_workers,
                "limit": data.limit,
            },
            "model": self.model.to_dict(),
            "train": dataclasses.asdict(self.train),
            "cv": dataclasses.asdict(self.cv),
            "eval": dataclasses.asdict(self.eval),
        }

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with dotted-key changes, e.g. ``replace(**{"train.epochs": 2, "model.channels": [8, 16]})``."""
        return from_dict(_merge(self.to_dict(), _undot(changes)))


_TOP = ("name", "seed", "data", "model", "train", "cv", "eval")


def _train_section(raw: Any) -> TrainConfig:
    """``train``, where YAML's ``amp: off`` (read as false) means ``"off"``."""
    if isinstance(raw, Mapping) and isinstance(raw.get("amp"), bool):
        raw = {**raw, "amp": "auto" if raw["amp"] else "off"}
    return _section(TrainConfig, "train", raw)


def _data_section(raw: Any) -> DataConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"section 'data' must be a mapping, got {raw!r}")
    valid = {f.name for f in fields(DataConfig)}
    unknown = sorted(str(k) for k in set(raw) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in 'data'; valid keys: {', '.join(sorted(valid))}")
    rest = {k: v for k, v in raw.items() if k not in ("options", "preprocess", "augment", "labels")}
    base = _section(DataConfig, "data", rest)
    augment = raw.get("augment")
    return dataclasses.replace(
        base,
        labels=parse_labels(raw.get("labels")),
        options=LayoutOptions.from_mapping(raw.get("options")),
        preprocess=_section(PreprocessConfig, "data.preprocess", raw.get("preprocess")),
        augment=_section(AugmentConfig, "data.augment", augment) if augment else None,
    )


def check_model_kwargs(name: str, kwargs: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """Check ``kwargs`` against the registered builder of ``name``: known keys, right types, and a trial build on
    the meta device (no memory, no weights) so that a bad value (``gating: tripple``) fails with the builder's own
    message. Returns the kwargs with types converted.

    Raises:
        ConfigError: unknown model, unknown argument, wrong type or a value the builder rejects.
    """
    import torch

    from agseg.nets.registry import get_model_spec, list_models

    if name not in list_models():
        raise ConfigError(f"'{where}.name': unknown model {name!r}; registered models: {', '.join(list_models())}")
    spec = get_model_spec(name)
    try:
        params = inspect.signature(spec.builder).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not open_kwargs:
        raise ConfigError(
            f"unknown key(s) {unknown} in '{where}' for model {name!r}; valid keys: name, {', '.join(sorted(valid))}"
        )
    hints = _hints(spec.builder)
    out = {k: coerce(v, hints.get(k, Any), f"{where}.{k}") for k, v in kwargs.items()}
    trial = {**spec.defaults, **out}
    per_axis = [e for e in trial.get("pool_sizes") or () if isinstance(e, list | tuple)]
    trial.setdefault("spatial_dims", len(per_axis[0]) if per_axis else 2)  # the data decides; guess for the trial
    trial.setdefault("in_channels", 1)
    trial.setdefault("out_channels", 2)
    trial = {k: v for k, v in trial.items() if k in valid or open_kwargs}
    try:
        with torch.device("meta"):
            spec.builder(**trial)
    except (ValueError, TypeError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(f"'{where}' ({name}): {msg}") from None
    return out


def _check_train(cfg: TrainConfig, task: str) -> None:
    from agseg.losses.registry import create_loss, list_losses
    from agseg.runtime import AMP_MODES, device_choices

    _choice("train.optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("train.schedule", cfg.schedule, SCHEDULES)
    _choice("train.select", cfg.select, SELECTIONS)
    _choice("train.amp", cfg.amp, AMP_MODES)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"'train.device' is {cfg.device!r}; valid: {device_choices()}")
    if cfg.loss != "auto":
        if cfg.loss not in list_losses():
            raise ConfigError(f"'train.loss' is {cfg.loss!r}; valid losses: auto, {', '.join(list_losses())}")
        try:
            create_loss(cfg.loss, **cfg.loss_kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"'train.loss_kwargs' for {cfg.loss}: {err}") from None
    elif cfg.loss_kwargs:
        from agseg.tasks import get_task

        try:
            create_loss(get_task(task).default_loss, **cfg.loss_kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"'train.loss_kwargs': {err}") from None


def _check_eval(cfg: EvalConfig, task: str) -> None:
    from agseg.metrics import list_metrics

    if task == "segmentation":
        bad = [m for m in cfg.metrics if m not in list_metrics()]
        if bad:
            raise ConfigError(f"'eval.metrics': unknown metric(s) {bad}; valid metrics: {', '.join(list_metrics())}")


def _check_layout(data: DataConfig) -> None:
    from agseg.data.layouts import get_layout, list_layouts

    if data.layout != "auto":
        if data.layout not in list_layouts():
            raise ConfigError(f"'data.layout' is {data.layout!r}; valid: auto, {', '.join(list_layouts())}")
        allowed = get_layout(data.layout).options
        bad = sorted(set(data.options.keys()) - set(allowed))
        if bad:
            raise ConfigError(
                f"unknown key(s) {bad} in 'data.options' for layout {data.layout!r}; valid keys: "
                f"{', '.join(sorted(allowed))}"
            )


def from_dict(raw: Any) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping (as read from YAML).

    Raises:
        ConfigError: the first problem found (see the module docstring).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of sections ({', '.join(_TOP)}), got {type(raw).__name__}")
    unknown = sorted(str(k) for k in set(raw) - set(_TOP))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid: {', '.join(sorted(_TOP))}")
    name = coerce(raw.get("name", "experiment"), str, "name")
    seed = coerce(raw.get("seed", 0), int, "seed")
    model = raw.get("model")
    if model is None:
        model = {}
    if not isinstance(model, Mapping):
        raise ConfigError(f"section 'model' must be a mapping with a 'name' (e.g. {{name: unet}}), got {model!r}")
    model = dict(model)
    if "kwargs" in model:  # accept the nested form too
        nested = model.pop("kwargs") or {}
        if not isinstance(nested, Mapping):
            raise ConfigError(f"'model.kwargs' must be a mapping, got {nested!r}")
        model.update(nested)
    model_name = coerce(model.pop("name", "unet"), str, "model.name")
    model_kwargs = check_model_kwargs(model_name, model)
    from agseg.nets.registry import get_model_spec

    task = get_model_spec(model_name).task
    data = _absolute_paths(_data_section(raw.get("data")))
    _check_layout(data)
    train = _train_section(raw.get("train"))
    _check_train(train, task)
    cv = _section(CVConfig, "cv", raw.get("cv"))
    ev = _section(EvalConfig, "eval", raw.get("eval"))
    _check_eval(ev, task)
    if ev.class_names:
        labels = dict(data.labels or {0: "background"})
        for value, cname in ev.class_names.items():
            labels[int(value)] = str(cname)
        data = dataclasses.replace(data, labels=dict(sorted(labels.items())))
    return ExperimentConfig(name, seed, data, ModelConfig(model_name, model_kwargs), train, cv, ev)


def _absolute_paths(data: DataConfig) -> DataConfig:
    """``data.path`` and ``data.cache_dir`` made absolute (a relative one is taken from the working directory).

    A run saves its config in its own folder and reads it back from there (resume, evaluate --run, post-processing),
    where :func:`load_config` would resolve a relative path against that folder instead: ``demo_out/data`` became
    ``demo_out/unet/demo_out/data``. An absolute path means the same thing wherever the config is read.
    """
    changes = {k: str(Path(os.path.expanduser(v)).resolve()) for k in ("path", "cache_dir")
               if isinstance(v := getattr(data, k), str) and v and not os.path.isabs(v)}  # fmt: skip
    return dataclasses.replace(data, **changes) if changes else data


def load_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML config; ``overrides`` are dotted keys (``{"train.epochs": 2}``). Relative
    ``data.path`` and ``data.cache_dir`` in the file are resolved against the file's folder, in ``overrides`` (what
    ``--set`` types) against the working directory.

    Raises:
        ConfigError: missing file, bad YAML, or any problem :func:`from_dict` finds (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: a config must be a mapping of sections ({', '.join(_TOP)}), got "
                          f"{type(raw).__name__}")  # fmt: skip
    raw = dict(raw)
    data = raw.get("data")
    if isinstance(data, Mapping):  # the file's own paths: from the file's folder
        data = dict(data)
        for key in ("path", "cache_dir"):
            if isinstance(data.get(key), str) and data[key] and not os.path.isabs(data[key]):
                data[key] = str((path.parent / data[key]).resolve())
        raw["data"] = data
    if overrides:  # typed on the command line: from the working directory (from_dict makes them absolute)
        for key in overrides:
            if key.split(".")[0] not in _TOP:
                raise ConfigError(f"--set {key}: unknown section {key.split('.')[0]!r}; valid: {', '.join(_TOP)}")
        raw = _merge(raw, _undot(overrides))
    try:
        return from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML atomically (temporary file, then rename)."""
    return atomic_write_text(path, yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _undot(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
