"""The papers' hybrid losses against their equations, computed independently in float64."""

from __future__ import annotations

import math

import pytest
import torch

from agseg.losses import (
    AdaptiveLogLoss,
    DeepSupervisionLoss,
    FocusNetHLLoss,
    adaptive_log_loss,
    anunet_hybrid_loss,
    balanced_cross_entropy_loss,
    create_loss,
    focusnet_hl,
    focusnet_hybrid_loss,
    tversky_loss,
)


def _probs(shape: tuple[int, ...]) -> torch.Tensor:
    p = torch.rand(shape, dtype=torch.float64) * 0.96 + 0.02
    return torch.where((p - 0.5).abs() < 0.02, p + 0.05, p)  # stay away from the singular point Y = 0.5


def test_anunet_eq3_by_hand():
    """Seed 002 eq. 3: sum_i (1 - [alpha Ybar log Y_i / |Y_i - 0.5|^gamma + (2 Y_i.Ybar + s)/(Y_i^2 + Ybar^2 + s)])."""
    alpha, gamma, s = 0.3, 2.0, 1.0
    ys = [_probs((2, 1, 9, 9)) for _ in range(4)]
    gt = (torch.rand(2, 1, 9, 9) > 0.6).double()
    expected = torch.zeros(2, dtype=torch.float64)
    for y in ys:
        focal = (alpha * gt * torch.log(y) / (y - 0.5).abs() ** gamma).mean((1, 2, 3))
        dice = (2 * (y * gt).sum((1, 2, 3)) + s) / ((y**2).sum((1, 2, 3)) + (gt**2).sum((1, 2, 3)) + s)
        expected += 1 - (focal + dice)
    got = anunet_hybrid_loss(
        [y.float() for y in ys], gt, alpha=alpha, gamma=gamma, smooth=s, eps=0.0, activation="none", reduction="none",
        binary_background=False,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # the module and the registry sum over the deep-supervision outputs the same way
    logits = [torch.logit(y).float() for y in ys]
    loss = create_loss("anunet_hybrid", alpha=alpha, gamma=gamma, smooth=s, eps=0.0, binary_background=False)
    torch.testing.assert_close(loss(logits, gt).double(), expected.mean(), rtol=1e-4, atol=1e-4)
    single = create_loss("anunet_hybrid", alpha=alpha, gamma=gamma, smooth=s, eps=0.0, binary_background=False)
    torch.testing.assert_close(loss(logits, gt), DeepSupervisionLoss(single)(logits, gt))
    torch.testing.assert_close(loss(logits, gt), sum(single(x, gt) for x in logits))


def test_anunet_eps_keeps_the_singular_point_finite():
    gt = torch.ones(1, 1, 4, 4)
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)  # Y = 0.5 everywhere
    assert math.isinf(anunet_hybrid_loss(x, gt, eps=0.0).item())
    loss = anunet_hybrid_loss(x, gt, eps=0.05)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # at Y = 0.5 with eps: 1 - [alpha log(0.5) / eps^gamma + (2*0.5*16 + 1)/(0.25*16 + 16 + 1)]
    want = 1 - (0.25 * math.log(0.5) / 0.05**2 + 17 / 21)
    assert loss.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("y0", [0.3, 0.1, 0.7])
def test_anunet_loss_pulls_every_ground_truth_voxel_towards_its_class(y0):
    # Differentiated literally, alpha log(Y) / |Y - 0.5|^2 has a spurious minimum near Y = 0.084: from Y = 0.3 or 0.1
    # the gradient pushed the class probability *down* (a 3-class softmax starts near 1/3, so a 3D ANU-Net learnt
    # nothing on hippocampus). With the weight detached (the default) descent raises Y wherever Y starts.
    gt = torch.ones(1, 1, 4, 4)
    x = torch.full((1, 1, 4, 4), math.log(y0 / (1 - y0)), requires_grad=True)  # sigmoid(x) = y0
    anunet_hybrid_loss(x, gt).backward()
    assert (x.grad < 0).all()  # descending the loss raises x, hence Y
    literal = x.detach().clone().requires_grad_()
    anunet_hybrid_loss(literal, gt, detach_weight=False).backward()
    if y0 < 0.5:
        assert (literal.grad > 0).all()  # the literal gradient pushes Y away from the class: why we detach
    # the value is eq. 3's either way
    torch.testing.assert_close(anunet_hybrid_loss(x, gt), anunet_hybrid_loss(x, gt, detach_weight=False))


def _focusnet_by_hand(p: torch.Tensor, g: torch.Tensor, k=0.5, omega_b=0.7, a=0.3, b=0.7, s=1e-5):
    cb = -(omega_b * g * torch.log(p) + (1 - omega_b) * (1 - g) * torch.log(1 - p)).mean()
    tp = (p * g).sum()
    fp = (p * (1 - g)).sum()  # |P \ G|
    fn = ((1 - p) * g).sum()  # |G \ P|
    tl = 1 - (tp + s) / (tp + a * fp + b * fn + s)
    return k * cb + (1 - k) * tl


