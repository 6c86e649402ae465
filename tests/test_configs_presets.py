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


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.startswith("thesis_")], ids=lambda p: p.stem)
def test_thesis_presets_follow_the_thesis_protocol(path: Path):
    # seed 000 sec. 3.2: the k-1 training folds train and the held-out fold tests (no validation carve-out, so no
    # best-epoch choice), no augmentation, soft Dice loss, lr 5e-3; the 2D images are only resized; the 3D volumes
    # are z-scored with the mean and std of the resampled dataset; attention nets use the thesis gate (Table 3.2).
    # These failed before: the presets carved out 10 % for validation, augmented, min-max scaled, used momentum 0.9.
    cfg = load_config(path)
    assert cfg.cv.val_fraction == 0 and cfg.train.select == "last"
    assert cfg.data.augment is None
    assert cfg.train.loss == "soft_dice_vnet" and cfg.train.lr == pytest.approx(5e-3)
    assert cfg.eval.grid == "working"  # the thesis scores on its working grid
    if "luna16" in path.stem:
        assert cfg.data.preprocess.intensity == "zscore_global" and cfg.data.preprocess.global_stats == "working"
        assert cfg.train.optimizer == "sgd" and cfg.train.momentum == 0 and cfg.train.batch_size == 1
    else:
        assert cfg.data.preprocess.intensity == "none" and cfg.data.preprocess.target_size == (512, 512)
    if "attention" in path.stem:
        kwargs = get_model_spec(cfg.model.name).defaults | cfg.model.kwargs
        assert kwargs["gate_style"] == "thesis"


def test_the_oktay_ct_preset_follows_seeds_001_and_003():
    # seed 003: "downsampled to isotropic 2.00 mm", "axial flips", the Sorensen-Dice loss of V-Net (Milletari);
    # the preset had 2x1x1 mm, flipped the z axis and used the plain-sum Dice (these failed before)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "oktay2018_ct_attention_unet.yaml")
    assert cfg.data.preprocess.target_spacing == (2.0, 2.0, 2.0)
    assert tuple(cfg.data.augment.flip_axes) == (2,)
    assert cfg.train.loss == "soft_dice_vnet" and cfg.train.optimizer == "adam" and cfg.train.lr == pytest.approx(1e-4)
