"""Typed experiment configuration: frozen dataclasses loaded from and saved to YAML.

An experiment config has five sections::

    name: cxr_attention_multi        # label of the run (used by `agseg compare`)
    seed: 0
    data:  {path: ../shared/data/cxr_lungs, layout: auto, options: {}, preprocess: {...}, augment: {...}}
    model: {name: attention_unet, channels: [16, 32, 64, 128, 256], gating: multi}   # other keys -> create_model
    train: {epochs: 30, batch_size: 4, optimizer: adam, lr: 0.001, loss: dice_ce, ...}
    cv:    {folds: 5, repeats: 1, val_fraction: 0.1}
    eval:  {metrics: [dice, hausdorff, hd95, sensitivity, specificity]}

Unknown keys raise a :class:`ConfigError` that names the section and lists the valid keys. The resolved config
is written into every run directory (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agseg.fileio import atomic_write_text

__all__ = [
    "CVConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message says where and what is valid."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is prepared.

    Attributes:
        path: dataset folder or descriptor file (YAML/CSV/JSON), relative paths resolved against the config file.
        layout: dataset layout name, or ``"auto"`` to detect it (see ``agseg data inspect``).
        options: layout options (e.g. ``mask_threshold``, ``label_map``), passed to the dataset loader.
        preprocess: preprocessing settings (``agseg.data.preprocess``), recorded in the run so prediction can
            undo them.
        augment: augmentation settings (``agseg.data.augment``); empty for none.
        cache_dir: on-disk cache of preprocessed arrays; ``None`` for ``<run>/../.agseg_cache``.
        num_workers: DataLoader workers.
        limit: use only the first N cases (quick experiments); ``None`` for all.
    """

    path: str = ""
    layout: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    num_workers: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    """A registered model and its arguments (everything but ``name`` goes to ``create_model``).

    ``spatial_dims``, ``in_channels`` and ``out_channels`` are filled from the data when left out.
    """

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained on one split.

    Attributes:
        epochs: passes over the training set.
        batch_size: cases per step.
        grad_accum: micro-batches averaged per optimiser step (seed 001's gradient averaging).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: initial learning rate; momentum, nesterov, weight_decay as in ``torch.optim``.
        schedule: ``"constant"``, ``"cosine"``, ``"step"`` (``step_size`` epochs, factor ``gamma``) or ``"poly"``.
        warmup_epochs: linear warm-up epochs before the schedule.
        loss: loss name (``agseg.losses.create_loss``) and ``loss_kwargs``.
        ds_weights: deep-supervision weights per output (finest first); ``None`` for the loss's default.
        amp: ``"auto"`` (bf16 autocast where it helps: CPUs with AMX/AVX-512 bf16, CUDA), ``"bf16"`` or ``"off"``.
        channels_last: channels-last memory format (faster convolutions with bf16 on CPU).
        deterministic: ``torch.use_deterministic_algorithms`` and single-threaded loading order.
        select: checkpoint used after training: ``"best"`` (lowest validation loss) or ``"last"``.
        val_every: validate every N epochs.
        max_steps_per_epoch: cap steps per epoch (quick experiments); ``None`` for no cap.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: torch intra-op threads; ``None`` leaves torch's default.
        attention_every: every N epochs, save the gates' attention maps on the first validation case
            (``attention/epoch_NNN.npz``) and, at the end, figures of their evolution (seed 001 Fig. 3); 0: off.
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
    loss: str = "dice_ce"
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


@dataclass(frozen=True)
class CVConfig:
    """Cross-validation: ``folds`` x ``repeats``, grouped by patient, validation carved from training folds."""

    folds: int = 5
    repeats: int = 1
    val_fraction: float = 0.1
    splits: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Per-case metrics computed on the test cases, in the original image grid and spacing."""

    metrics: list[str] = field(
        default_factory=lambda: ["dice", "iou", "precision", "sensitivity", "specificity", "hd", "hd95", "assd"]
    )
    class_names: dict[int, str] | None = None
    save_predictions: bool = True


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

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with dotted-key changes, e.g. ``replace(**{"train.epochs": 2, "model.channels": [8, 16]})``."""
        return from_dict(_merge(self.to_dict(), _undot(changes)))


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "cv": CVConfig,
    "eval": EvalConfig,
}


def _check_keys(section: str, given: Mapping[str, Any], cls: type) -> None:
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in '{section}'; valid keys: {', '.join(sorted(valid))}")


def _coerce(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    _check_keys(section, values, cls)
    kwargs = dict(values)
    for f in fields(cls):
        if f.name in kwargs and kwargs[f.name] is not None and f.type in ("float", float):
            try:
                kwargs[f.name] = float(kwargs[f.name])
            except (TypeError, ValueError):
                raise ConfigError(f"'{section}.{f.name}' must be a number, got {kwargs[f.name]!r}") from None
    return cls(**kwargs)


def from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a plain mapping (as read from YAML); validates every key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    top = {f.name for f in fields(ExperimentConfig)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid: {', '.join(sorted(top))}")
    kwargs: dict[str, Any] = {k: raw[k] for k in ("name", "seed") if k in raw}
    for section, cls in _SECTIONS.items():
        value = raw.get(section) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"section '{section}' must be a mapping, got {value!r}")
        kwargs[section] = _coerce(cls, section, value)
    model = dict(raw.get("model") or {})
    if "kwargs" in model:  # accept the nested form too
        model.update(model.pop("kwargs") or {})
    kwargs["model"] = ModelConfig(name=str(model.pop("name", "unet")), kwargs=model)
    if "seed" in kwargs:
        kwargs["seed"] = int(kwargs["seed"])
    return ExperimentConfig(**kwargs)


def load_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read a YAML config; ``overrides`` are dotted keys (``{"train.epochs": 2}``). Relative ``data.path`` is
    resolved against the config file's folder.

    Raises:
        ConfigError: missing file, bad YAML or unknown keys (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if overrides:
        raw = _merge(raw, _undot(overrides))
    data = raw.get("data") or {}
    if isinstance(data, dict) and data.get("path") and not os.path.isabs(str(data["path"])):
        data["path"] = str((path.parent / str(data["path"])).resolve())
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
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
