"""Batch-norm folding for inference: each ``Conv -> BatchNorm`` pair becomes one convolution.

In eval mode a batch norm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so it
can be folded into the weights and bias of the convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``
does the arithmetic). On the CPU this saves one full pass over every feature map per layer: the U-Net family is
memory-bound there, so inference gets measurably faster (``benchmarks/speed.py``) with outputs equal up to float
rounding (``tests/nets/test_fuse.py``).

Only pairs that are adjacent children of an ``nn.Sequential`` are folded (every ``ConvNormAct`` of agseg and the
gates' ``Conv, BN`` pairs), and only plain convolutions (a subclass that overrides ``forward`` is not one);
anything else is left as it is, so the folded net computes the same function for every
model, ours or not. Transposed convolutions and norms without running statistics are skipped.

:func:`fuse_conv_relu` goes one step further on the CPU: a convolution followed (after folding) by a ReLU becomes one
oneDNN call with the ReLU as a post-op (``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own
``torch.compile`` emits for this pattern on CPUs). Eager PyTorch runs the ReLU as a separate pass over the feature
map, and on a CPU with AMX that pass is about a third of a bf16 U-Net's inference time (profile of the 2D
4x1x256x256 U-Net: ``clamp_min_`` 29 % of the time, the convolutions 43 %). Outputs are the same as the convolution
and ReLU computed apart (``tests/nets/test_fuse.py``).
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from agseg.layers import Conv3d, _dispatch_mode_active, _tracing

__all__ = ["ConvReLU", "fold_batchnorm", "fuse_conv_relu"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _untouched(module: nn.Module) -> bool:
    """No hooks and no parametrizations on ``module``: a rewrite that drops it loses nothing it was asked to do.

    ``weight_norm`` / ``spectral_norm`` recompute the weight (in a forward pre-hook, or as a parametrization) from
    other tensors, so a folded weight would be overwritten or missing; a forward hook would no longer be called."""
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
        or torch.nn.utils.parametrize.is_parametrized(module)
    )


def _plain_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` computes a plain convolution: an ``nn.Conv1d/2d/3d`` (or agseg's ``Conv3d``) whose class
    keeps their ``forward``, with no hooks or parametrizations (:func:`_untouched`). A subclass that changes it
    (weight standardisation, a scaled output, ...) is neither folded nor fused, since both rewrite the arithmetic of a
    plain convolution."""
    base = next((c for c in _CONVS if isinstance(conv, c)), None)
    if base is None:
        return False
    cls = type(conv)
    plain = cls.forward is base.forward and cls._conv_forward in (base._conv_forward, Conv3d._conv_forward)
    return plain and _untouched(conv)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        _plain_conv(conv)
        and type(norm) in _NORMS
        and _untouched(norm)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every adjacent ``Conv -> BatchNorm`` pair folded into the conv.

    Args:
        model: any module; it is not changed unless ``inplace``.
        inplace: fold in ``model`` itself (saves the copy of a large net).

    Returns:
        ``(folded model in eval mode, number of batch norms folded)``. The folded model's state dict differs from
        the original's (the norms are gone), so save the original, not this one.
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    folded = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, norm = seq._modules[a], seq._modules[b]
            if conv is None or norm is None or not _foldable(conv, norm):
                continue
            seq._modules[a] = fuse_conv_bn_eval(conv, norm)
            seq._modules[b] = nn.Identity()
            folded += 1
    return net, folded


def _pointwise_op():
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch built without oneDNN's fused ops
        return None


def _onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT; torch's own check)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:  # pragma: no cover
        return False


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN convolution with a ReLU post-op, for inference on the CPU.

    The fused kernel is taken for batched 2D/3D inputs on the CPU in float32, or in bf16 (bf16 tensors, or float32
    ones under CPU bf16 autocast, cast here as autocast would cast the convolution's inputs), when no gradient is
    asked for, with zero padding, and outside tracing, export and dispatch modes (the FLOP counter). Otherwise
    (training, CUDA, fp16, unbatched inputs, ONNX export) it computes ``F.relu(conv(x))`` with the wrapped
    convolution, so it is always the same function. Built by :func:`fuse_conv_relu`.
    """

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def _fused_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        conv, w = self.conv, self.conv.weight
        if x.device.type != "cpu" or x.dim() != w.dim() or x.dim() not in (4, 5):
            return None
        bias_grad = conv.bias is not None and conv.bias.requires_grad
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or bias_grad):
            return None
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return None
        if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return None
        if _tracing() or _dispatch_mode_active() or _pointwise_op() is None:
            return None
        if torch.is_autocast_enabled("cpu"):
            bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and x.dtype in (torch.float32, torch.bfloat16)
            dtype = torch.bfloat16 if bf16 else None
        else:
            dtype = x.dtype if x.dtype == w.dtype and x.dtype in (torch.float32, torch.bfloat16) else None
        if dtype == torch.bfloat16 and not _onednn_bf16():  # oneDNN refuses bf16 there; PyTorch's own kernel works
            return None
        return dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = None if torch.jit.is_scripting() else self._fused_dtype(x)
        if dtype is None:
            return F.relu(self.conv(x))
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.to(dtype)
        return _pointwise_op()(
            x.to(dtype), conv.weight.to(dtype), bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, "relu", [], "",
        )  # fmt: skip


def fuse_conv_relu(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with each convolution that a ReLU follows made one :class:`ConvReLU`.

    Within every ``nn.Sequential``, a ``Conv1d/2d/3d`` followed by a ``ReLU``, with only ``nn.Identity`` between them
    (where :func:`fold_batchnorm` removed a norm), is replaced by a ``ConvReLU`` and the ReLU by ``nn.Identity``.
    Run it after :func:`fold_batchnorm`; a net whose norms are still there has no such pair and is unchanged.

    Returns:
        ``(fused model in eval mode, number of pairs fused)``.
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    fused = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for i, name in enumerate(names):
            conv = seq._modules[name]
            if not _plain_conv(conv):
                continue
            j = i + 1
            while j < len(names) and type(seq._modules[names[j]]) is nn.Identity:
                j += 1
            if j < len(names) and type(seq._modules[names[j]]) is nn.ReLU and _untouched(seq._modules[names[j]]):
                seq._modules[name] = ConvReLU(conv)
                seq._modules[names[j]] = nn.Identity()
                fused += 1
    return net, fused
