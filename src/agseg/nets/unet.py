"""U-Net in 2D and 3D (Ronneberger et al.; thesis seed 000 Tables 3.1 and 3.3; seed 001's 3D CT baseline).

Encoder: a double convolution per level, max-pooling between levels. Decoder: up-sampling followed by a
convolution that halves the channels, concatenation with the skip, double convolution. A 1x1(x1) output
convolution gives logits (no sigmoid or softmax: the losses take logits).

The net is a composition of the parts in :mod:`agseg.nets.parts`: ``encoder`` (:class:`~agseg.nets.parts.Encoder`),
``decoder`` (:class:`~agseg.nets.parts.UNetDecoder`), ``skips`` (``None`` here; the Attention U-Net's
:class:`~agseg.nets.parts.AttentionSkips`) and ``head`` (:class:`~agseg.nets.parts.DeepSupervisionHead`, here so
that a U-Net and an Attention U-Net can be compared with the same heads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agseg.blocks.registry import BlockFactory
from agseg.layers import check_spatial_dims
from agseg.nets.base import SegmentationNet
from agseg.nets.parts import (
    AttentionSkips,
    DeepSupervisionHead,
    Encoder,
    Output,
    PoolSizes,
    UNetDecoder,
    check_input,
)
from agseg.nets.registry import register_model

__all__ = ["DeepSupervisionHead", "UNet"]

#: Parameter names before the nets were split into parts (commit 45bf0f5 and earlier) -> current names.
UNET_LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.(\d+)\.", r"encoder.blocks.\1."),
    (r"^ups\.(\d+)\.", r"decoder.ups.\1."),
    (r"^decoder\.(\d+)\.", r"decoder.blocks.\1."),
)


@register_model(
    "unet",
    description="U-Net: double conv blocks, max-pool down, up-sample + conv, skip concatenation",
    paper="Ronneberger et al. 2015; seed 000 Table 3.1",
)
class UNet(SegmentationNet):
    """U-Net for 2D or 3D segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (classes; 1 for a binary sigmoid output).
        channels: widths per level, finest first; ``len(channels)`` levels, the last one the bottleneck.
        norm: ``"batch"`` (papers), ``"instance"`` or ``"none"``.
        up_mode: ``"transpose"`` (default: a 2x2(x2) transposed conv with stride 2 that halves the channels, the
            original U-Net's "up-convolution"), ``"interp"`` (interpolation + 3x3 conv, thesis Table 3.1; the
            presets and the configs behind docs/results.md), ``"nearest"`` (repetition + 3x3 conv) or ``"resize"``
            (interpolation only, the authors' code of seeds 001/003). ``"transpose"`` is the default because it
            is the cheapest (2D 4x1x256^2 at widths 16-256: 24.9 GFLOPs against 33.5 for ``"interp"``) and the
            fastest on the CPU (docs/benchmarks.md); models saved with the earlier default (``"interp"``) load as
            they were trained (:func:`agseg.nets.compat.legacy_up_mode`).
        deep_supervision: one output head per decoder scale (see :class:`DeepSupervisionHead`).
        ds_fuse: with deep supervision, fuse the heads with a final 1x1 conv (the authors' CT models).
        block: the conv block of every encoder and decoder level, a name in :mod:`agseg.blocks.registry`
            (``"double_conv"``, the U-Net's) or a factory ``(spatial_dims, in_ch, out_ch, norm=...) -> Module``.
        pool_sizes: one entry per down-sampling step (``len(channels) - 1``), an int or one per axis, e.g.
            ``[(1, 2, 2), (2, 2, 2), 2]`` for anisotropic 3D data; default 2 everywhere.

    Attributes:
        encoder, decoder, skips, head: the parts (``skips`` is ``None`` for a net without gates).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` logits. Any spatial size works as long
    as every side is at least :attr:`min_input_shape` (``2 ** (len(channels) - 1)`` with the default pooling):
    max-pooling floors odd sizes and up-sampling goes to the skip's exact grid.

    Checkpoints with the parameter names of the nets before they were split into parts (``encoder.0...``,
    ``ups.N...``, ``decoder.N...``) load unchanged (:attr:`legacy_renames`).
    """

    legacy_renames = UNET_LEGACY_RENAMES

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str = "batch",
        up_mode: str = "transpose",
        deep_supervision: bool = False,
        ds_fuse: bool = True,
        block: str | BlockFactory = "double_conv",
        pool_sizes: PoolSizes | None = None,
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
        self.encoder = Encoder(spatial_dims, in_channels, channels, block=block, norm=norm, pool_sizes=pool_sizes)
        self.pool_sizes = self.encoder.pool_sizes
        self.decoder = UNetDecoder(
            spatial_dims, channels, block=block, up_mode=up_mode, norm=norm, pool_sizes=self.pool_sizes
        )
        self.head = DeepSupervisionHead(spatial_dims, channels[:n_skips], out_channels, deep_supervision, ds_fuse)
        self.skips: AttentionSkips | None = None

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis: every level must keep at least one voxel (product of the pool sizes)."""
        return self.encoder.min_input_shape

    def _check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.spatial_dims, self.in_channels, self.min_input_shape, self.pool_sizes)

    def _run(self, x: torch.Tensor) -> tuple[Output, dict[str, torch.Tensor]]:
        self._check_input(x)
        feats = self.encoder(x)
        skip_fn = None if self.skips is None else self.skips.bind(feats)
        maps: dict[str, torch.Tensor] = {}
        decoded = self.decoder(feats, skip_fn, attention=maps)
        return self.head(decoded, x.shape[2:]), maps

    def forward(self, x: torch.Tensor) -> Output:
        """Logits ``(B, out_channels, *spatial)``; with deep supervision in training mode a list, finest first."""
        return self._run(x)[0]

    @property
    def has_gates(self) -> bool:
        return self.skips is not None

    def forward_with_attention(self, x: torch.Tensor) -> tuple[Output, dict[str, torch.Tensor]]:
        """``(output, maps)``: output as :meth:`forward`; ``maps`` maps gate name (``"level{l}"``, 0 finest)
        to attention coefficients ``(B, heads, *skip_spatial)`` in [0, 1]. Empty for an ungated net."""
        return self._run(x)


_THESIS = "seed 000 (thesis)"
#: The presets keep the decoder they were built and measured with: interpolation + 3x3 conv (thesis Table 3.1:
#: up-sampling and an "intermediate single convolution").
_INTERP = {"up_mode": "interp"}
register_model(
    "unet_thesis2d",
    UNet,
    defaults={"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": (64, 128, 256, 512, 1024), **_INTERP},
    description="thesis 2D lung U-Net, widths 64-128-256-512-1024",
    paper=f"{_THESIS} Table 3.1",
)
register_model(
    "unet_thesis3d",
    UNet,
    defaults={"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": (32, 64, 128, 256), **_INTERP},
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
        **_INTERP,
    },
    description="Attention U-Net paper's 3D CT baseline U-Net, widths 16-32-64-128-256, deep supervision",
    paper="seed 001 Table 1",
)
