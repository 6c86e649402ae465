"""U-Net in 2D and 3D (Ronneberger et al.; thesis seed 000 Tables 3.1 and 3.3; seed 001's 3D CT baseline).

Encoder: a double convolution per level, max-pooling between levels. Decoder: up-sampling followed by a
convolution that halves the channels, concatenation with the skip, double convolution. A 1x1(x1) output
convolution gives logits (no sigmoid or softmax: the losses take logits).

The class is also the skeleton of the gated nets: :meth:`UNet.process_skip` is the hook where
:class:`~agseg.nets.attention_unet.AttentionUNet` puts its gates, and deep supervision lives here so that a
U-Net and an Attention U-Net can be compared with the same heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agseg.blocks.conv import DoubleConv, UpConv
from agseg.layers import Conv, MaxPool, check_spatial_dims, resize_to
from agseg.nets.registry import register_model

__all__ = ["DeepSupervisionHead", "UNet"]

Output = torch.Tensor | list[torch.Tensor]


class DeepSupervisionHead(nn.Module):
    """Output heads: one 1x1 conv, or one per decoder scale (deep supervision, seed 001/003).

    With ``deep_supervision``, each decoder level ``l`` gets a 1x1(x1) head whose logits are up-sampled to the
    input grid; with ``fuse`` (the authors' CT models) a final 1x1 conv fuses the concatenated heads into the
    main output. In training mode the net returns a list, finest first: ``[fused, head_0, ..., head_{L-1}]``
    with ``fuse``, else ``[head_0, ..., head_{L-1}]``. In eval mode it returns the main output (``fused`` or
    ``head_0``) alone.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        out_channels: int,
        deep_supervision: bool = False,
        fuse: bool = True,
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(channels) if deep_supervision else 1
        self.heads = nn.ModuleList(Conv[spatial_dims](channels[i], out_channels, 1) for i in range(n))
        self.fuse = Conv[spatial_dims](out_channels * n, out_channels, 1) if deep_supervision and fuse else None

    def forward(self, feats: Sequence[torch.Tensor], size: Sequence[int]) -> Output:
        """``feats``: decoder outputs, finest first; ``size``: the input's spatial size."""
        if not self.deep_supervision:
            return self.heads[0](feats[0])
        outs = [resize_to(head(f), size) for head, f in zip(self.heads, feats, strict=False)]
        if self.fuse is not None:
            outs.insert(0, self.fuse(torch.cat(outs, dim=1)))
        return outs if self.training else outs[0]


@register_model(
    "unet",
    description="U-Net: double conv blocks, max-pool down, up-sample + conv, skip concatenation",
    paper="Ronneberger et al. 2015; seed 000 Table 3.1",
)
class UNet(nn.Module):
    """U-Net for 2D or 3D segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (classes; 1 for a binary sigmoid output).
        channels: widths per level, finest first; ``len(channels)`` levels, the last one the bottleneck.
        norm: ``"batch"`` (papers), ``"instance"`` or ``"none"``.
        up_mode: ``"interp"`` (interpolation + 3x3 conv, thesis) or ``"transpose"`` (transposed conv).
        deep_supervision: one output head per decoder scale (see :class:`DeepSupervisionHead`).
        ds_fuse: with deep supervision, fuse the heads with a final 1x1 conv (the authors' CT models).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` logits. Any spatial size works as long
    as every side is at least ``2 ** (len(channels) - 1)``: max-pooling floors odd sizes and up-sampling
    goes to the skip's exact grid.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str = "batch",
        up_mode: str = "interp",
        deep_supervision: bool = False,
        ds_fuse: bool = True,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels (one skip and the bottleneck), got {channels}")
        if in_channels < 1 or out_channels < 1 or min(channels) < 1:
            raise ValueError("in_channels, out_channels and every width in channels must be >= 1")
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels = channels
        self.deep_supervision = deep_supervision
        n_skips = len(channels) - 1
        self.encoder = nn.ModuleList(
            DoubleConv(spatial_dims, in_channels if i == 0 else channels[i - 1], channels[i], norm=norm)
            for i in range(len(channels))
        )
        self.pool = MaxPool[spatial_dims](2)
        self.ups = nn.ModuleList(UpConv(spatial_dims, channels[i + 1], channels[i], up_mode) for i in range(n_skips))
        self.decoder = nn.ModuleList(
            DoubleConv(spatial_dims, 2 * channels[i], channels[i], norm=norm) for i in range(n_skips)
        )
        self.head = DeepSupervisionHead(spatial_dims, channels[:n_skips], out_channels, deep_supervision, ds_fuse)

    @property
    def min_input_size(self) -> int:
        """Smallest side the net accepts: every level must keep at least one voxel."""
        return 2 ** (len(self.channels) - 1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims + 2}D input (B, C, {', '.join('XYZ'[: self.spatial_dims])}) for a "
                f"{self.spatial_dims}D net, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(
                f"input spatial size {tuple(x.shape[2:])} is too small for {len(self.channels)} levels: every side "
                f"must be at least {self.min_input_size} (2 ** (levels - 1))"
            )

    def gating_context(self, bottleneck: torch.Tensor) -> torch.Tensor | None:
        """Hook for gated nets: what every gate may use from the bottleneck, computed once a forward pass."""
        return None

    def process_skip(
        self, level: int, skip: torch.Tensor, coarse: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hook for gated nets: return the skip to concatenate at ``level`` and its attention map (or None).

        Args:
            level: skip level, 0 the finest.
            skip: encoder features at ``level``.
            coarse: decoder features one level coarser (the bottleneck for the coarsest skip).
            context: what :meth:`gating_context` returned.
        """
        return skip, None

    def _run(self, x: torch.Tensor) -> tuple[Output, dict[str, torch.Tensor]]:
        self._check_input(x)
        skips: list[torch.Tensor] = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        bottleneck = skips.pop()
        maps: dict[str, torch.Tensor] = {}
        feats: list[torch.Tensor] = []
        context = self.gating_context(bottleneck)
        h = bottleneck
        for level in reversed(range(len(skips))):
            skip, alpha = self.process_skip(level, skips[level], h, context)
            if alpha is not None:
                maps[f"level{level}"] = alpha
            h = self.decoder[level](torch.cat([skip, self.ups[level](h, skip.shape[2:])], dim=1))
            feats.append(h)
        return self.head(feats[::-1], x.shape[2:]), maps

    def forward(self, x: torch.Tensor) -> Output:
        """Logits ``(B, out_channels, *spatial)``; with deep supervision in training mode a list, finest first."""
        return self._run(x)[0]

    def forward_with_attention(self, x: torch.Tensor) -> tuple[Output, dict[str, torch.Tensor]]:
        """``(output, maps)``: output as :meth:`forward`; ``maps`` maps gate name (``"level{l}"``, 0 finest)
        to attention coefficients ``(B, heads, *skip_spatial)`` in [0, 1]. Empty for an ungated net."""
        return self._run(x)


_THESIS = "seed 000 (thesis)"
register_model(
    "unet_thesis2d",
    UNet,
    defaults={"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": (64, 128, 256, 512, 1024)},
    description="thesis 2D lung U-Net, widths 64-128-256-512-1024",
    paper=f"{_THESIS} Table 3.1",
)
register_model(
    "unet_thesis3d",
    UNet,
    defaults={"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": (32, 64, 128, 256)},
    description="thesis 3D LUNA16 U-Net, widths 32-64-128-256",
    paper=f"{_THESIS} Table 3.3",
)
register_model(
    "unet_ct",
    UNet,
    defaults={
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 4,
        "channels": (16, 32, 64, 128, 256),
        "deep_supervision": True,
    },
    description="Attention U-Net paper's 3D CT baseline U-Net, widths 16-32-64-128-256, deep supervision",
    paper="seed 001 Table 1",
)