def _all_by_hand(hl: float, gamma=0.1, omega=10.0, eps=0.5) -> float:
    a = abs(hl)
    c = gamma - omega * math.log(1 + gamma / eps)
    return omega * math.log(1 + a / eps) if a < gamma else a - c


def test_focusnet_eq1_eq2_by_hand():
    p = _probs((2, 1, 10, 10))
    g = (torch.rand(2, 1, 10, 10) > 0.7).double()
    hl = _focusnet_by_hand(p, g)
    logits = torch.logit(p).float()
    torch.testing.assert_close(focusnet_hl(logits, g).double(), hl.reshape(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(FocusNetHLLoss()(logits, g).double(), hl, rtol=1e-5, atol=1e-6)
    want = _all_by_hand(hl.item())
    assert focusnet_hybrid_loss(logits, g).item() == pytest.approx(want, rel=1e-5)
    assert create_loss("focusnet_hybrid")(logits, g).item() == pytest.approx(want, rel=1e-5)
    assert create_loss("adaptive_log")(logits, g).item() == pytest.approx(want, rel=1e-5)
    assert AdaptiveLogLoss()(logits, g).item() == pytest.approx(want, rel=1e-5)
    # per-sample variant: ALL of each sample's HL, then the mean
    per = [_all_by_hand(_focusnet_by_hand(p[i : i + 1], g[i : i + 1]).item()) for i in range(2)]
    assert focusnet_hybrid_loss(logits, g, batch=False).item() == pytest.approx(sum(per) / 2, rel=1e-5)
    # near the minimum (|HL| < gamma) the logarithmic branch is used
    good = torch.where(g > 0, 0.999, 0.001).double()
    hl_small = _focusnet_by_hand(good, g).item()
    assert hl_small < 0.1
    got = focusnet_hybrid_loss(torch.logit(good).float(), g).item()
    assert got == pytest.approx(10 * math.log(1 + hl_small / 0.5), rel=1e-4)


def test_adaptive_log_loss_is_continuous_at_gamma():
    gamma, omega, eps = 0.1, 10.0, 0.5
    at = omega * math.log(1 + gamma / eps)
    for d in (1e-3, 1e-5):
        x = torch.tensor([gamma - d, gamma + d, -(gamma - d), -(gamma + d)], dtype=torch.float64)
        v = adaptive_log_loss(x, gamma=gamma, omega=omega, epsilon=eps).double()
        # left slope omega/(eps+gamma) ~ 16.7, right slope 1: the jump vanishes with d
        assert abs(v[0].item() - at) <= 17 * d + 1e-6
        assert abs(v[1].item() - at) <= 1.0 * d + 1e-6
        assert v[2].item() == pytest.approx(v[0].item()) and v[3].item() == pytest.approx(v[1].item())
    both = adaptive_log_loss(torch.tensor([gamma]), gamma=gamma, omega=omega, epsilon=eps)
    assert both.item() == pytest.approx(at, rel=1e-6)  # the linear branch at |x| = gamma gives the same value
    for xv in (0.0, 0.05, 0.3, 2.0):
        got = adaptive_log_loss(torch.tensor([xv]), gamma=gamma, omega=omega, epsilon=eps).item()
        assert got == pytest.approx(_all_by_hand(xv), rel=1e-6, abs=1e-7)


def test_focusnet_multiclass_sums_tversky_over_classes():
    x = torch.randn(2, 3, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8))
    cb = balanced_cross_entropy_loss(x, y)
    tl = tversky_loss(x, y, batch=True, class_reduction="sum")
    torch.testing.assert_close(focusnet_hl(x, y)[0], 0.5 * cb + 0.5 * tl)


def test_anunet_binary_output_has_the_background_term():
    # one sigmoid output: the focal-like term is -alpha * w * BCE (both classes of the binary problem)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    gt = (torch.rand(2, 1, 6, 6) > 0.5).double()
    y = torch.sigmoid(x)
    w = (y - 0.5).abs().clamp_min(0.05) ** -2
    focal = (0.25 * w * (gt * torch.log(y) + (1 - gt) * torch.log(1 - y))).mean((1, 2, 3))
    dice = (2 * (y * gt).sum((1, 2, 3)) + 1) / ((y**2).sum((1, 2, 3)) + (gt**2).sum((1, 2, 3)) + 1)
    got = anunet_hybrid_loss(x.float(), gt, reduction="none")
    torch.testing.assert_close(got.double(), 1 - (focal + dice), rtol=1e-4, atol=1e-4)
    fg_only = anunet_hybrid_loss(x.float(), gt, reduction="none", binary_background=False)
    assert (fg_only < got).all()  # the background term only adds (it is <= 0 inside 1 - [...])


def test_anunet_background_term_only_for_a_single_sigmoid_output():
    # two sigmoid channels with the first left out are not a binary problem's one output: no background term
    x = torch.randn(2, 2, 5, 5)
    gt = torch.randint(0, 2, (2, 2, 5, 5)).float()
    kw = {"activation": "sigmoid", "include_background": False, "reduction": "none"}
    torch.testing.assert_close(
        anunet_hybrid_loss(x, gt, **kw), anunet_hybrid_loss(x, gt, binary_background=False, **kw)
    )
