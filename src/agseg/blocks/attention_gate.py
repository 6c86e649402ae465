"""The additive grid attention gate of Oktay, Schlemper et al. (seed 001 sec. 2, seed 003 eq. 1-2).

For skip features ``x`` (``F_l`` channels, fine grid) and a gating signal ``g`` (``F_g`` channels, coarser grid):

    theta_x = W_x * x            conv with kernel = stride = ``sub_sample``, no bias: x brought to g's grid
    phi_g   = W_g * g + b_xg     1x1(x1) conv, resampled (bi/trilinear) to theta_x's grid when sizes differ
    q       = psi^T ReLU(theta_x + phi_g) + b_psi              (eq. 1)
    alpha   = sigmoid(q)                                       (eq. 2), resampled (bi/trilinear) to x's grid
    y       = BN(W_out * (alpha * x))                          output 1x1(x1) conv + batch norm

``alpha`` lies in [0, 1]. With ``init="open"`` (default) the gate starts open, as the papers ask ("gating
parameters are initialised so that attention gates pass through feature vectors at all spatial
locations"): psi's bias is ``open_bias`` (3.0, sigmoid = 0.953) and its weights are scaled down by
``open_gain`` so that ``alpha`` is about 0.95 everywhere while every parameter still gets a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agseg.blocks import ops
from agseg.blocks.conv import ConvNormAct
from agseg.layers import Conv, check_spatial_dims, make_norm, resize_to

__all__ = ["AttentionGateBlock", "GridAttentionGate"]

GATE_INITS = ("open", "default")


class GridAttentionGate(nn.Module):
    """One additive grid attention gate (one attention map per location).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the skip features ``x`` (``F_l``).
        gating_channels: channels of the gating signal ``g`` (``F_g``).
        inter_channels: intermediate channels ``F_int``; default ``in_channels // 2`` (at least 1).
        sub_sample: factor by which ``theta`` sub-samples ``x`` (kernel = stride); 1 gates at full resolution.
            An int, or one per axis (e.g. ``(1, 2, 2)`` where the skip's grid and the gating grid share the first
            axis, as with anisotropic pooling).
        init: ``"open"`` (alpha about 0.95 at init) or ``"default"`` (PyTorch's initialisation).
        open_bias: psi bias for the open initialisation.
        open_gain: factor applied to psi's default weights for the open initialisation.
        output_transform: apply the output 1x1 conv + norm to ``alpha * x`` (the authors' ``W``).
        norm: norm of the output transform (``"batch"``, ``"instance"``, ``"none"``).

    Shapes: ``forward(x (B, F_l, *S), g (B, F_g, *S_g)) -> (y (B, F_l, *S), alpha (B, 1, *S))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        sub_sample: int | Sequence[int] = 2,
        init: str = "open",
        open_bias: float = 3.0,
        open_gain: float = 0.01,
        output_transform: bool = True,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if init not in GATE_INITS:
            raise ValueError(f"unknown gate init {init!r}; valid: {', '.join(GATE_INITS)}")
        factors = (sub_sample,) * spatial_dims if isinstance(sub_sample, int) else tuple(int(s) for s in sub_sample)
        if len(factors) != spatial_dims or min(factors) < 1:
            raise ValueError(f"sub_sample must be >= 1 (an int or {spatial_dims} of them), got {sub_sample}")
        if not isinstance(sub_sample, int):
            sub_sample = factors
        inter = max(1, in_channels // 2) if inter_channels is None else inter_channels
        self.in_channels, self.gating_channels, self.inter_channels = in_channels, gating_channels, inter
        self.sub_sample = sub_sample
        self.theta = Conv[spatial_dims](in_channels, inter, sub_sample, stride=sub_sample, bias=False)
        self.phi = Conv[spatial_dims](gating_channels, inter, 1, bias=True)
        self.psi = Conv[spatial_dims](inter, 1, 1, bias=True)
        self.out: nn.Module = (
            nn.Sequential(Conv[spatial_dims](in_channels, in_channels, 1), make_norm(norm, spatial_dims, in_channels))
            if output_transform
            else nn.Identity()
        )
        if init == "open":
            with torch.no_grad():
                self.psi.weight.mul_(open_gain)
                self.psi.bias.fill_(open_bias)

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` ``(B, 1, *x_spatial)`` in [0, 1] for skip ``x`` and gate ``g``."""
        theta_x = self.theta(x)
        phi_g = resize_to(self.phi(g), theta_x.shape[2:])
        q = self.psi(F.relu(theta_x + phi_g))
        return resize_to(torch.sigmoid(q), x.shape[2:])

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.attention(x, g)
        return self.out(alpha * x), alpha


class AttentionGateBlock(nn.Module):
    """``heads`` parallel grid attention gates on one skip: multi-dimensional attention (seed 003 sec. 2.2.1).

    Each sub-gate ``k`` gives ``alpha_k * x``; with ``heads > 1`` the outputs are concatenated and fused by a
    1x1(x1) conv + norm + ReLU back to ``in_channels`` (the authors' CT models use two heads). With one head
    the block is a single :class:`GridAttentionGate`.

    Shapes: ``forward(x (B, F_l, *S), g) -> (y (B, F_l, *S), alpha (B, heads, *S))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        heads: int = 1,
        sub_sample: int | Sequence[int] = 2,
        init: str = "open",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"attention_heads must be >= 1, got {heads}")
        self.heads = heads
        self.gates = nn.ModuleList(
            GridAttentionGate(
                spatial_dims, in_channels, gating_channels, inter_channels, sub_sample=sub_sample, init=init, norm=norm
            )
            for _ in range(heads)
        )
        self.fuse: nn.Module = (
            ConvNormAct(spatial_dims, in_channels * heads, in_channels, 1, norm=norm) if heads > 1 else nn.Identity()
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [gate(x, g) for gate in self.gates]
        y = ops.cat([o[0] for o in outs], dim=1) if self.heads > 1 else outs[0][0]
        return self.fuse(y), ops.cat([o[1] for o in outs], dim=1)
