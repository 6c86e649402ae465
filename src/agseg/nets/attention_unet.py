"""Attention U-Net in 2D and 3D (seed 001, seed 003 sec. 2; thesis seed 000 single- and multi-gating).

A :class:`~agseg.nets.unet.UNet` whose skip connections pass through grid attention gates
(:class:`~agseg.blocks.attention_gate.AttentionGateBlock`) before concatenation.

Gating:
    ``"multi"`` (the papers' design, thesis multi-gating): the gate on skip ``l`` is driven by the decoder
    features one level coarser; the coarsest gated skip by the gating signal (1x1(x1) conv + BN + ReLU of
    the bottleneck).
    ``"single"`` (thesis single-gating): that one gating signal from the bottleneck drives every gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from agseg.blocks.attention_gate import AttentionGateBlock
from agseg.blocks.conv import ConvNormAct
from agseg.nets.registry import register_model
from agseg.nets.unet import UNet

__all__ = ["AttentionUNet"]

GATINGS = ("single", "multi")


@register_model(
    "attention_unet",
    description="Attention U-Net: additive grid attention gates on the skips (single or multi gating)",
    paper="seed 001, seed 003 eq. 1-2; seed 000 single/multi gating",
)
class AttentionUNet(UNet):
    """Attention U-Net.

    Args:
        spatial_dims, in_channels, out_channels, channels, norm, up_mode, deep_supervision, ds_fuse: as
            :class:`~agseg.nets.unet.UNet`.
        gating: ``"multi"`` or ``"single"`` (see the module docstring).
        gated_levels: skip levels that get a gate, 0 the finest; default all but the finest (seed 001/003:
            the first skip is not gated). The thesis gates all: ``gated_levels=range(len(channels) - 1)``.
        attention_heads: sub-gates per skip (multi-dimensional attention, seed 003 sec. 2.2.1).
        inter_ratio: intermediate channels ``F_int`` of a gate as a fraction of the skip's channels
            (0.5 by default; the authors' CT models use 1.0).
        sub_sample: factor by which gates sub-sample the skip (2: the papers' grid attention).
        gate_init: ``"open"`` (alpha >= 0.9 at init, the papers) or ``"default"`` (PyTorch's init).

    ``forward_with_attention(x)`` returns ``(output, maps)`` with ``maps["level{l}"]`` of shape
    ``(B, attention_heads, *skip_spatial)``.
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
        gating: str = "multi",
        gated_levels: Iterable[int] | None = None,
        attention_heads: int = 1,
        inter_ratio: float = 0.5,
        sub_sample: int = 2,
        gate_init: str = "open",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, channels, norm, up_mode, deep_supervision, ds_fuse)
        if gating not in GATINGS:
            raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")
        n_skips = len(self.channels) - 1
        levels = sorted(set(range(1, n_skips) if gated_levels is None else (int(i) for i in gated_levels)))
        bad = [i for i in levels if not 0 <= i < n_skips]
        if bad:
            raise ValueError(f"gated_levels {bad} out of range: this net has skip levels 0..{n_skips - 1}")
        if not levels:
            raise ValueError("gated_levels is empty: use 'unet' for a net without gates")
        if inter_ratio <= 0:
            raise ValueError(f"inter_ratio must be > 0, got {inter_ratio}")
        self.gating, self.gated_levels = gating, tuple(levels)
        c = self.channels
        # The gating signal (authors' UnetGridGatingSignal): 1x1(x1) conv + BN + ReLU of the bottleneck.
        self.gating_signal = ConvNormAct(spatial_dims, c[-1], c[-1], kernel_size=1, norm=norm)
        self.gates = nn.ModuleDict()
        for lvl in levels:
            g_channels = c[-1] if gating == "single" or lvl == n_skips - 1 else c[lvl + 1]
            self.gates[str(lvl)] = AttentionGateBlock(
                spatial_dims,
                c[lvl],
                g_channels,
                inter_channels=max(1, round(c[lvl] * inter_ratio)),
                heads=attention_heads,
                sub_sample=sub_sample,
                init=gate_init,
                norm=norm,
            )

    def gating_source(self, level: int) -> str:
        """Which signal drives the gate at ``level``: ``"bottleneck"`` or ``"decoder{l+1}"``."""
        if self.gating == "single" or level == len(self.channels) - 2:
            return "bottleneck"
        return f"decoder{level + 1}"

    def gating_context(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.gating_signal(bottleneck)

    def process_skip(
        self, level: int, skip: torch.Tensor, coarse: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = str(level)
        if key not in self.gates:
            return skip, None
        g = context if self.gating_source(level) == "bottleneck" else coarse
        return self.gates[key](skip, g)


_CT = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 4,
    "channels": (16, 32, 64, 128, 256),
    "gating": "multi",
    "attention_heads": 2,
    "inter_ratio": 1.0,
    "deep_supervision": True,
}
register_model(
    "attention_unet_ct",
    AttentionUNet,
    defaults=_CT,
    description="seed 001's 3D CT Attention U-Net: multi gating, 2 heads, deep supervision, 16-256",
    paper="seed 001 Table 1",
)
register_model(
    "attention_unet_thesis2d_single",
    AttentionUNet,
    defaults={
        "spatial_dims": 2,
        "channels": (64, 128, 256, 512, 1024),
        "gating": "single",
        "gated_levels": (0, 1, 2, 3),
    },
    description="thesis 2D single-gating Attention U-Net, all 4 skips gated",
    paper="seed 000 sec. 3.2.1",
)
register_model(
    "attention_unet_thesis2d_multi",
    AttentionUNet,
    defaults={
        "spatial_dims": 2,
        "channels": (64, 128, 256, 512, 1024),
        "gating": "multi",
        "gated_levels": (0, 1, 2, 3),
    },
    description="thesis 2D multi-gating Attention U-Net, all 4 skips gated",
    paper="seed 000 sec. 3.2.1",
)
register_model(
    "attention_unet_thesis3d",
    AttentionUNet,
    defaults={"spatial_dims": 3, "channels": (32, 64, 128, 256), "gating": "multi", "gated_levels": (0, 1, 2)},
    description="thesis 3D multi-gating Attention U-Net, widths 32-64-128-256",
    paper="seed 000 sec. 3.2.2",
)
