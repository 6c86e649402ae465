"""Batch-norm folding: the folded net computes the original's function, and the original is left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import agseg
from agseg.nets.fuse import fold_batchnorm


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
