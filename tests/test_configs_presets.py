"""Every preset in configs/ loads, names registered models, losses and layouts, and valid data settings."""

from __future__ import annotations

from pathlib import Path

import pytest

import agseg
from agseg.config import load_config
from agseg.data import PreprocessConfig, list_layouts
from agseg.data.augment import AugmentConfig
from agseg.losses import create_loss
from agseg.metrics import list_metrics
from agseg.nets.registry import get_model_spec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_presets():
    names = {p.stem for p in CONFIGS}
    assert {"thesis_cxr_unet", "thesis_cxr_attention_single", "thesis_cxr_attention_multi"} <= names
    assert {"thesis_luna16_unet3d", "thesis_luna16_attention3d", "oktay2018_ct_attention_unet"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_valid(path: Path):
    cfg = load_config(path)
    spec = get_model_spec(cfg.model.name)
    with __import__("torch").device("meta"):
        agseg.create_model(cfg.model.name, **cfg.model.kwargs)
    create_loss(cfg.train.loss, **cfg.train.loss_kwargs)
    # the typed sections come back typed, and survive a YAML round trip unchanged
    assert isinstance(cfg.data.preprocess, PreprocessConfig)
    assert cfg.data.augment is None or isinstance(cfg.data.augment, AugmentConfig)
    assert PreprocessConfig.from_dict(cfg.data.preprocess.to_dict()) == cfg.data.preprocess
    assert cfg.replace() == cfg
    assert cfg.data.layout == "auto" or cfg.data.layout in list_layouts()
    assert set(cfg.eval.metrics) <= set(list_metrics())
    assert spec.task in ("segmentation", "classification")  # configs/cxr_tb_*.yaml: Sononet, AG-Sononet
