"""The grid attention gate against seed 003 eq. (1)-(2) and the facts in DESIGN.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agseg.blocks.attention_gate import AttentionGateBlock, GridAttentionGate


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_hand_checked_case_full_resolution():
    """1 channel everywhere, sub_sample 1, no output transform: every number computed by hand.

    theta = 2, phi = -1 (bias 0.5), psi = 3 (bias -1)
    x = [[1, 0], [-1, 2]], g = [[1, 1], [0, 0]]
    theta_x + phi_g = [[1.5, -0.5], [-1.5, 4.5]] -> ReLU -> [[1.5, 0], [0, 4.5]]
    q = 3 * relu - 1 = [[3.5, -1], [-1, 12.5]];  alpha = sigmoid(q);  y = alpha * x
    """
    gate = GridAttentionGate(2, 1, 1, inter_channels=1, sub_sample=1, output_transform=False)
    with torch.no_grad():
        gate.theta.weight.fill_(2.0)
        gate.phi.weight.fill_(-1.0)
        gate.phi.bias.fill_(0.5)
        gate.psi.weight.fill_(3.0)
        gate.psi.bias.fill_(-1.0)
    x = torch.tensor([[[[1.0, 0.0], [-1.0, 2.0]]]])
    g = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    y, alpha = gate(x, g)
    expected_alpha = torch.tensor([[[[_sigmoid(3.5), _sigmoid(-1.0)], [_sigmoid(-1.0), _sigmoid(12.5)]]]])
    torch.testing.assert_close(alpha, expected_alpha)
    torch.testing.assert_close(y, expected_alpha * x)


def test_formula_with_sub_sampling_and_resampling():
    """sub_sample 2: theta is a 2x2 stride-2 conv without bias; phi(g) is resampled to theta's grid and alpha to
    x's grid (bilinear); y = BN(W (alpha * x)). Checked against eq. (1)-(2) written out with einsum."""
    torch.manual_seed(1)
    gate = GridAttentionGate(2, 3, 5, inter_channels=4, sub_sample=2, init="default").eval()
    x, g = torch.randn(2, 3, 8, 6), torch.randn(2, 5, 2, 3)
    y, alpha = gate(x, g)
    wx = gate.theta.weight  # (4, 3, 2, 2)
    patches = x.unfold(2, 2, 2).unfold(3, 2, 2)  # (B, 3, 4, 3, 2, 2)
    theta_x = torch.einsum("bcijkl,ockl->boij", patches, wx)
    phi_g = torch.einsum("bchw,oc->bohw", g, gate.phi.weight[:, :, 0, 0]) + gate.phi.bias.view(1, -1, 1, 1)
    phi_g = F.interpolate(phi_g, size=(4, 3), mode="bilinear", align_corners=False)
    q = torch.einsum("bchw,oc->bohw", F.relu(theta_x + phi_g), gate.psi.weight[:, :, 0, 0]) + gate.psi.bias.item()
    expected_alpha = F.interpolate(torch.sigmoid(q), size=(8, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(alpha, expected_alpha, rtol=1e-5, atol=1e-6)
    conv, bn = gate.out[0], gate.out[1]
    torch.testing.assert_close(y, bn(conv(expected_alpha * x)), rtol=1e-5, atol=1e-5)
    assert gate.theta.bias is None and gate.phi.bias is not None


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("init", ["open", "default"])
def test_alpha_in_unit_interval_and_depends_on_g(spatial_dims: int, init: str):
    gate = GridAttentionGate(spatial_dims, 8, 16, sub_sample=2, init=init).eval()
    x = 5 * torch.randn(2, 8, *([12] * spatial_dims))
    g1 = 5 * torch.randn(2, 16, *([6] * spatial_dims))
    g2 = 5 * torch.randn(2, 16, *([6] * spatial_dims))
    a1, a2 = gate.attention(x, g1), gate.attention(x, g2)
    assert a1.shape == (2, 1, *x.shape[2:])
    assert a1.min() >= 0 and a1.max() <= 1
    assert not torch.allclose(a1, a2), "alpha must change when the gating signal changes"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_open_init_passes_features(spatial_dims: int):
    gate = GridAttentionGate(spatial_dims, 32, 64).eval()
    x = torch.randn(2, 32, *([10] * spatial_dims)).relu() * 3
    g = torch.randn(2, 64, *([5] * spatial_dims)).relu() * 3
    alpha = gate.attention(x, g)
    assert alpha.min() >= 0.9
    plain = GridAttentionGate(spatial_dims, 32, 64, init="default").eval()
    assert plain.attention(x, g).mean() < 0.9


def test_multi_head_block_shapes_and_fusion():
    block = AttentionGateBlock(3, 6, 12, heads=2).eval()
    x, g = torch.randn(1, 6, 8, 8, 8), torch.randn(1, 12, 4, 4, 4)
    y, alpha = block(x, g)
    assert y.shape == x.shape and alpha.shape == (1, 2, 8, 8, 8)
    # the two sub-gates have independent parameters, so their maps differ
    assert not torch.allclose(alpha[:, 0], alpha[:, 1])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="gate init"):
        GridAttentionGate(2, 4, 4, init="closed")
    with pytest.raises(ValueError, match="spatial_dims"):
        GridAttentionGate(4, 4, 4)
    with pytest.raises(ValueError, match="attention_heads"):
        AttentionGateBlock(2, 4, 4, heads=0)
