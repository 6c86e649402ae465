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

The thesis gate (seed 000 Table 3.2 and the text around it) differs in four places, each a switch here and all
of them together ``GridAttentionGate.thesis(...)`` / ``gate_style="thesis"`` in the nets:

    theta_x = BN(W_x * x)        1x1(x1) conv + BN at x's resolution, then max pooling by ``sub_sample``
                                 (``sub_sample_mode="maxpool"``; multi gating) or none (``sub_sample=1``: single
                                 gating keeps x at full resolution and up-samples g)
    phi_g   = BN(W_g * g)        up-sampled to theta_x's grid
    q       = BN(psi^T ReLU(theta_x + phi_g))                  (``gate_norm=True``: BN after each conv)
    alpha   = sigmoid(q), up-sampled to x's grid
    y       = alpha * x          no output transform (``output_transform=False``)

with ``F_int`` the skip's channels (the nets' ``inter_ratio=1``: "guided by the number F_int of feature maps that
is expected from each skip connection"). The thesis does not give the convolutions' kernels (1x1, as Oktay's, is
our choice) nor an initialisation; with ``gate_norm`` the open initialisation sets psi's batch norm to weight
``open_gain`` and bias ``open_bias`` (a bias before a batch norm has no effect). With ``norm="instance"`` psi's
one-channel map is normalised within each image, so a gate can never be entirely open or shut: use batch norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agseg.blocks import ops
from agseg.blocks.conv import ConvNormAct
from agseg.layers import Conv, MaxPool, check_spatial_dims, make_norm, resize_to

__all__ = ["AttentionGateBlock", "GridAttentionGate"]

GATE_INITS = ("open", "default")
SUB_SAMPLE_MODES = ("conv", "maxpool")
GATE_STYLES = ("oktay", "thesis")


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
        output_transform: apply the output 1x1 conv + norm to ``alpha * x`` (the authors' ``W``); the thesis: no.
        norm: norm of the output transform and, with ``gate_norm``, of theta, phi and psi.
        gate_norm: a norm after each of theta, phi and psi (the thesis, Table 3.2).
        sub_sample_mode: how theta brings ``x`` to the gating grid: ``"conv"`` (a strided conv, kernel = stride =
            ``sub_sample``: Oktay) or ``"maxpool"`` (1x1 conv, then max pooling: the thesis' multi gating).

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
        gate_norm: bool = False,
        sub_sample_mode: str = "conv",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if init not in GATE_INITS:
            raise ValueError(f"unknown gate init {init!r}; valid: {', '.join(GATE_INITS)}")
        if sub_sample_mode not in SUB_SAMPLE_MODES:
            raise ValueError(f"unknown sub_sample_mode {sub_sample_mode!r}; valid: {', '.join(SUB_SAMPLE_MODES)}")
        factors = (sub_sample,) * spatial_dims if isinstance(sub_sample, int) else tuple(int(s) for s in sub_sample)
        if len(factors) != spatial_dims or min(factors) < 1:
            raise ValueError(f"sub_sample must be >= 1 (an int or {spatial_dims} of them), got {sub_sample}")
        if not isinstance(sub_sample, int):
            sub_sample = factors
        inter = max(1, in_channels // 2) if inter_channels is None else inter_channels
        self.in_channels, self.gating_channels, self.inter_channels = in_channels, gating_channels, inter
        self.sub_sample, self.gate_norm, self.sub_sample_mode = sub_sample, bool(gate_norm), sub_sample_mode
        self.init = init
        conv = Conv[spatial_dims]
        if sub_sample_mode == "conv":
            theta: nn.Module = conv(in_channels, inter, sub_sample, stride=sub_sample, bias=False)
            theta_parts = [theta, make_norm(norm, spatial_dims, inter)] if gate_norm else [theta]
        else:
            theta_parts = [conv(in_channels, inter, 1, bias=False)]
            theta_parts += [make_norm(norm, spatial_dims, inter)] if gate_norm else []
            theta_parts += [MaxPool[spatial_dims](sub_sample, stride=sub_sample)] if max(factors) > 1 else []
        self.theta = theta_parts[0] if len(theta_parts) == 1 else nn.Sequential(*theta_parts)
        if gate_norm:  # a bias before a norm does nothing; with norm="none" the convs keep theirs
            bias = norm == "none"
            self.phi = nn.Sequential(conv(gating_channels, inter, 1, bias=bias), make_norm(norm, spatial_dims, inter))
            self.psi = nn.Sequential(conv(inter, 1, 1, bias=bias), make_norm(norm, spatial_dims, 1))
        else:
            self.phi = conv(gating_channels, inter, 1, bias=True)
            self.psi = conv(inter, 1, 1, bias=True)
        self.out: nn.Module = (
            nn.Sequential(Conv[spatial_dims](in_channels, in_channels, 1), make_norm(norm, spatial_dims, in_channels))
            if output_transform
            else nn.Identity()
        )
        if init == "open":
            with torch.no_grad():
                last = self.psi[-1] if gate_norm else self.psi
                if gate_norm and not isinstance(last, nn.Identity):  # the norm's affine: weight gain, bias open
                    last.weight.fill_(open_gain)
                    last.bias.fill_(open_bias)
                else:  # psi's conv (with norm="none" it keeps its bias)
                    psi_conv = self.psi[0] if gate_norm else self.psi
                    psi_conv.weight.mul_(open_gain)
                    psi_conv.bias.fill_(open_bias)

    @classmethod
    def thesis(cls, spatial_dims: int, in_channels: int, gating_channels: int, sub_sample: int = 2, **kwargs):
        """The thesis gate (seed 000 Table 3.2): BN after theta/phi/psi, max-pool sub-sampling, ``alpha * x``,
        ``F_int = in_channels``; ``sub_sample=1`` for single gating (full resolution)."""
        kwargs = {"inter_channels": in_channels, "gate_norm": True, "sub_sample_mode": "maxpool",
                  "output_transform": False, **kwargs}  # fmt: skip
        return cls(spatial_dims, in_channels, gating_channels, sub_sample=sub_sample, **kwargs)

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
    the block is a single :class:`GridAttentionGate`. Further keyword arguments (``gate_norm``,
    ``sub_sample_mode``, ``output_transform``, ...) go to every sub-gate.

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
        **gate_kwargs,
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"attention_heads must be >= 1, got {heads}")
        self.heads = heads
        self.gates = nn.ModuleList(
            GridAttentionGate(
                spatial_dims,
                in_channels,
                gating_channels,
                inter_channels,
                sub_sample=sub_sample,
                init=init,
                norm=norm,
                **gate_kwargs,
            )
            for _ in range(heads)
        )
        self.fuse: nn.Module = (
            ConvNormAct(spatial_dims, in_channels * heads, in_channels, 1, norm=norm) if heads > 1 else nn.Identity()
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.heads == 1:  # one gate: its output and map as they are (a cat of one tensor would copy it)
            return self.gates[0](x, g)
        outs = [gate(x, g) for gate in self.gates]
        return self.fuse(ops.cat([o[0] for o in outs], dim=1)), ops.cat([o[1] for o in outs], dim=1)
