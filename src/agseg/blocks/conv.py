"""Convolution blocks shared by every net: conv-norm-act, the U-Net double convolution, up-sampling (with a
convolution, :class:`UpConv`, or without, :class:`Resize`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agseg.layers import Conv, ConvTranspose, check_spatial_dims, make_norm, resize_to

__all__ = ["UP_MODES", "ConvNormAct", "DoubleConv", "Resize", "UpConv"]

#: Up-sampling modes of :class:`UpConv`.
UP_MODES = ("interp", "nearest", "transpose")


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation and ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel (``padding = kernel_size // 2`` keeps the grid).
        stride: convolution stride.
        norm: ``"batch"``, ``"instance"`` or ``"none"``; the convolution has a bias only without a norm.
        act: apply ReLU.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str = "batch",
        act: bool = True,
    ) -> None:
        check_spatial_dims(spatial_dims)
        layers: list[nn.Module] = [
            Conv[spatial_dims](
                in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=norm == "none"
            ),
            make_norm(norm, spatial_dims, out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """The U-Net double convolution: (conv 3x3(x3), norm, ReLU) twice (thesis Table 3.1, seed 001).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        norm: str = "batch",
    ) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, mid, 3, norm=norm),
            ConvNormAct(spatial_dims, mid, out_channels, 3, norm=norm),
        )


class UpConv(nn.Module):
    """Up-sampling to a given grid followed by a convolution that changes the channels (thesis Table 3.1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarse input.
        out_channels: channels after the convolution (the U-Net halves them).
        mode: ``"interp"``: linear interpolation then a 3x3(x3) convolution with bias and no norm or
            activation (the thesis' "intermediate single convolution"); ``"nearest"``: the same with nearest
            neighbour up-sampling, which repeats every value ``scale`` times along each axis (FocusNet++'s "repeat
            the values ... and let convolutions learn their values", seed 004 sec. 2); ``"transpose"``: a transposed
            convolution with kernel = stride = ``scale``, resampled to the target grid when sizes are odd.
        scale: the up-sampling factor, an int or one per axis (the pool size it undoes, e.g. ``(1, 2, 2)`` for
            anisotropic 3D data); only the transposed convolution depends on it, interpolation always goes to
            ``size``.

    ``forward(x, size)`` returns ``(B, out_channels, *size)``; sizes not divisible by the scale are handled by
    interpolating to the skip connection's exact grid.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mode: str = "interp",
        scale: int | Sequence[int] = 2,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if mode not in UP_MODES:
            raise ValueError(f"unknown up-sampling mode {mode!r}; valid: {', '.join(UP_MODES)}")
        factors = (scale,) * spatial_dims if isinstance(scale, int) else tuple(int(s) for s in scale)
        if len(factors) != spatial_dims or min(factors) < 1:
            raise ValueError(f"scale must be an int >= 1 or {spatial_dims} of them, got {scale!r}")
        self.mode = mode
        if mode in ("interp", "nearest"):
            self.conv = Conv[spatial_dims](in_channels, out_channels, 3, padding=1)
        else:
            kernel = scale if isinstance(scale, int) else factors
            self.conv = ConvTranspose[spatial_dims](in_channels, out_channels, kernel, stride=kernel)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        if self.mode == "interp":
            return self.conv(resize_to(x, size))
        if self.mode == "nearest":
            return self.conv(resize_to(x, size, mode="nearest"))
        return resize_to(self.conv(x), size)


class Resize(nn.Module):
    """Parameter-free up-sampling to a given grid: linear (bi/trilinear) interpolation, channels unchanged.

    UNet++ (Zhou et al. 2018) up-samples the coarser node this way before the concatenation; :class:`UpConv` adds a
    convolution after it. Same call as :class:`UpConv`: ``forward(x (B, C, *S), size) -> (B, C, *size)``.
    """

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return resize_to(x, size)
