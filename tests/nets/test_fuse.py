"""Batch-norm folding and conv + ReLU fusion: the fused net computes the original's function, the original is left
untouched, and the fused kernel is taken only where it applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import agseg
from agseg.nets.fuse import ConvReLU, fold_batchnorm, fuse_conv_relu


def _with_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, so that folding has something to fold."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_one_pair_by_hand():
    conv, bn = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    bn.weight.data.copy_(torch.tensor([2.0, 1.0, -1.0]))
    bn.bias.data.copy_(torch.tensor([0.0, 1.0, 3.0]))
    seq = nn.Sequential(conv, bn)
    folded, n = fold_batchnorm(seq)
    assert n == 1 and isinstance(folded[1], nn.Identity)
    # y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta, written out per channel
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(folded[0].weight, conv.weight * scale[:, None, None, None])
    assert torch.allclose(folded[0].bias, bn.bias - bn.running_mean * scale)
    assert isinstance(seq[1], nn.BatchNorm2d), "the original must keep its norm"


def test_pairs_outside_a_sequential_and_transposed_convs_are_left_alone():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
            self.up = nn.Sequential(nn.ConvTranspose2d(2, 2, 2, stride=2), nn.BatchNorm2d(2))

        def forward(self, x):
            return self.up(self.bn(self.conv(x)))

    _, n = fold_batchnorm(Net())
    assert n == 0


@pytest.mark.parametrize(
    ("name", "kw", "shape"),
    [
        ("unet", {"channels": (4, 8, 16)}, (2, 1, 32, 32)),
        ("attention_unet", {"channels": (4, 8, 16), "gating": "multi"}, (2, 1, 32, 32)),
        ("attention_unet", {"channels": (4, 8, 16), "gate_style": "thesis", "gating": "single"}, (2, 1, 32, 32)),
        ("attention_unet", {"channels": (4, 8, 16), "spatial_dims": 3, "up_mode": "resize"}, (1, 1, 16, 16, 16)),
        ("anunet", {"channels": (4, 8, 16)}, (2, 1, 32, 32)),
        ("focusnetpp", {"channels": (8, 16, 32), "in_channels": 3}, (2, 3, 32, 32)),
        ("sononet", {"num_classes": 2, "in_channels": 1}, (2, 1, 64, 64)),
    ],
)
def test_folded_nets_compute_the_same_function(name, kw, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    model = _with_statistics(agseg.create_model(name, **kw), x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, n = fold_batchnorm(model)
    n_norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n > 0 and n <= n_norms
    with torch.no_grad():
        ref, out = model(x), folded(x)
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def _out(y):
    return y[0] if isinstance(y, (list, tuple)) else y


@pytest.mark.parametrize(
    ("name", "kw", "shape"),
    [
        ("unet", {"channels": (4, 8, 16)}, (2, 1, 32, 32)),
        ("attention_unet", {"channels": (4, 8, 16), "gating": "multi"}, (2, 1, 32, 32)),
        ("attention_unet", {"channels": (4, 8, 16), "spatial_dims": 3}, (1, 1, 16, 16, 16)),
        ("anunet", {"channels": (4, 8, 16)}, (2, 1, 32, 32)),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv_relu_fusion_computes_the_same_function(name, kw, shape, layout):
    torch.manual_seed(0)
    x = torch.randn(shape)
    model = _with_statistics(agseg.create_model(name, **kw), x)
    folded, _ = fold_batchnorm(model)
    fused, n = fuse_conv_relu(folded)
    assert n > 0 and sum(isinstance(m, ConvReLU) for m in fused.modules()) == n
    assert not any(isinstance(m, ConvReLU) for m in folded.modules()), "the input net must be left as it was"
    if layout == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x, folded, fused = x.to(memory_format=fmt), folded.to(memory_format=fmt), fused.to(memory_format=fmt)
    with torch.no_grad():
        ref, out = _out(folded(x)), _out(fused(x))
        assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16, out16 = _out(folded(x)).float(), _out(fused(x)).float()
    # bf16: the same kernels' arithmetic, rounded apart; a few bf16 steps at most
    assert (out16 - ref16).abs().max().item() <= 0.05 * max(1.0, ref16.abs().max().item())


def test_conv_relu_takes_the_fused_kernel_only_where_it_applies(monkeypatch):
    import agseg.nets.fuse as fuse

    calls = []
    real = fuse._pointwise_op()
    assert real is not None, "this torch has oneDNN's fused convolution"
    monkeypatch.setattr(fuse, "_pointwise_op", lambda: lambda *a: calls.append(a) or real(*a))
    conv = nn.Conv2d(3, 4, 3, padding=1)
    m = ConvReLU(conv).eval()
    x = torch.randn(2, 3, 8, 8)
    ref = torch.relu(conv(x)).detach()
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-5)
    assert len(calls) == 1
    y = m(x.requires_grad_())  # gradients asked for: conv + ReLU apart, so that backward works
    y.sum().backward()
    assert len(calls) == 1 and conv.weight.grad is not None
    with torch.no_grad():
        m(torch.randn(3, 8, 8))  # unbatched
        with torch.autocast("cpu", dtype=torch.float16):
            m(torch.randn(2, 3, 8, 8))  # fp16 autocast: not a fused dtype here
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert m(torch.randn(2, 3, 8, 8)).dtype == torch.bfloat16
    assert len(calls) == (2 if fuse._onednn_bf16() else 1)  # bf16 fused only where oneDNN runs bf16 (AVX-512/AMX)


def test_fuse_conv_relu_pairs_only_a_relu_after_a_conv():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Identity(), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.Sigmoid(),
                        nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU())  # fmt: skip
    fused, n = fuse_conv_relu(seq)
    assert n == 1
    assert isinstance(fused[0], ConvReLU) and isinstance(fused[2], nn.Identity)
    assert isinstance(fused[3], nn.Conv2d) and isinstance(fused[5], nn.Conv2d) and isinstance(fused[7], nn.ReLU)


def test_conv_relu_leaves_bf16_to_pytorch_where_onednn_has_no_bf16(monkeypatch):
    import agseg.nets.fuse as fuse

    monkeypatch.setattr(fuse, "_onednn_bf16", lambda: False)
    monkeypatch.setattr(fuse, "_pointwise_op", lambda: lambda *a: pytest.fail("the fused kernel must not be called"))
    conv = nn.Conv2d(3, 4, 3, padding=1)
    m = ConvReLU(conv).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).dtype == torch.bfloat16


def test_conv_relu_with_a_trainable_bias_only_keeps_its_gradient():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.weight.requires_grad_(False)
    m = ConvReLU(conv)
    m(torch.randn(2, 3, 8, 8)).sum().backward()
    assert conv.bias.grad is not None


class _StandardisedConv(nn.Conv2d):
    """A conv whose forward is not a plain convolution (weight standardisation): folding a norm into its weights, or
    running its arithmetic as oneDNN's plain convolution, would change what it computes."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / self.weight.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def test_a_conv_that_overrides_forward_is_neither_folded_nor_fused():
    torch.manual_seed(0)
    net = nn.Sequential(
        _StandardisedConv(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU()
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(2, 2, 8, 8)
    folded, n_folded = fold_batchnorm(net)
    fused, n_fused = fuse_conv_relu(folded)
    assert (n_folded, n_fused) == (0, 1)  # only the plain 1x1 conv and its ReLU
    assert type(fused[0]) is _StandardisedConv and isinstance(fused[3], ConvReLU)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["weight_norm", "old_weight_norm", "spectral_norm", "hook", "norm_hook", "relu_hook"])
def test_hooked_or_parametrized_modules_are_neither_folded_nor_fused(kind):
    """weight_norm / spectral_norm recompute a conv's weight from other tensors (fold_batchnorm crashed on them); a
    forward hook on the conv, the norm or the ReLU was silently dropped by the rewrite."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    calls = []
    if kind == "weight_norm":
        conv = parametrizations.weight_norm(conv)
    elif kind == "old_weight_norm":
        conv = nn.utils.weight_norm(conv)
    elif kind == "spectral_norm":
        conv = parametrizations.spectral_norm(conv)
    net = nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU())
    target = {"hook": 0, "norm_hook": 1, "relu_hook": 2}.get(kind)
    if target is not None:
        net[target].register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        want = net(x)
    folded, n_folded = fold_batchnorm(net)
    fused, n_fused = fuse_conv_relu(folded)
    calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), want, rtol=1e-4, atol=1e-5)
    if target is not None:
        assert calls == [1]  # the hook still runs
    if kind != "relu_hook":
        assert n_folded == 0
    assert n_fused == 0
