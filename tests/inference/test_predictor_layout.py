"""The Predictor holds the net channels-last (faster CPU convolutions) without touching the caller's net, and
predicts what the contiguous net predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agseg.data.io import Geometry
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.inference.bundle import ModelBundle
from agseg.inference.predictor import Predictor


def _bundle(dims: int) -> ModelBundle:
    kw = {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16]}
    return ModelBundle("attention_unet", kw, Preprocessor(PreprocessConfig(intensity="none")).to_dict())


def _conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in net.parameters() if p.dim() in (4, 5)]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("fold_bn", [True, False])
def test_channels_last_predicts_as_contiguous_and_leaves_the_callers_net(dims, fold_bn):
    torch.manual_seed(0)
    bundle = _bundle(dims)
    net = bundle.build().eval()
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    shape = (16,) * dims
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    g = Geometry.identity(shape, format="png" if dims == 2 else "nifti")
    fast = Predictor(net, bundle, device="cpu", amp="off", fold_bn=fold_bn, channels_last=True)
    plain = Predictor(net, bundle, device="cpu", amp="off", fold_bn=fold_bn, channels_last=False)
    assert all(w.is_contiguous(memory_format=fmt) for w in _conv_weights(fast.model))
    assert all(w.is_contiguous() for w in _conv_weights(plain.model))
    assert all(w.is_contiguous() for w in _conv_weights(net))  # the caller's net keeps its layout
    p_fast, p_plain = fast.probabilities(x, g)[0], plain.probabilities(x, g)[0]
    ref = torch.softmax(net(torch.from_numpy(x)[None]), 1)[0].detach().numpy()
    np.testing.assert_allclose(p_fast, ref, atol=1e-5)
    np.testing.assert_allclose(p_plain, ref, atol=1e-5)


def test_a_channels_last_net_is_used_as_it_is():
    """A net already channels-last (a trainer's) is not copied again."""
    bundle = _bundle(2)
    net = bundle.build().eval().to(memory_format=torch.channels_last)
    assert Predictor(net, bundle, device="cpu", amp="off", fold_bn=False).model is net


def test_a_net_without_batch_norm_is_copied_not_converted_in_place():
    """fold_bn=True makes no copy of a net without batch norms: the layout copy must still leave it alone."""
    kw = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "norm": "instance"}
    bundle = ModelBundle("unet", kw, Preprocessor(PreprocessConfig(intensity="none")).to_dict())
    net = bundle.build().eval()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    fast = Predictor(net, bundle, device="cpu", amp="off")
    assert fast.model is not net and all(w.is_contiguous() for w in _conv_weights(net))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(fast.model))
