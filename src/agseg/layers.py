"""Layer factories picked by ``spatial_dims``: one code path for 2D and 3D.

Every block and net in agseg takes ``spatial_dims`` as its first argument and gets its layers from the
tables below (``Conv[spatial_dims]``), as MONAI's ``networks/layers/factories.py`` does, so there is no
``if dim == 3`` branch and no duplicated 2D/3D file anywhere in the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveAvgPool",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dropout",
    "InstanceNorm",
    "MaxPool",
    "check_spatial_dims",
    "interp_mode",
    "make_norm",
    "resize_to",
]


def _dispatch_mode_active() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - a torch without it: take PyTorch's own path
        return True
    return _get_current_dispatch_mode() is not None


def _tracing() -> bool:
    """TorchScript, ``torch.jit.trace``, ``torch.compile`` or ``torch.export`` at work (see :func:`_compiling`)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_scripting() or torch.jit.is_tracing() or _compiling() or exporting()


def _onednn_ok(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, zero_padded: bool) -> bool:
    """Whether :class:`Conv3d` takes oneDNN for this call (see there)."""
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return (
        zero_padded
        and input.dim() == 5
        and input.device.type == "cpu"
        and input.dtype == torch.float32
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not _tracing()
        and not _dispatch_mode_active()
        and not _functorch_wrapped(*tensors)
        and not _dual(*tensors)
    )


def _functorch_wrapped(*tensors: torch.Tensor) -> bool:
    """Whether a ``torch.func`` transform (grad, vmap, jvp, ...) is running on these tensors: there :class:`Conv3d`
    computes what ``nn.Conv3d`` does, as its oneDNN autograd Function does not support the transforms."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is not None and any(wrapped(t) for t in tensors)


def _dual(*tensors: torch.Tensor) -> bool:
    """Whether forward-mode AD (``torch.autograd.forward_ad`` dual tensors) runs through these tensors: the oneDNN
    autograd Function has no ``jvp``, so there :class:`Conv3d` computes what ``nn.Conv3d`` does."""
    from torch.autograd import forward_ad

    if getattr(forward_ad, "_current_level", -1) < 0:  # no dual level open: no tangent can exist
        return False
    return any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _native_conv_picked(input: torch.Tensor, weight: torch.Tensor, stride, dilation, groups: int) -> bool:
    """Whether PyTorch's float32 CPU heuristic (``ConvParams::use_mkldnn``, torch 2.x) picks its native kernel."""
    n, c, d, h = input.shape[:4]
    strided, dilated = any(s != 1 for s in stride), any(v != 1 for v in dilation)
    not_1x1 = weight.shape[-1] != 1 or weight.shape[-2] != 1
    first = strided or dilated or n >= 16 or not_1x1 or torch.get_num_threads() > 1
    second = groups > 1 or (weight.shape[-1] > 3 and weight.shape[-2] > 3) or n > 1 or n * c * d * h > 20480
    return not (first and second)


