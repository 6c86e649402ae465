"""Losses against reference implementations: MONAI (Dice, DiceCE, Tversky, Focal) and torch (CE, BCE)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCE
from monai.losses import DiceLoss as MonaiDice
from monai.losses import FocalLoss as MonaiFocal
from monai.losses import TverskyLoss as MonaiTversky

from agseg.losses import (
    balanced_cross_entropy_loss,
    binary_cross_entropy_loss,
    create_loss,
    cross_entropy_loss,
    dice_ce_loss,
    dice_loss,
    focal_loss,
    tversky_loss,
)

SPATIAL = [(16, 16), (8, 8, 8)]


def _data(channels: int, spatial: tuple[int, ...], batch: int = 2):
    x = torch.randn(batch, channels, *spatial) * 2.0
    if channels == 1:
        y = (torch.rand(batch, 1, *spatial) > 0.6).float()
    else:
        y = torch.randint(0, channels, (batch, 1, *spatial))
    return x, y


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=1e-6)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_matches_monai(spatial, squared, batch):
    x, y = _data(1, spatial)
    ref = MonaiDice(sigmoid=True, squared_pred=squared, batch=batch)(x, y)
    _close(dice_loss(x, y, squared=squared, batch=batch), ref)
    x, y = _data(4, spatial)
    for inc in (True, False):
        ref = MonaiDice(softmax=True, to_onehot_y=True, squared_pred=squared, batch=batch, include_background=inc)(x, y)
        _close(dice_loss(x, y, squared=squared, batch=batch, include_background=inc), ref)
    name = "soft_dice_vnet" if squared else "dice"
    _close(
        create_loss(name, batch=batch)(x, y),
        MonaiDice(softmax=True, to_onehot_y=True, squared_pred=squared, batch=batch)(x, y),
    )


@pytest.mark.parametrize("spatial", SPATIAL)
def test_dice_ce_matches_monai(spatial):
    x, y = _data(3, spatial)
    _close(dice_ce_loss(x, y), MonaiDiceCE(softmax=True, to_onehot_y=True)(x, y))
    _close(
        create_loss("dice_ce", lambda_dice=0.3, lambda_ce=1.7)(x, y),
        MonaiDiceCE(softmax=True, to_onehot_y=True, lambda_dice=0.3, lambda_ce=1.7)(x, y),
    )
    x, y = _data(1, spatial)
    _close(dice_ce_loss(x, y), MonaiDiceCE(sigmoid=True)(x, y))


@pytest.mark.parametrize("spatial", SPATIAL)
def test_tversky_matches_monai(spatial):
    for c in (1, 3):
        x, y = _data(c, spatial)
        kw = {"sigmoid": True} if c == 1 else {"softmax": True, "to_onehot_y": True}
        ref = MonaiTversky(alpha=0.3, beta=0.7, **kw)(x, y)
        _close(tversky_loss(x, y), ref)
        _close(create_loss("tversky")(x, y), ref)
        ref = MonaiTversky(alpha=0.6, beta=0.2, include_background=False, batch=True, **kw)(x, y)
        _close(tversky_loss(x, y, alpha=0.6, beta=0.2, include_background=False, batch=True), ref)


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_matches_monai(spatial, alpha, gamma):
    x, y = _data(1, spatial)
    _close(focal_loss(x, y, alpha=alpha, gamma=gamma), MonaiFocal(gamma=gamma, alpha=alpha)(x, y))
    # multi-label sigmoid: every channel its own binary problem
    xm = torch.randn(2, 3, *spatial)
    ym = (torch.rand(2, 3, *spatial) > 0.5).float()
    _close(
        focal_loss(xm, ym, alpha=alpha, gamma=gamma, activation="sigmoid"), MonaiFocal(gamma=gamma, alpha=alpha)(xm, ym)
    )
    # softmax: ours sums over classes per voxel (= cross-entropy at gamma 0), MONAI averages over the C classes
    x, y = _data(3, spatial)
    ref = MonaiFocal(gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True)(x, y)
    _close(focal_loss(x, y, alpha=alpha, gamma=gamma), 3 * ref)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_cross_entropy_matches_torch(spatial):
    x, y = _data(4, spatial)
    labels = y[:, 0]
    _close(cross_entropy_loss(x, y), F.cross_entropy(x, labels))
    _close(cross_entropy_loss(x, labels), F.cross_entropy(x, labels))
    w = torch.tensor([0.2, 1.0, 3.0, 0.5])
    _close(cross_entropy_loss(x, y, weight=w), F.cross_entropy(x, labels, weight=w))
    _close(cross_entropy_loss(x, y, reduction="sum"), F.cross_entropy(x, labels, reduction="sum"))
    per_sample = F.cross_entropy(x, labels, reduction="none").flatten(1).mean(1)
    _close(cross_entropy_loss(x, y, reduction="none"), per_sample)
    _close(create_loss("ce")(x, y), F.cross_entropy(x, labels))
    # one channel: binary cross-entropy with logits
    xb, yb = _data(1, spatial)
    _close(cross_entropy_loss(xb, yb), F.binary_cross_entropy_with_logits(xb, yb))
    _close(create_loss("bce")(xb, yb[:, 0]), F.binary_cross_entropy_with_logits(xb, yb))
    # multi-label BCE from a label map: one-hot first
    onehot = F.one_hot(labels, 4).movedim(-1, 1).float()
    _close(binary_cross_entropy_loss(x, y), F.binary_cross_entropy_with_logits(x, onehot))


def test_exclude_classes_matches_reduced_softmax():
    """Seed 001 fine-tuning: spleen (2) and kidney (3) outputs out of the softmax and of the loss."""
    x = torch.randn(2, 4, 12, 12)
    y = torch.randint(0, 2, (2, 12, 12))  # TCIA labels: background and pancreas only
    keep = x[:, [0, 1]]
    ref = MonaiDice(softmax=True, to_onehot_y=True)(keep, y[:, None])
    _close(dice_loss(x, y, exclude_classes=[2, 3]), ref)
    _close(create_loss("dice", exclude_classes=[2, 3])(x, y), ref)
    _close(cross_entropy_loss(x, y, exclude_classes=[2, 3]), F.cross_entropy(keep, y))
    _close(dice_ce_loss(x, y, exclude_classes=[2, 3]), MonaiDiceCE(softmax=True, to_onehot_y=True)(keep, y[:, None]))
    # voxels labelled with an excluded class are ignored
    y2 = torch.randint(0, 4, (2, 12, 12))
    remap = torch.tensor([0, 1, -100, -100])[y2]
    _close(cross_entropy_loss(x, y2, exclude_classes=[2, 3]), F.cross_entropy(keep, remap, ignore_index=-100))
    valid = (y2 < 2).float()[:, None]
    p = torch.softmax(keep, 1) * valid
    g = F.one_hot(y2.clamp(max=1), 2).movedim(-1, 1).float() * valid
    num = 2 * (p * g).sum((2, 3)) + 1e-5
    den = p.sum((2, 3)) + g.sum((2, 3)) + 1e-5
    _close(dice_loss(x, y2, exclude_classes=[2, 3]), (1 - num / den).mean())


def test_balanced_ce_by_hand():
    x = torch.randn(2, 1, 10, 10)
    y = (torch.rand(2, 1, 10, 10) > 0.7).float()
    p = torch.sigmoid(x.double())
    omega = 0.7
    ref = -(omega * y * torch.log(p) + (1 - omega) * (1 - y) * torch.log(1 - p)).mean()
    _close(balanced_cross_entropy_loss(x, y), ref)
    _close(create_loss("balanced_ce")(x, y), ref)
    _close(balanced_cross_entropy_loss(x, y, omega=0.5), 0.5 * F.binary_cross_entropy_with_logits(x, y))
    # softmax generalisation: weight 1 - Omega on background, Omega on the other classes
    xm = torch.randn(2, 3, 10, 10)
    ym = torch.randint(0, 3, (2, 10, 10))
    w = torch.tensor([0.3, 0.7, 0.7])
    ref = (w[ym] * F.cross_entropy(xm, ym, reduction="none")).mean()
    _close(balanced_cross_entropy_loss(xm, ym), ref)
