"""Loss properties: known answers, identities between losses, gradients at the edges, target formats, autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agseg.losses import (
    DeepSupervisionLoss,
    UnknownLossError,
    create_loss,
    dice_loss,
    focal_loss,
    list_losses,
    tversky_loss,
)

REQUIRED = {
    "dice",
    "soft_dice_vnet",
    "dice_ce",
    "ce",
    "bce",
    "focal",
    "tversky",
    "balanced_ce",
    "anunet_hybrid",
    "focusnet_hybrid",
    "adaptive_log",
}
SPATIAL = [(12, 12), (6, 6, 6)]


def _labels(channels: int, spatial: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    if channels == 1:
        return (torch.rand(batch, *spatial) > 0.6).long()
    return torch.randint(0, channels, (batch, *spatial))


def _onehot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 1:
        return labels[:, None].float()
    return F.one_hot(labels, channels).movedim(-1, 1).float()


def test_registry_names_and_errors():
    assert set(list_losses()) >= REQUIRED
    with pytest.raises(KeyError) as err:
        create_loss("dise")
    assert "dice_ce" in str(err.value) and "focusnet_hybrid" in str(err.value)
    with pytest.raises(ValueError, match="valid losses"):
        create_loss("nope")
    assert isinstance(err.value, UnknownLossError)
    for name in list_losses():
        with pytest.raises(TypeError):
            create_loss(name, not_an_option=1)
    loss = create_loss("dice", exclude_classes=[2, 3], include_background=False)
    assert loss.kw["exclude_classes"] == [2, 3] and loss.kw["include_background"] is False
    assert create_loss("soft_dice_vnet").kw["squared"] is True
    assert create_loss("soft_dice_vnet", squared=False).kw["squared"] is False


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["dice", "soft_dice_vnet", "tversky"])
def test_perfect_prediction_gives_zero(name, channels, spatial):
    labels = _labels(channels, spatial)
    if channels == 3:
        labels[:, 0] = 2  # class 2 present; classes may be absent in some samples (then "both empty": Dice 1)
    onehot = _onehot(labels, channels)
    loss = create_loss(name)
    assert loss(onehot, labels) != 0  # as logits, one-hot values are not a perfect prediction
    assert create_loss(name, activation="none")(onehot, labels).item() == 0.0
    logits = (onehot * 2 - 1) * 60.0  # saturated logits: sigmoid/softmax give exactly 0 and 1 in float32
    assert loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert create_loss(name, include_background=False)(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_focal_with_gamma_zero_is_cross_entropy(spatial):
    x = torch.randn(2, 1, *spatial) * 3
    y = _labels(1, spatial)[:, None].float()
    torch.testing.assert_close(focal_loss(x, y, gamma=0.0), F.binary_cross_entropy_with_logits(x, y))
    torch.testing.assert_close(create_loss("focal", gamma=0)(x, y), F.binary_cross_entropy_with_logits(x, y))
    x = torch.randn(2, 4, *spatial) * 3
    y = _labels(4, spatial)
    torch.testing.assert_close(focal_loss(x, y, gamma=0.0), F.cross_entropy(x, y))
    # gamma > 0 down-weights easy voxels: the focal loss is below the cross-entropy
    assert focal_loss(x, y, gamma=2.0) < F.cross_entropy(x, y)


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("channels", [1, 3])
def test_tversky_half_half_is_dice(spatial, channels):
    x = torch.randn(2, channels, *spatial)
    y = _labels(channels, spatial)
    # TI(0.5, 0.5) = (TP + s') / (TP + (FP + FN)/2 + s') = (2TP + 2s') / (sum p + sum g + 2s')
    for s in (0.0, 1e-5, 1.0):
        t = tversky_loss(x, y, alpha=0.5, beta=0.5, smooth=s / 2)
        torch.testing.assert_close(t, dice_loss(x, y, smooth=s), rtol=1e-6, atol=1e-7)
    t = create_loss("tversky", alpha=0.5, beta=0.5, smooth=0.0, batch=True)(x, y)
    torch.testing.assert_close(t, create_loss("dice", smooth=0.0, batch=True)(x, y), rtol=1e-6, atol=1e-7)
    # alpha 0.3 / beta 0.7 penalises false negatives more: predicting nothing costs more than predicting all
    y1 = _labels(1, spatial)
    none_pred = torch.full((2, 1, *spatial), -30.0)
    assert tversky_loss(-none_pred, y1) < tversky_loss(none_pred, y1)


def _loss_inputs(channels: int, spatial: tuple[int, ...], target_kind: str, scenario: str):
    shape = (2, channels, *spatial)
    labels = (
        torch.zeros((2, *spatial), dtype=torch.long)
        if target_kind == "background"
        else torch.ones((2, *spatial), dtype=torch.long)
    )
    onehot = _onehot(labels, channels)
    if scenario == "random":
        x = torch.randn(shape)
    elif scenario == "zero":  # the output of a freshly initialised head: p = 0.5 (ANU-Net's singular point)
        x = torch.zeros(shape)
    elif scenario == "right":
        x = (onehot * 2 - 1) * 40.0
    else:  # confidently wrong
        x = (1 - onehot * 2) * 40.0
    return x.requires_grad_(True), labels


@pytest.mark.parametrize("scenario", ["random", "zero", "right", "wrong"])
@pytest.mark.parametrize("target_kind", ["background", "foreground"])
@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_loss_has_finite_gradient_on_uniform_targets(channels, spatial, target_kind, scenario):
    for name in list_losses():
        x, labels = _loss_inputs(channels, spatial, target_kind, scenario)
        loss = create_loss(name)(x, labels)
        assert loss.ndim == 0 and torch.isfinite(loss), (name, loss)
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name


@pytest.mark.parametrize("channels", [1, 3])
def test_target_formats_are_equivalent(channels):
    spatial = (10, 10)
    x = torch.randn(2, channels, *spatial)
    labels = _labels(channels, spatial)
    forms = [labels, labels[:, None], _onehot(labels, channels)]
    if channels == 1:
        forms.append(labels.float())
    for name in list_losses():
        loss = create_loss(name)
        ref = loss(x, forms[0])
        for t in forms[1:]:
            torch.testing.assert_close(loss(x, t), ref, msg=f"{name} {tuple(t.shape)} {t.dtype}")


def test_bad_targets_raise():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="spatial"):
        dice_loss(x, torch.zeros(2, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        dice_loss(x, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="labels"):
        dice_loss(x, torch.full((2, 8, 8), 3))
    with pytest.raises(ValueError, match="exclude_classes"):
        dice_loss(x, torch.zeros(2, 8, 8, dtype=torch.long), exclude_classes=[5])
    with pytest.raises(ValueError, match="activation"):
        dice_loss(x, torch.zeros(2, 8, 8, dtype=torch.long), activation="relu")
    with pytest.raises(ValueError, match="binary"):
        dice_loss(torch.randn(2, 1, 8, 8), torch.full((2, 8, 8), 255))


@pytest.mark.parametrize("channels", [1, 3])
def test_probabilities_with_activation_none_equal_logits(channels):
    """``activation="none"``: the same loss from probabilities as from logits (categorical for C > 1)."""
    x = torch.randn(2, channels, 8, 8)
    y = _labels(channels, (8, 8))
    probs = torch.sigmoid(x) if channels == 1 else torch.softmax(x, 1)
    for name in list_losses():
        a = create_loss(name)(x, y)
        b = create_loss(name, activation="none")(torch.sigmoid(x) if name == "bce" else probs, y)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_bf16_autocast_computes_in_float32(channels):
    conv = torch.nn.Conv3d(2, channels, 3, padding=1)
    inp = torch.randn(2, 2, 6, 6, 6)
    labels = _labels(channels, (6, 6, 6))
    for name in list_losses():
        loss_fn = create_loss(name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = conv(inp)
            assert logits.dtype == torch.bfloat16
            loss = loss_fn(logits, labels)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        torch.testing.assert_close(loss, loss_fn(logits.detach().float(), labels), msg=name)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
        conv.zero_grad()


def test_deep_supervision_weighted_sum_and_single_tensor():
    y = _labels(3, (8, 8))
    outs = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    base = create_loss("dice_ce")
    w = [1.0, 0.5, 0.25]
    ds = DeepSupervisionLoss(base, w)
    torch.testing.assert_close(ds(outs, y), sum(wi * base(o, y) for wi, o in zip(w, outs, strict=True)))
    torch.testing.assert_close(DeepSupervisionLoss(base)(outs, y), sum(base(o, y) for o in outs))
    torch.testing.assert_close(
        DeepSupervisionLoss(base, w, normalize=True)(outs, y), ds(outs, y) / sum(w), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(ds(outs[0], y), base(outs[0], y))
    with pytest.raises(ValueError, match="weights"):
        ds(outs[:2], y)
    with pytest.raises(ValueError, match="empty"):
        ds([], y)
    # an output at half resolution gets a nearest-neighbour down-sampled target
    low = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(DeepSupervisionLoss(base)([low], y), base(low, y[:, ::2, ::2]))
    # gradients reach every output
    outs = [o.requires_grad_(True) for o in outs]
    ds(outs, y).backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outs)
