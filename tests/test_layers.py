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


@pytest.mark.parametrize(
    ("shape", "conv_kw", "fmt"),
    [
        ((1, 8, 8, 8, 8), {"kernel_size": 3, "padding": 1}, None),  # PyTorch's heuristic: native kernel
        ((1, 8, 8, 8, 8), {"kernel_size": 3, "padding": 1}, torch.channels_last_3d),
        ((1, 6, 8, 8, 8), {"kernel_size": 2, "stride": 2, "bias": False}, torch.channels_last_3d),  # a gate's theta
        ((1, 6, 8, 8, 8), {"kernel_size": 1}, None),  # 1x1, batch of one, one thread: native too
        ((2, 4, 6, 6, 6), {"kernel_size": 3, "padding": 1}, None),  # a batch of two: oneDNN either way
        ((1, 40, 24, 24, 8), {"kernel_size": 3, "padding": 1}, None),  # N*C*D*H > 20480: oneDNN either way
    ],
)
def test_conv3d_gradients_equal_nn_conv3d(shape, conv_kw, fmt):
    torch.manual_seed(0)
    cin = shape[1]
    ours, ref = Conv3d(cin, 5, **conv_kw), nn.Conv3d(cin, 5, **conv_kw)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(shape)
    x = x.contiguous(memory_format=fmt) if fmt is not None else x
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-3)
    if ours.bias is not None:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-3)
    if fmt is not None:
        assert xa.grad.is_contiguous(memory_format=fmt), "the input's gradient keeps the input's layout"


def test_the_backward_pass_stays_on_onednn_where_pytorch_takes_its_slow_path():
    import agseg.layers as layers

    ours, _ = _pair()
    x = torch.randn(1, 8, 8, 8, 8, requires_grad=True)  # N*C*D*H = 512: PyTorch's heuristic picks its native kernel
    assert layers._native_conv_picked(x, ours.weight, ours.stride, ours.dilation, ours.groups)
    # convolution_backward runs the native kernel's backward inside it (no op of its own in the profile); the
    # oneDNN tensors handed to it are what sends it to oneDNN instead
    assert "aten::to_mkldnn" in _ops(lambda: ours(x).sum().backward())
    big = torch.randn(1, 40, 24, 24, 8, requires_grad=True)  # N*C*D*H > 20480: PyTorch takes oneDNN itself
    conv = Conv3d(40, 4, 3, padding=1)
    assert not layers._native_conv_picked(big, conv.weight, conv.stride, conv.dilation, conv.groups)
    assert "aten::to_mkldnn" not in _ops(lambda: conv(big).sum().backward())


def test_a_frozen_conv3d_still_passes_gradients_to_its_input():
    ours, ref = _pair()
    ours.requires_grad_(False)
    ref.requires_grad_(False)
    x = torch.randn(1, 8, 8, 8, 8, requires_grad=True)
    (ga,) = torch.autograd.grad(ours(x).sum(), x)
    (gb,) = torch.autograd.grad(ref(x).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4)
    assert ours.weight.grad is None


def test_a_gradient_of_a_gradient_works_as_for_nn_conv3d():
    ours, ref = _pair()
    x = torch.randn(1, 8, 6, 6, 6)
    out = []
    for conv in (ours, ref):
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(conv(xi).square().sum(), xi, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), conv.weight)
        out.append(gg)
    torch.testing.assert_close(out[0], out[1], rtol=1e-3, atol=1e-3)


def test_torch_func_transforms_work_as_for_nn_conv3d():
    """torch.func.grad and vmap (per-sample gradients, as in differential privacy) used to fail on the oneDNN autograd
    Function ("must override the setup_context staticmethod")."""
    from torch.func import functional_call, grad, vmap

    ours, ref = _pair()
    x = torch.randn(3, 8, 6, 6, 6)
    params = {k: v.detach() for k, v in ours.named_parameters()}

    def per_sample(conv):
        def loss(p, xi):
            return functional_call(conv, p, (xi[None],)).square().sum()

        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    a, b = per_sample(ours), per_sample(ref)
    for k in params:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        vmap(lambda xi: ours(xi[None]))(x), vmap(lambda xi: ref(xi[None]))(x), rtol=1e-4, atol=1e-4
    )


def test_torch_func_grad_of_the_bias_alone_and_forward_mode_dual_tensors_work_as_for_nn_conv3d():
    """Only the bias transformed by torch.func (input and weight plain tensors), or a forward-mode dual tensor, used
    to reach the oneDNN autograd Function, which supports neither."""
    from torch.autograd import forward_ad
    from torch.func import functional_call, grad

    ours, ref = _pair()
    x = torch.randn(2, 8, 6, 6, 6)
    w, b = ours.weight.detach(), ours.bias.detach()

    def bias_grad(conv):
        return grad(lambda bias: functional_call(conv, {"weight": w, "bias": bias}, (x,)).square().sum())(b)

    torch.testing.assert_close(bias_grad(ours), bias_grad(ref), rtol=1e-4, atol=1e-3)
    tangent = torch.randn_like(x)
    tangents = []
    for conv in (ours, ref):
        with forward_ad.dual_level():
            out = conv(forward_ad.make_dual(x, tangent))
            tangents.append(forward_ad.unpack_dual(out).tangent)
    torch.testing.assert_close(tangents[0], tangents[1], rtol=1e-4, atol=1e-4)
