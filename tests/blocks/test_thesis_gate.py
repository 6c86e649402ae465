"""The thesis' attention gate (seed 000 Table 3.2), written out by hand, and the thesis presets that use it.

Each test below fails on the code before the thesis gate existed (the presets used Oktay's gate: no batch norm in
the gate, an output 1x1 conv + BN, x sub-sampled by a strided conv also in single gating, F_int = C_x / 2).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import agseg
from agseg.blocks.attention_gate import GridAttentionGate


def _bn_eval(x, bn: nn.BatchNorm2d):
    """Batch norm in eval mode, by hand: (x - mean) / sqrt(var + eps) * weight + bias, per channel."""
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _randomise(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def _table_3_2(gate: GridAttentionGate, x, g, pool: int):
    """Table 3.2 step by step: 1a conv(x) + BN (then max pooling by ``pool`` for multi gating), 1b conv(g) + BN,
    up-sampled; 2 ReLU of the sum; 3 conv + BN; 4 sigmoid; 5 up-sampling to x; the new skip alpha * x."""
    conv_x, bn_x = gate.theta[0], gate.theta[1]
    conv_g, bn_g = gate.phi
    conv_psi, bn_psi = gate.psi
    step_1a = _bn_eval(F.conv2d(x, conv_x.weight), bn_x)
    if pool > 1:
        step_1a = F.max_pool2d(step_1a, pool)
    step_1b = F.interpolate(_bn_eval(F.conv2d(g, conv_g.weight), bn_g), size=step_1a.shape[2:], mode="bilinear")
    step_2 = torch.relu(step_1a + step_1b)
    step_3 = _bn_eval(F.conv2d(step_2, conv_psi.weight), bn_psi)
    step_4 = torch.sigmoid(step_3)
    alpha = F.interpolate(step_4, size=x.shape[2:], mode="bilinear") if pool > 1 else step_4
    return alpha * x, alpha


@pytest.mark.parametrize(("pool", "g_size"), [(1, 2), (2, 4)])  # single gating: g from the bottleneck; multi
def test_thesis_gate_is_table_3_2(pool, g_size):
    torch.manual_seed(0)
    gate = GridAttentionGate.thesis(2, 6, 10, sub_sample=pool).eval()
    _randomise(gate)
    x, g = torch.randn(2, 6, 8, 8), torch.randn(2, 10, g_size, g_size)
    y, alpha = gate(x, g)
    ref_y, ref_alpha = _table_3_2(gate, x, g, pool)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-6)
    assert gate.inter_channels == 6  # F_int = C_x


@pytest.mark.parametrize(
    ("preset", "pooling"),
    [("attention_unet_thesis2d_single", False), ("attention_unet_thesis2d_multi", True)],
)
def test_thesis_presets_use_the_thesis_gate(preset, pooling):
    net = agseg.create_model(preset, channels=(4, 8, 16, 32, 64)).eval()
    assert sorted(net.skips.gates) == ["0", "1", "2", "3"]
    for level, block in net.skips.gates.items():
        gate = block.gates[0]
        # batch norm after theta, phi and psi
        assert isinstance(gate.theta[1], nn.BatchNorm2d) and isinstance(gate.phi[1], nn.BatchNorm2d)
        assert isinstance(gate.psi[1], nn.BatchNorm2d)
        # no output transform: the new skip is alpha * x
        assert isinstance(gate.out, nn.Identity)
        # F_int = the skip's channels
        assert gate.inter_channels == net.channels[int(level)]
        # single gating: theta at x's resolution (a 1x1 conv, no pooling); multi gating: max pooling after 1a
        assert any(isinstance(m, nn.MaxPool2d) for m in gate.theta.modules()) is pooling
        assert gate.theta[0].kernel_size == (1, 1) and gate.theta[0].stride == (1, 1)
    x = torch.randn(1, 1, 32, 32)
    skip, bottleneck = torch.randn(1, 4, 32, 32), torch.randn(1, 64, 2, 2)
    y, alpha = net.skips.gates["0"](skip, bottleneck if not pooling else torch.randn(1, 8, 16, 16))
    torch.testing.assert_close(y, alpha * skip)
    assert net(x).shape == (1, 1, 32, 32)


def test_the_oktay_gate_stays_the_default():
    net = agseg.create_model("attention_unet", channels=(4, 8, 16, 32, 64))
    gate = net.skips.gates["1"].gates[0]
    assert isinstance(gate.theta, nn.Conv2d) and gate.theta.stride == (2, 2)  # strided-conv sub-sampling
    assert isinstance(gate.out, nn.Sequential) and gate.inter_channels == 4  # output W; F_int = C / 2


def test_style_choices_can_be_overridden_one_by_one():
    net = agseg.create_model(
        "attention_unet", channels=(4, 8, 16), gate_style="thesis", gate_output_transform=True, inter_ratio=0.5
    )
    gate = net.skips.gates["1"].gates[0]
    assert isinstance(gate.out, nn.Sequential) and gate.inter_channels == 4 and isinstance(gate.psi[1], nn.BatchNorm2d)
    with pytest.raises(ValueError, match="gate_style"):
        agseg.create_model("attention_unet", channels=(4, 8, 16), gate_style="schlemper")


def test_open_thesis_gate_starts_open_through_its_batch_norm():
    torch.manual_seed(0)
    gate = GridAttentionGate.thesis(2, 4, 8, sub_sample=2, init="open").train()
    _, alpha = gate(torch.randn(4, 4, 16, 16), torch.randn(4, 8, 8, 8))
    assert alpha.min() > 0.94  # sigmoid(3 + 0.01 * z)


def test_thesis_gate_in_3d():
    gate = GridAttentionGate.thesis(3, 4, 8, sub_sample=2).eval()
    x = torch.randn(1, 4, 8, 8, 8)
    y, alpha = gate(x, torch.randn(1, 8, 4, 4, 4))
    assert alpha.shape == (1, 1, 8, 8, 8) and torch.allclose(y, alpha * x)
    assert isinstance(gate.theta[-1], nn.MaxPool3d)


def test_thesis_gate_without_norm_keeps_its_biases_and_opens():
    gate = GridAttentionGate.thesis(2, 4, 8, sub_sample=2, norm="none", init="open")
    assert gate.phi[0].bias is not None and gate.psi[0].bias is not None  # nothing else could shift them
    _, alpha = gate(torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4))
    assert alpha.min() > 0.9
    # the thesis' switches can be overridden one by one without a keyword clash
    assert isinstance(GridAttentionGate.thesis(2, 4, 8, output_transform=True).out, nn.Sequential)


def test_thesis_single_gating_signal_comes_from_the_last_max_pooling():
    """Sec. 3.2.1: "extracted through convolution, batch normalization and ReLU activation of the feature maps coming
    from the last downsampling operation (max pooling)": the bottleneck block's input, not its output."""
    net = agseg.create_model("attention_unet_thesis2d_single", channels=(4, 8, 16, 32, 64)).eval()
    seen = {}
    net.skips.gating_signal.register_forward_hook(lambda m, a, out: seen.update(inp=a[0], out=out))
    net.encoder.blocks[-1].register_forward_pre_hook(lambda m, a: seen.update(pooled=a[0]))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        net(x)
    torch.testing.assert_close(seen["inp"], seen["pooled"])  # the max-pooled 32-channel maps of level 3
    conv, bn = net.skips.gating_signal[0], net.skips.gating_signal[1]
    torch.testing.assert_close(seen["out"], F.relu(bn(conv(seen["pooled"]))))
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (32, 64, (1, 1))
    # multi gating (thesis or not) and Oktay's single gating keep the authors' source: the bottleneck's output
    for name, kw in [("attention_unet_thesis2d_multi", {}), ("attention_unet", {"gating": "single"})]:
        other = agseg.create_model(name, channels=(4, 8, 16, 32, 64), **kw)
        assert other.skips.gating_from == "bottleneck" and other.skips.gating_signal[0].in_channels == 64
    with pytest.raises(ValueError, match="gating_from"):
        agseg.create_model("attention_unet", channels=(4, 8, 16), gating_from="decoder")
