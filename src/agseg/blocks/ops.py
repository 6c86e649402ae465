"""Tensor operations the nets share where PyTorch's own is measurably slow on CPU.

:func:`cat` is ``torch.cat`` whose backward hands each input a *dense* gradient in that input's memory format.
``torch.cat``'s backward returns narrow views of the output gradient; a batch norm (or convolution) that produced
one of the inputs then runs its backward on a strided tensor that is neither contiguous nor channels-last, and
PyTorch's CPU kernels take a slow generic path for it: on this machine a BatchNorm2d backward at 8x16x256x256 in
bf16 took 177 ms on such a view and 16 ms on a dense copy. Nested decoders (ANU-Net / UNet++) concatenate every
full-resolution node several times, so there the copy made most of a training step's batch-norm time disappear
(``benchmarks/bench_models.py`` and the test in ``tests/blocks/test_ops.py``). Forward values and gradient values
are exactly those of ``torch.cat``; only the gradient's layout changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["cat", "dense_grad"]


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format to give ``x``'s gradient: channels-last where ``x`` is (and is not also plain contiguous)."""
    if x.dim() in (4, 5) and not x.is_contiguous():
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


class _DenseGrad(torch.autograd.Function):
    """Identity forward; the backward makes the incoming gradient dense in the forward input's layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.layout = _layout(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous(memory_format=ctx.layout)


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, but the gradient that flows back through it is made dense (see the module docstring)."""
    return _DenseGrad.apply(x) if x.requires_grad and torch.is_grad_enabled() else x


def cat(tensors: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """``torch.cat(tensors, dim)`` whose backward gives every input a dense gradient."""
    return torch.cat([dense_grad(t) for t in tensors], dim=dim)
