"""Squeeze-and-excitation (Hu et al. 2018, seed 004 ref. [5]): channel re-calibration by a global descriptor.

``y = x * sigmoid(W_2 ReLU(W_1 GAP(x) + b_1) + b_2)``: global average pooling squeezes every channel to one
number, a bottleneck of two 1x1(x1) convolutions (the paper's two fully connected layers, ``channels ->
channels // reduction -> channels``) excites, and the sigmoid weights scale each channel of ``x``. One code path
for 1D, 2D and 3D (:mod:`agseg.layers`).
"""

from __future__ import annotations

import torch
from torch import nn

from agseg.layers import AdaptiveAvgPool, Conv, check_spatial_dims

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation block.

    Args:
        spatial_dims: 1, 2 or 3.
        channels: channels of the input (and the output).
        reduction: bottleneck ratio ``r`` of the excitation (16, as Hu et al.); the hidden width is
            ``max(1, channels // reduction)``.

    Attributes:
        squeeze: global average pooling to ``(B, C, 1, ...)``.
        excite: ``Conv 1x1 (C -> C/r) - ReLU - Conv 1x1 (C/r -> C) - sigmoid``, biases initialised to zero.

    Shapes: ``(B, C, *spatial) -> (B, C, *spatial)``; :meth:`scale` returns the weights ``(B, C, 1, ...)`` in
    (0, 1).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
        hidden = max(1, channels // reduction)
        self.channels, self.hidden = channels, hidden
        self.squeeze = AdaptiveAvgPool[spatial_dims](1)
        self.excite = nn.Sequential(
            Conv[spatial_dims](channels, hidden, 1),
            nn.ReLU(inplace=True),
            Conv[spatial_dims](hidden, channels, 1),
            nn.Sigmoid(),
        )
        # Zero biases (Keras' default, the framework of seed 004): a hidden unit is then active for a sample or for
        # its mirror image in the squeezed space, so no unit starts dead for a whole batch of batch-normalised
        # features (their squeezed means sum to zero over the batch).
        for conv in (self.excite[0], self.excite[2]):
            nn.init.zeros_(conv.bias)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel weights ``(B, C, 1, ...)`` in (0, 1)."""
        return self.excite(self.squeeze(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)
