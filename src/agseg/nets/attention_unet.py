"""Attention U-Net in 2D and 3D (seed 001, seed 003 sec. 2; thesis seed 000 single- and multi-gating).

A :class:`~agseg.nets.unet.UNet` whose skip connections pass through grid attention gates
(:class:`~agseg.blocks.attention_gate.AttentionGateBlock`) before concatenation: the same encoder, decoder and
head, plus an :class:`~agseg.nets.parts.AttentionSkips` part as ``skips``.

Gating:
    ``"multi"`` (the papers' design, thesis multi-gating): the gate on skip ``l`` is driven by the decoder
    features one level coarser; the coarsest gated skip by the gating signal (1x1(x1) conv + BN + ReLU of
    the bottleneck).
    ``"single"`` (thesis single-gating): that one gating signal from the bottleneck drives every gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agseg.blocks.registry import BlockFactory
from agseg.nets.parts import GATINGS, AttentionSkips, PoolSizes
from agseg.nets.registry import register_model
from agseg.nets.unet import _INTERP, UNET_LEGACY_RENAMES, UNet

__all__ = ["GATINGS", "AttentionUNet"]

#: Parameter names of the gates before the nets were split into parts (commit 45bf0f5 and earlier).
ATTENTION_LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    *UNET_LEGACY_RENAMES,
    (r"^gating_signal\.", r"skips.gating_signal."),
    (r"^gates\.(\d+)\.", r"skips.gates.\1."),
)


@register_model(
    "attention_unet",
    description="Attention U-Net: additive grid attention gates on the skips (single or multi gating)",
    paper="seed 001, seed 003 eq. 1-2; seed 000 single/multi gating",
)
class AttentionUNet(UNet):
    """Attention U-Net.

    Args:
        spatial_dims, in_channels, out_channels, channels, norm, up_mode, deep_supervision, ds_fuse, block,
            pool_sizes: as :class:`~agseg.nets.unet.UNet`.
        gating: ``"multi"`` or ``"single"`` (see the module docstring).
        gated_levels: skip levels that get a gate, 0 the finest; default all but the finest (seed 001/003:
            the first skip is not gated). The thesis gates all: ``gated_levels=range(len(channels) - 1)``.
        attention_heads: sub-gates per skip (multi-dimensional attention, seed 003 sec. 2.2.1).
        inter_ratio: intermediate channels ``F_int`` of a gate as a fraction of the skip's channels
            (0.5 by default; the authors' CT models use 1.0).
        sub_sample: factor by which gates sub-sample the skip (2: the papers' grid attention); with per-axis
            ``pool_sizes`` only along the axes the skip's level pools.
        gate_init: ``"open"`` (alpha >= 0.9 at init, the papers) or ``"default"`` (PyTorch's init).
        gate_style: ``"oktay"`` (default: seed 001/003's gate) or ``"thesis"`` (seed 000 Table 3.2: batch norm on
            theta/phi/psi, max-pool sub-sampling, ``alpha * x`` without an output transform, ``F_int = C``, single
            gating at full resolution); see :class:`~agseg.nets.parts.AttentionSkips`.
        gate_norm, gate_output_transform, gate_sub_sample_mode: override single choices of the style.
        gating_from: ``"bottleneck"`` or ``"pool"`` (the last max-pooling output, thesis single gating; the default
            there): what the gating signal is made from (see :class:`~agseg.nets.parts.AttentionSkips`).
        ``inter_ratio`` (default 0.5, thesis 1.0) and ``sub_sample`` (default 2, thesis single gating 1) follow the
        style when not given.

    Attributes:
        skips: the :class:`~agseg.nets.parts.AttentionSkips` (``skips.gating_signal``, ``skips.gates``).

    ``forward_with_attention(x)`` returns ``(output, maps)`` with ``maps["level{l}"]`` of shape
    ``(B, attention_heads, *skip_spatial)``. Checkpoints with the names from before the split into parts
    (``gating_signal...``, ``gates.N...`` besides the U-Net's) load unchanged.
    """

    legacy_renames = ATTENTION_LEGACY_RENAMES

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
        gating: str = "multi",
        gated_levels: Iterable[int] | None = None,
        attention_heads: int = 1,
        inter_ratio: float | None = None,
        sub_sample: int | None = None,
        gate_init: str = "open",
        block: str | BlockFactory = "double_conv",
        pool_sizes: PoolSizes | None = None,
        gate_style: str = "oktay",
        gate_norm: bool | None = None,
        gate_output_transform: bool | None = None,
        gate_sub_sample_mode: str | None = None,
        gating_from: str | None = None,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            channels,
            norm,
            up_mode,
            deep_supervision,
            ds_fuse,
            block=block,
            pool_sizes=pool_sizes,
        )
        self.skips = AttentionSkips(
            spatial_dims,
            self.channels,
            gated_levels,
            gating=gating,
            heads=attention_heads,
            inter_ratio=inter_ratio,
            sub_sample=sub_sample,
            gate_init=gate_init,
            norm=norm,
            pool_sizes=self.pool_sizes,
            gate_style=gate_style,
            gate_norm=gate_norm,
            gate_output_transform=gate_output_transform,
            gate_sub_sample_mode=gate_sub_sample_mode,
            gating_from=gating_from,
        )
        self.gating, self.gated_levels = gating, self.skips.gated_levels

    def gating_source(self, level: int) -> str:
        """Which signal drives the gate at ``level``: ``"bottleneck"`` or ``"decoder{l+1}"``."""
        return self.skips.gating_source(level)


_CT = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 4,
    "channels": (16, 32, 64, 128, 256),
    "gating": "multi",
    "attention_heads": 2,
    "inter_ratio": 1.0,
    "deep_supervision": True,
    **_INTERP,
}
register_model(
    "attention_unet_ct",
    AttentionUNet,
    defaults=_CT,
    description="seed 001's 3D CT Attention U-Net: multi gating, 2 heads, deep supervision, 16-256",
    paper="seed 001 Table 1",
)
# The thesis presets use the thesis gate (Table 3.2) and PyTorch's initialisation: the thesis describes no open
# initialisation of the gates (seed 001/003 do).
_THESIS_GATE = {"gate_style": "thesis", "gate_init": "default", **_INTERP}
register_model(
    "attention_unet_thesis2d_single",
    AttentionUNet,
    defaults={
        "spatial_dims": 2,
        "channels": (64, 128, 256, 512, 1024),
        "gating": "single",
        "gated_levels": (0, 1, 2, 3),
        **_THESIS_GATE,
    },
    description="thesis 2D single-gating Attention U-Net, all 4 skips gated, the thesis gate at full resolution",
    paper="seed 000 sec. 3.2.1, Table 3.2",
)
register_model(
    "attention_unet_thesis2d_multi",
    AttentionUNet,
    defaults={
        "spatial_dims": 2,
        "channels": (64, 128, 256, 512, 1024),
        "gating": "multi",
        "gated_levels": (0, 1, 2, 3),
        **_THESIS_GATE,
    },
    description="thesis 2D multi-gating Attention U-Net, all 4 skips gated, the thesis gate (max pooling)",
    paper="seed 000 sec. 3.2.1, Table 3.2",
)
register_model(
    "attention_unet_thesis3d",
    AttentionUNet,
    defaults={
        "spatial_dims": 3,
        "channels": (32, 64, 128, 256),
        "gating": "multi",
        "gated_levels": (0, 1, 2),
        **_THESIS_GATE,
    },
    description="thesis 3D multi-gating Attention U-Net, widths 32-64-128-256, the thesis gate",
    paper="seed 000 sec. 3.2.2, Table 3.2",
)
