"""Small finished experiments for the report tests: two 2D CVs sharing splits (a U-Net and an Attention U-Net that
recorded its gates), a 3D CV, and a classifier's CV. Each takes a few seconds on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agseg.config import from_dict
from agseg.data.synthetic import write_dataset
from agseg.experiments.run import run_cv
from agseg.nets.base import ClassificationNet
from agseg.nets.registry import _REGISTRY, register_model


def _seg_cfg(name: str, data: Path, model: dict, **train) -> object:
    return from_dict({
        "name": name,
        "seed": 0,
        "data": {"path": str(data), "options": {"mask_threshold": 127},
                 "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {**model, "channels": [4, 8, 16]},
        "train": {"epochs": 10, "batch_size": 2, "lr": 0.03, "amp": "off", "select": "last", **train},
        "cv": {"folds": 2, "val_fraction": 0.2},
        "eval": {"metrics": ["dice", "hd95", "sensitivity"], "save_predictions": True},
    })  # fmt: skip


@pytest.fixture(scope="session")
def seg_cvs(tmp_path_factory) -> dict[str, Path]:
    """``{"unet": CV, "attention": CV}``: 2D phantoms (10 cases, 64x64 PNG), 2 folds, one splits.json."""
    root = tmp_path_factory.mktemp("seg2d")
    write_dataset(root / "data", "cxr", n=10, size=64, seed=0)
    splits = root / "splits.json"
    out = {}
    for key, model, extra in (
        ("unet", {"name": "unet"}, {}),
        ("attention", {"name": "attention_unet", "gating": "multi"}, {"attention_every": 1}),
    ):
        out[key] = run_cv(
            _seg_cfg(key, root / "data", model, **extra), root / key, splits=splits, progress=False
        ).out_dir
    return out


@pytest.fixture(scope="session")
def seg_cv_3d(tmp_path_factory) -> Path:
    """A 3D CV (NIfTI volumes 12x16x16, spacing 1x1x2 mm), 2 folds, 1 epoch, predictions saved."""
    root = tmp_path_factory.mktemp("seg3d")
    write_dataset(root / "data", "volumes", n=4, size=(12, 16, 16), spacing=(1.0, 1.0, 2.0), seed=0)
    cfg = from_dict({
        "name": "unet3d",
        "data": {"path": str(root / "data"), "preprocess": {"intensity": "zscore_case"}},
        "model": {"name": "attention_unet", "channels": [4, 8, 16]},
        "train": {"epochs": 1, "batch_size": 2, "amp": "off", "attention_every": 1},
        "cv": {"folds": 2, "val_fraction": 0.0},
        "eval": {"metrics": ["dice", "hd95"], "save_predictions": True},
    })  # fmt: skip
    return run_cv(cfg, root / "cv", progress=False).out_dir


class TinyReportClassifier(ClassificationNet):
    """Global max pooling of one conv: enough to learn "bright square present"."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).amax((2, 3)))


@pytest.fixture(scope="session")
def cls_cv(tmp_path_factory) -> Path:
    """A classifier's 2-fold CV on 16 PNG images (class 1: a bright square), with per-case probabilities."""
    name = "tiny_report_classifier_test"
    register_model(name, TinyReportClassifier, task="classification")
    try:
        root = tmp_path_factory.mktemp("cls")
        rng = np.random.default_rng(2)
        rows = ["image,class"]
        for i in range(16):
            img = rng.normal(60, 10, (24, 24))
            if i % 2:
                img[6:18, 6:18] += 120
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"x{i:02d}.png")
            rows.append(f"x{i:02d}.png,{i % 2}")
        (root / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        cfg = from_dict({
            "name": "cls",
            "data": {"path": str(root / "cases.csv"), "labels": {0: "normal", 1: "square"},
                     "preprocess": {"intensity": "ct_window", "window": [0, 255]}},
            "model": {"name": name},
            "train": {"epochs": 15, "batch_size": 4, "lr": 0.05, "amp": "off"},
            "cv": {"folds": 2, "val_fraction": 0.0},
        })  # fmt: skip
        return run_cv(cfg, root / "cv", progress=False).out_dir
    finally:
        _REGISTRY.pop(name, None)
