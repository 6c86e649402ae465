"""Attention figures are written for 2D and 3D inputs and are real PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import agseg
from agseg.inference.sliding import predict_with_attention
from agseg.viz.attention import central_slices, plot_attention, plot_attention_evolution


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def _coloured_fraction(rgb: np.ndarray) -> float:
    """Pixels whose channels differ by more than 40: the jet overlay (the image and contours are grey/green)."""
    return float(((rgb.max(-1) - rgb.min(-1)) > 40).mean())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_plot_attention_from_a_net(tmp_path, spatial_dims):
    net = agseg.create_model("attention_unet", spatial_dims=spatial_dims, channels=(4, 8, 16), attention_heads=2)
    shape = (32, 32) if spatial_dims == 2 else (16, 20, 18)
    image = torch.randn(1, *shape)
    _logits, maps = predict_with_attention(net, image)
    maps = {k: v[0].numpy() for k, v in maps.items()}
    assert sorted(maps) == ["level1"] and maps["level1"].shape == (2, *shape)  # one gated level, two heads
    label = np.zeros(shape, bool)
    label[(slice(4, 12),) * spatial_dims] = True
    att = _rgb(plot_attention(image.numpy(), maps, tmp_path / "att.png", label=label))
    plain = _rgb(plot_attention(image.numpy(), {}, tmp_path / "plain.png", label=label))
    # each head adds a column with the map over the image (measured: 619 vs 242 px wide in 2D, 632 vs 243 in 3D;
    # a quarter to a third of the pixels coloured by the overlay, about 1% without maps)
    assert att.shape[1] > 2 * plain.shape[1]
    assert _coloured_fraction(att) > 0.1 and _coloured_fraction(plain) < 0.05
    # over epochs: one panel per epoch, the map drawn on a fixed 0..1 scale (jet: 0 blue, 1 red)
    one = _rgb(plot_attention_evolution(image.numpy(), [(1, maps)], tmp_path / "evo1.png"))
    three = _rgb(plot_attention_evolution(image.numpy(), [(e, maps) for e in (1, 5, 10)], tmp_path / "evo3.png"))
    assert three.shape[1] > 2 * one.shape[1]
    closed = _rgb(plot_attention_evolution(image.numpy(), [(1, {"level1": np.zeros_like(maps["level1"])})],
                                           tmp_path / "closed.png")).reshape(-1, 3).mean(0)  # fmt: skip
    opened = _rgb(plot_attention_evolution(image.numpy(), [(1, {"level1": np.ones_like(maps["level1"])})],
                                           tmp_path / "open.png")).reshape(-1, 3).mean(0)  # fmt: skip
    assert closed[2] > closed[0] + 20 and opened[0] > opened[2] + 20


def test_central_slices_follow_the_focus():
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    focus = np.zeros_like(vol, bool)
    focus[3, 1, 2] = True
    s = central_slices(vol, focus)
    assert [a.shape for a in s] == [(5, 6), (4, 6), (4, 5)]
    np.testing.assert_array_equal(s[0], vol[3])
    with pytest.raises(ValueError, match="2D or 3D"):
        central_slices(np.zeros((2, 2, 2, 2)))
