"""Sliding-window inference agrees with whole-image inference; small inputs are padded; labels from logits."""

from __future__ import annotations

import torch

import agseg
from agseg.inference.sliding import logits_to_labels, logits_to_probs, predict_logits, predict_with_attention


def test_sliding_window_matches_whole_image_for_a_pointwise_net():
    # a 1x1 conv net is translation-equivariant without borders: windows must reproduce the whole image exactly
    net = torch.nn.Conv2d(1, 2, 1).eval()
    x = torch.randn(1, 1, 40, 52)
    whole = predict_logits(net, x)
    windows = predict_logits(net, x, patch_size=(16, 16), overlap=0.25)
    assert windows.shape == (1, 2, 40, 52)
    torch.testing.assert_close(windows, whole, rtol=1e-5, atol=1e-5)


def test_unet_sliding_window_close_to_whole_image_and_small_inputs_padded():
    net = agseg.create_model("unet", spatial_dims=3, channels=(4, 8, 16), out_channels=3).eval()
    x = torch.randn(1, 20, 24, 18)
    out = predict_logits(net, x, patch_size=(16, 16, 16))
    assert out.shape == (1, 3, 20, 24, 18)
    tiny = predict_logits(net, torch.randn(1, 3, 5, 4))
    assert tiny.shape == (1, 3, 3, 5, 4)


def test_attention_maps_on_the_image_grid_and_bf16():
    net = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16)).eval()
    x = torch.randn(1, 33, 30)
    logits, maps = predict_with_attention(net, x, amp_dtype=torch.bfloat16)
    assert logits.dtype == torch.float32 and logits.shape == (1, 1, 33, 30)
    assert maps["level1"].shape == (1, 1, 33, 30)
    ref = predict_logits(net, x)
    assert (logits_to_labels(logits) == logits_to_labels(ref)).float().mean() > 0.95


def test_probs_and_labels():
    two = torch.tensor([[[1.0, -2.0]], [[0.0, 3.0]]])[None].permute(0, 1, 2, 3)  # (1, 2, 1, 2)
    assert logits_to_labels(two).tolist() == [[[0, 1]]]
    torch.testing.assert_close(logits_to_probs(two).sum(1), torch.ones(1, 1, 2))
    one = torch.tensor([[[[0.5, -0.5]]]])
    assert logits_to_labels(one).tolist() == [[[1, 0]]]
