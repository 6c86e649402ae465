"""FocusNet++ in 2D and 3D (Kaul et al., ISBI 2021; seed 004 sec. 2, Fig. 1).

An encoder-decoder of residual group attention blocks (:class:`~agseg.blocks.group_attention.ResGroupAttentionBlock`,
seed 004 sec. 2.1)::

    encoder  e_0 = RGA_32(Conv5x5(x)),   e_l = RGA_{C_l}(maxpool(e_{l-1})),  l = 1..4,   b = Dropout(e_4)
    decoder  d_3 = RGA_192(e_3 + up(b)),   d_l = RGA_{C_l}(e_l + up(d_{l+1})),  l = 2, 1, 0
             up(h) = Conv3x3(repeat(h))                                          C_{l+1} -> C_l
    head     s_l = resize(Conv-BN-LReLU-Conv(d_l)) to the input's grid,  l = 0..3   (per-scale logits)
             y   = Conv-BN-LReLU-Conv(concat(sigmoid(s_0), ..., sigmoid(s_3)))      (fused logits)

with widths ``C = 32-64-128-192-256`` and ``RGA_C`` a residual group attention block of width ``C``.

``e_l + up(.)`` is an **addition** of the encoder features (the paper: "we add skip connections from the encoder to the
decoder, rather than concatenating them"), ``repeat`` repeats every value (nearest-neighbour up-sampling, "we repeat the
values in a kernel from a lower scale into an up-sampling scale and let convolutions learn their values") followed
by a 3x3(x3) convolution to the skip's width. The parts are those of :mod:`agseg.nets.parts`: ``encoder``
(:class:`~agseg.nets.parts.Encoder` with ``block="resgroup"``), ``decoder``
(:class:`~agseg.nets.parts.UNetDecoder` with ``merge="add"``, ``up_mode="nearest"``) and ``head``
(:class:`MultiScaleFusionHead`), plus the 5x5(x5) ``stem`` and the bottleneck ``dropout``.

Choices where seed 004 is not explicit (tested in ``tests/nets/test_focusnetpp.py``):

- **One residual group attention block per level**, encoder and decoder (Fig. 1: "a series of residual group
  attention-max pooling blocks"; the authors' public code stacks one to three).
- **The 5x5 first convolution** is a plain convolution with bias (no norm or activation), as the authors' code;
  the first block starts with its own 1x1 convolution.
- **Up-sampling** is nearest neighbour to the skip's exact grid (a repetition by the pool size when sizes divide),
  then a 3x3(x3) convolution with bias ``C_{l+1} -> C_l``, so that the skip can be added.
- **Dropout** (element-wise, ``dropout=0.5`` as the authors' code; the paper gives no rate) on the bottleneck
  features before the decoder.
- **Heads**: per decoder scale ``Conv 1x1 (C_l -> C_l / 2) - BN - LeakyReLU - Conv 1x1 (-> out_channels)``, the
  logits up-sampled (bi/trilinear) to the input's grid; their sigmoids (the paper's Conv-...-Sigmoid) are
  concatenated and fused by ``Conv 1x1 (-> C_0) - BN - LeakyReLU - Conv 1x1 (-> out_channels)``. Kernels are 1x1
  because the convolutions precede a sigmoid (sec. 2: "1x1 when used to learn attention weights (i.e. preceding
  the sigmoid gating)"); widths as the authors' code (about half, then ``C_0``). The net returns logits: the final
  sigmoid is the loss's.
- **Deep supervision**: the paper trains the fused output alone (one output, one loss), so by default ``forward``
  returns one tensor in training mode too. ``deep_supervision=True`` returns, in training mode, the list
  ``[fused, scale_0, ..., scale_{L-2}]`` (main output first, then the per-scale logits finest first, all on the
  input's grid) for :class:`~agseg.losses.DeepSupervisionLoss`; eval mode always returns the fused output.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from agseg.blocks import ops
from agseg.blocks.group_attention import ResGroupAttentionBlock
from agseg.layers import Conv, check_spatial_dims, make_norm, resize_to
from agseg.nets.base import SegmentationNet
from agseg.nets.parts import Encoder, Output, PoolSizes, UNetDecoder, check_input
from agseg.nets.registry import register_model

__all__ = ["PAPER_TABLES", "FocusNetPP", "MultiScaleFusionHead"]

#: seed 004: Table 2 (ISIC 2018) and Table 3 (DSB 2018 nuclei), as printed ("x 10^8" for both columns).
PAPER_TABLES = {
    "table2_isic": {"params": 7.80e8, "flops": 15.64e8},
    "table3_nuclei": {"params": 1.84e8, "flops": 0.98e8, "precision": 0.9173, "recall": 0.9139},
}


class MultiScaleFusionHead(nn.Module):
    """FocusNet++'s output: a head at every decoder scale, up-sampled, concatenated and fused (seed 004 sec. 2).

    Args:
        spatial_dims: 1, 2 or 3.
        channels: widths of the decoder outputs, finest first.
        out_channels: output channels.
        hidden: hidden width of each scale head (default ``max(1, C_l // 2)``).
        fuse_channels: hidden width of the fusion (default ``channels[0]``).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        negative_slope: LeakyReLU slope.
        deep_supervision: return the per-scale logits too in training mode.

    Attributes:
        heads: ``nn.ModuleList``, ``heads[l]`` the ``Conv-Norm-LeakyReLU-Conv`` of decoder scale ``l``.
        fuse: the ``Conv-Norm-LeakyReLU-Conv`` on the concatenated sigmoids.

    ``forward(feats, size)`` with ``feats[l]`` ``(B, channels[l], *S_l)`` returns the fused logits
    ``(B, out_channels, *size)``; in training mode with ``deep_supervision`` the list ``[fused, scale_0, ...]``.
    :meth:`scales` returns the per-scale logits alone.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        out_channels: int,
        hidden: Sequence[int] | None = None,
        fuse_channels: int | None = None,
        norm: str = "batch",
        negative_slope: float = 0.3,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        hidden = tuple(max(1, c // 2) for c in channels) if hidden is None else tuple(int(h) for h in hidden)
        if len(hidden) != len(channels):
            raise ValueError(f"hidden needs one width per scale ({len(channels)}), got {hidden}")
        fuse_channels = channels[0] if fuse_channels is None else int(fuse_channels)
        self.deep_supervision = deep_supervision

        def conv_bn_lrelu_conv(c_in: int, c_mid: int) -> nn.Sequential:
            return nn.Sequential(
                Conv[spatial_dims](c_in, c_mid, 1, bias=norm == "none"),
                make_norm(norm, spatial_dims, c_mid),
                nn.LeakyReLU(negative_slope),
                Conv[spatial_dims](c_mid, out_channels, 1),
            )

        self.heads = nn.ModuleList(conv_bn_lrelu_conv(c, h) for c, h in zip(channels, hidden, strict=True))
        self.fuse = conv_bn_lrelu_conv(len(channels) * out_channels, fuse_channels)

    def scales(self, feats: Sequence[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
        """The per-scale logits, each up-sampled to ``size``, finest first."""
        if len(feats) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} decoder outputs (one per scale), got {len(feats)}")
        return [resize_to(head(f), size) for head, f in zip(self.heads, feats, strict=True)]

    def forward(self, feats: Sequence[torch.Tensor], size: Sequence[int]) -> Output:
        outs = self.scales(feats, size)
        fused = self.fuse(ops.cat([torch.sigmoid(o) for o in outs], dim=1))
        if self.deep_supervision and self.training:
            return [fused, *outs]
        return fused


@register_model(
    "focusnetpp",
    description="FocusNet++: residual group attention blocks, additive skips, repeat up-sampling, fused multi-scale "
    "outputs (train with loss focusnet_hybrid)",
    paper="seed 004 sec. 2, Fig. 1-2",
)
class FocusNetPP(SegmentationNet):
    """FocusNet++ (see the module docstring for the design and the choices made where the paper is not explicit).

    Args:
        spatial_dims: 2 (the paper) or 3 (the same code path with 3D layers).
        in_channels: image channels (3: RGB, the paper's ISIC and nuclei images).
        out_channels: output channels (1 for the paper's binary masks, sigmoid in the loss).
        channels: widths per level, finest first, the last the bottleneck (the paper: 32-64-128-192-256); every
            width a multiple of ``groups``.
        norm: ``"batch"`` (the paper), ``"instance"`` or ``"none"``.
        dropout: element-wise dropout rate on the bottleneck features (0.5).
        deep_supervision: training mode returns ``[fused, scale_0, ..., scale_{L-2}]`` (default ``False``: the
            fused output alone, as the paper trains it).
        pool_sizes: one entry per down-sampling step, an int or one per axis (default 2 everywhere).
        groups: filter groups of every block (4).
        se_reduction: squeeze-and-excitation ratio of every block (16).
        negative_slope: LeakyReLU slope everywhere (0.3, Keras' default).
        shared_embedding: see :class:`~agseg.blocks.group_attention.ResGroupAttentionBlock`.
        stem_kernel: kernel of the first convolution (5).

    Attributes:
        stem, encoder, dropout, decoder, head: the parts (``decoder.blocks[l]`` takes ``channels[l]`` channels in:
        the skip and the up-sampled features are added).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` logits; every side at least
    :attr:`min_input_shape` (``2 ** (len(channels) - 1)`` with the default pooling), odd sizes work.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 192, 256),
        norm: str = "batch",
        dropout: float = 0.5,
        deep_supervision: bool = False,
        pool_sizes: PoolSizes | None = None,
        groups: int = 4,
        se_reduction: int = 16,
        negative_slope: float = 0.3,
        shared_embedding: bool = True,
        stem_kernel: int = 5,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels (one skip and the bottleneck), got {channels}")
        if in_channels < 1 or out_channels < 1 or min(channels) < 1:
            raise ValueError("in_channels, out_channels and every width in channels must be >= 1")
        bad = [c for c in channels if c % groups]
        if groups < 2 or groups % 2 or bad:
            raise ValueError(
                f"every width in channels must be a multiple of groups={groups} (an even number >= 2); "
                f"got channels {channels}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and >= 1 (a grid-keeping convolution), got {stem_kernel}")
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels, self.deep_supervision = channels, deep_supervision
        block = partial(
            ResGroupAttentionBlock,
            groups=groups,
            se_reduction=se_reduction,
            negative_slope=negative_slope,
            shared_embedding=shared_embedding,
        )
        self.stem = Conv[spatial_dims](in_channels, channels[0], stem_kernel, padding=stem_kernel // 2)
        self.encoder = Encoder(spatial_dims, channels[0], channels, block=block, norm=norm, pool_sizes=pool_sizes)
        self.pool_sizes = self.encoder.pool_sizes
        self.dropout = nn.Dropout(dropout)
        self.decoder = UNetDecoder(
            spatial_dims, channels, block=block, up_mode="nearest", norm=norm, pool_sizes=self.pool_sizes, merge="add"
        )
        self.head = MultiScaleFusionHead(
            spatial_dims,
            channels[:-1],
            out_channels,
            norm=norm,
            negative_slope=negative_slope,
            deep_supervision=deep_supervision,
        )

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis: every level must keep at least one voxel (product of the pool sizes)."""
        return self.encoder.min_input_shape

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(encoder features, decoder outputs)``, both finest first; the bottleneck (last encoder feature)
        after dropout."""
        check_input(x, self.spatial_dims, self.in_channels, self.min_input_shape, self.pool_sizes)
        feats = self.encoder(self.stem(x))
        feats[-1] = self.dropout(feats[-1])
        return feats, self.decoder(feats)

    def forward(self, x: torch.Tensor) -> Output:
        """Fused logits ``(B, out_channels, *spatial)``; with ``deep_supervision`` in training mode the list
        ``[fused, scale_0, ..., scale_{L-2}]``."""
        return self.head(self.features(x)[1], x.shape[2:])


_SEED4 = "seed 004"
register_model(
    "focusnetpp_paper",
    FocusNetPP,
    defaults={
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 1,
        "channels": (32, 64, 128, 192, 256),
        "dropout": 0.5,
    },
    description="FocusNet++ as seed 004 sec. 2 describes it: RGB in, 1 output, widths 32-64-128-192-256; "
    "train with loss focusnet_hybrid (ALL-HL)",
    paper=f"{_SEED4} sec. 2, Table 2 (ISIC 2018)",
)
register_model(
    "focusnetpp_nuclei",
    FocusNetPP,
    defaults={
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 1,
        "channels": (16, 32, 64, 96, 128),
        "dropout": 0.5,
    },
    description="FocusNet++ with half the widths (16-32-64-96-128) for DSB 2018 nuclei: seed 004 reduces the "
    "filters for that task without giving them; half matches its Table 2 -> 3 parameter ratio (4.2); "
    "train with loss focusnet_hybrid",
    paper=f"{_SEED4} sec. 3.2, Table 3",
)