class _OneDNNConv3dFunction(torch.autograd.Function):
    """``torch.mkldnn_convolution`` with a backward that stays on oneDNN (see :class:`Conv3d`)."""

    @staticmethod
    def forward(ctx, input, weight, bias, padding, stride, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(input, weight)
        ctx.conf = (tuple(padding), tuple(stride), tuple(dilation), int(groups), bias is not None)
        return torch.mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        input, weight = ctx.saved_tensors
        padding, stride, dilation, groups, has_bias = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        g, x = grad_output, input
        # create_graph (a gradient of a gradient): dense tensors, whose convolution_backward is differentiable
        onednn = not torch.is_grad_enabled() and _native_conv_picked(input, weight, stride, dilation, groups)
        if onednn:  # oneDNN tensors always take oneDNN's backward
            g, x = grad_output.contiguous().to_mkldnn(), input.contiguous().to_mkldnn()
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            g, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, dilation, False,
            [0] * len(padding), groups, mask,
        )  # fmt: skip
        if grad_input is not None and grad_input.is_mkldnn:
            fmt = torch.channels_last_3d if input.is_contiguous(memory_format=torch.channels_last_3d) else None
            grad_input = grad_input.to_dense()
            grad_input = grad_input.contiguous(memory_format=fmt) if fmt is not None else grad_input
        return grad_input, grad_weight, grad_bias, None, None, None, None


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that takes oneDNN's kernel for float32 on the CPU where PyTorch's heuristic does not.

    PyTorch picks its native ``slow_conv3d`` for a float32 batch of one when ``N * C * D * H <= 20480`` and the kernel
    is at most 3 wide (a rule tuned on 2D, ``ConvParams::use_mkldnn``): at the coarse levels of a 3D U-Net (e.g.
    1x64x16^3, 3x3x3) that path is about 3x slower than oneDNN (15 vs 47 ms on this machine), so 3D inference of one
    volume, the usual case, ran mostly there. This class calls ``torch.mkldnn_convolution`` directly for batched
    float32 CPU inputs outside autocast (where bf16 already goes to oneDNN), and computes what ``nn.Conv3d`` does
    otherwise (CUDA, other dtypes, unbatched inputs, non-zero padding modes, tracing, export, TorchScript, and
    dispatch modes such as the FLOP counter). Same parameters and state dict as ``nn.Conv3d``; outputs equal up to
    float rounding (``tests/test_layers.py``). ``torch.fx`` traces into it (it is not a ``torch.nn`` leaf).

    The backward pass has the same problem: autograd sends ``torch.mkldnn_convolution``'s gradient to
    ``aten::convolution_backward``, which applies the same heuristic and runs the native kernel's backward at those
    levels, 4-5x slower than oneDNN's (1x64x16^3 -> 64: 55 vs 14 ms; 1x16x32^3 -> 32: 125 vs 24 ms). Where the
    heuristic would pick the native kernel, :class:`_OneDNNConv3dFunction` hands ``convolution_backward`` oneDNN
    tensors, which always take oneDNN's backward; elsewhere it calls ``convolution_backward`` as autograd would.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: explicit zero padding (not "same"/"valid", not reflect/replicate/circular): what oneDNN is called with
        self._zero_padded = self.padding_mode == "zeros" and not isinstance(self.padding, str)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript compiles nothing of this branch; an `and` it would)
            if _onednn_ok(input, weight, bias, self._zero_padded):
                if torch.is_grad_enabled() and (
                    input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
                ):
                    return _OneDNNConv3dFunction.apply(
                        input, weight, bias, self.padding, self.stride, self.dilation, self.groups
                    )
                return torch.mkldnn_convolution(
                    input, weight, bias, self.padding, self.stride, self.dilation, self.groups
                )
        if self.padding_mode != "zeros":  # nn.Conv3d's own computation (scriptable: no super() call)
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv3d(padded, weight, bias, self.stride, (0, 0, 0), self.dilation, self.groups)
        return F.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


Conv: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: Conv3d}
ConvTranspose: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BatchNorm: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
InstanceNorm: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
MaxPool: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AvgPool: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
AdaptiveAvgPool: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
Dropout: dict[int, type[nn.Module]] = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}

_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}
NORMS = ("batch", "instance", "none")


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 1, 2 or 3, else raise a ``ValueError`` that says so."""
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer by name: ``"batch"``, ``"instance"`` (affine) or ``"none"`` (identity)."""
    if norm == "batch":
        return BatchNorm[spatial_dims](channels)
    if norm == "instance":
        return InstanceNorm[spatial_dims](channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def interp_mode(spatial_dims: int) -> str:
    """The linear interpolation mode for ``spatial_dims`` (``linear``, ``bilinear`` or ``trilinear``)."""
    return _INTERP[check_spatial_dims(spatial_dims)]


def _compiling() -> bool:
    """True while torch.compile / torch.export traces (``torch.compiler.is_compiling`` from torch 2.3)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "linear") -> torch.Tensor:
    """Resample ``x`` of shape ``(B, C, *spatial)`` to ``size``; a no-op when the size already matches.

    Args:
        x: tensor ``(B, C, *spatial)``.
        size: target spatial size.
        mode: ``"linear"`` (bi/trilinear, picked from the number of spatial dims) or ``"nearest"``.
    """
    if _compiling():
        # traced for export / compile: keep sizes symbolic (int() would freeze them at the example's) and always
        # resample (same-size bi/trilinear resampling with align_corners=False is the identity), so the graph holds
        # for every input size, not only those whose internal sizes happen to match as the example's did
        size = tuple(size)
    else:
        size = tuple(int(s) for s in size)
        if tuple(x.shape[2:]) == size:
            return x
    if mode == "linear":
        return F.interpolate(x, size=size, mode=interp_mode(x.ndim - 2), align_corners=False)
    return F.interpolate(x, size=size, mode=mode)
