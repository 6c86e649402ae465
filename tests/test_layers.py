"""agseg.layers.Conv3d: oneDNN for float32 CPU inputs, PyTorch's own path elsewhere; the same function either way."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from agseg.layers import Conv, Conv3d


def _ops(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def _pair():
    torch.manual_seed(0)
    ours = Conv3d(8, 8, 3, padding=1)
    ref = nn.Conv3d(8, 8, 3, padding=1)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_conv3d_is_nn_conv3d_with_the_same_state_and_outputs():
    ours, ref = _pair()
    assert Conv[3] is Conv3d and isinstance(ours, nn.Conv3d) and ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(1, 8, 8, 8, 8, requires_grad=True)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)


def test_a_small_float32_batch_of_one_takes_onednn_where_pytorch_takes_its_slow_path():
    ours, ref = _pair()
    x = torch.randn(1, 8, 8, 8, 8)  # N*C*D*H = 512 <= 20480: PyTorch's heuristic picks slow_conv3d
    with torch.no_grad():
        assert "aten::slow_conv3d_forward" in _ops(lambda: ref(x))
        used = _ops(lambda: ours(x))
    assert "aten::mkldnn_convolution" in used and "aten::slow_conv3d_forward" not in used


def test_pytorchs_path_under_autocast_and_dispatch_modes():
    ours, _ = _pair()
    x = torch.randn(1, 8, 8, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x).dtype == torch.bfloat16  # autocast still applies
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ours(x)
    assert counter.get_total_flops() == 2 * 8 * 8 * 27 * 8**3  # the FLOP counter sees the convolution


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_unbatched_inputs_padding_modes_and_torchscript_work_as_for_nn_conv3d():
    torch.manual_seed(0)
    for mode in ("zeros", "reflect"):
        ours = Conv3d(2, 3, 3, padding=1, padding_mode=mode)
        ref = nn.Conv3d(2, 3, 3, padding=1, padding_mode=mode)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(2, 6, 6, 6)  # unbatched (C, D, H, W)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    scripted = torch.jit.script(ours)
    x = torch.randn(1, 2, 6, 6, 6)
    torch.testing.assert_close(scripted(x), ref(x), rtol=1e-4, atol=1e-5)
