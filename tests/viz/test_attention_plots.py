"""Attention figures are written for 2D and 3D inputs and are real PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import agseg
from agseg.inference.sliding import predict_with_attention
from agseg.viz.attention import central_slices, plot_attention, plot_attention_evolution


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_plot_attention_from_a_net(tmp_path, spatial_dims):
    net = agseg.create_model("attention_unet", spatial_dims=spatial_dims, channels=(4, 8, 16), attention_heads=2)
    shape = (32, 32) if spatial_dims == 2 else (16, 20, 18)
    image = torch.randn(1, *shape)
    _logits, maps = predict_with_attention(net, image)
    label = np.zeros(shape, bool)
    label[(slice(4, 12),) * spatial_dims] = True
    out = plot_attention(image.numpy(), {k: v[0].numpy() for k, v in maps.items()}, tmp_path / "att.png", label=label)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
    evo = plot_attention_evolution(image.numpy(), [(1, {k: v[0].numpy() for k, v in maps.items()})] * 3,
                                   tmp_path / "evo.png")  # fmt: skip
    assert evo.is_file()


def test_central_slices_follow_the_focus():
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    focus = np.zeros_like(vol, bool)
    focus[3, 1, 2] = True
    s = central_slices(vol, focus)
    assert [a.shape for a in s] == [(5, 6), (4, 6), (4, 5)]
    np.testing.assert_array_equal(s[0], vol[3])
    with pytest.raises(ValueError, match="2D or 3D"):
        central_slices(np.zeros((2, 2, 2, 2)))
