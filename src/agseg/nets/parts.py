"""The parts a segmentation net is composed of: an encoder, a decoder, skip processing and a head.

A net is an :class:`Encoder` (a block per level, down-sampling between levels), a decoder (:class:`UNetDecoder`:
up-sampling to the skip's exact grid, concatenation, a block per level), an optional skip-processing part
(:class:`AttentionSkips`: the Attention U-Net's gates) and a :class:`DeepSupervisionHead`, as
segmentation_models_pytorch builds its models. New architectures are new parts: the nested decoder of UNet++ and
ANU-Net (:class:`NestedDecoder`, with its own attention gates) takes the same encoder features, a residual
group-attention block (FocusNet++) is a new entry of the block registry (:mod:`agseg.blocks.registry`) passed as
``block=``.

Pool sizes: ``pool_sizes`` has one entry per down-sampling step (``len(channels) - 1``), each an int or one int
per axis, e.g. ``[(1, 2, 2), (2, 2, 2), 2]`` for 3D data whose first axis is coarse; the default is 2 everywhere.
The encoder and the decoder of a net must use the same pool sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from agseg.blocks import ops
from agseg.blocks.attention_gate import GATE_STYLES, AttentionGateBlock
from agseg.blocks.conv import UP_MODES, ConvNormAct, Resize, UpConv
from agseg.blocks.registry import BlockFactory, make_block
from agseg.layers import Conv, MaxPool, check_spatial_dims, resize_to

__all__ = [
    "DECODER_UP_MODES",
    "GATINGS",
    "GATING_SOURCES",
    "MERGES",
    "NESTED_UP_MODES",
    "AttentionSkips",
    "DeepSupervisionHead",
    "Encoder",
    "NestedDecoder",
    "Output",
    "PoolSizes",
    "SkipFn",
    "UNetDecoder",
    "check_input",
    "min_shape",
    "normalize_pool_sizes",
]

Output = torch.Tensor | list[torch.Tensor]
#: ``skip_fn(level, skip, coarse) -> (skip', alpha or None)``: what goes into the concatenation at ``level``
#: (0 finest) given the encoder features ``skip`` and the decoder features one level coarser ``coarse``.
SkipFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]

GATINGS = ("single", "multi")
#: What :class:`AttentionSkips` computes its gating signal from.
GATING_SOURCES = ("bottleneck", "pool")
#: How :class:`UNetDecoder` merges a skip with the up-sampled features.
MERGES = ("concat", "add")

PoolSizes = Sequence[int | Sequence[int]]

#: Up-sampling in :class:`UNetDecoder`: :data:`agseg.blocks.conv.UP_MODES` and ``"resize"`` (interpolation only).
DECODER_UP_MODES = (*UP_MODES, "resize")


def normalize_pool_sizes(spatial_dims: int, n_steps: int, pool_sizes: PoolSizes | None) -> tuple[tuple[int, ...], ...]:
    """Per-axis pool sizes, one tuple per down-sampling step: ``None`` -> 2 everywhere; an int entry -> that size
    along every axis.

    Raises:
        ValueError: wrong number of entries, an entry with the wrong number of axes, or a size below 1.
    """
    if pool_sizes is None:
        return ((2,) * spatial_dims,) * n_steps
    if isinstance(pool_sizes, int | str) or len(pool_sizes) != n_steps:
        raise ValueError(
            f"pool_sizes needs one entry per down-sampling step ({n_steps} for {n_steps + 1} levels), "
            f"got {pool_sizes!r}"
        )
    out = []
    for step, p in enumerate(pool_sizes):
        sizes = (int(p),) * spatial_dims if isinstance(p, int) else tuple(int(s) for s in p)
        if len(sizes) != spatial_dims or min(sizes) < 1:
            raise ValueError(
                f"pool_sizes[{step}] = {p!r}: give an int >= 1 or {spatial_dims} ints >= 1 (one per spatial axis)"
            )
        out.append(sizes)
    return tuple(out)


def min_shape(pool_sizes: Sequence[Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Per-axis product of the pool sizes: the smallest input that keeps at least one voxel at every level."""
    shape = [1] * spatial_dims
    for sizes in pool_sizes:
        shape = [m * s for m, s in zip(shape, sizes, strict=True)]
    return tuple(shape)


def _kernel(sizes: tuple[int, ...]) -> int | tuple[int, ...]:
    # An int when isotropic, so the layers print (and behave) as they did before per-axis pooling.
    return sizes[0] if len(set(sizes)) == 1 else sizes


class Encoder(nn.Module):
    """A block per level, max-pooling between levels (the U-Net contracting path).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: widths per level, finest first; the last level is the bottleneck.
        block: a registered block name (:func:`agseg.blocks.registry.make_block`) or a factory.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        pool_sizes: one entry per down-sampling step, an int or one per axis (see the module docstring).

    Attributes:
        blocks: ``nn.ModuleList`` of the per-level blocks (``blocks[0]`` the finest).
        pools: ``nn.ModuleList`` of the max-pools, ``pools[i]`` between level ``i`` and ``i + 1``.
        pool_sizes: per-axis pool sizes, one tuple per step.
        min_input_shape: per-axis product of the pool sizes.

    Shapes: ``forward(x (B, in_channels, *S))`` returns ``[f_0, ..., f_{L-1}]`` with ``f_i`` of shape
    ``(B, channels[i], *S_i)``, ``S_{i+1} = floor(S_i / pool_sizes[i])``; ``f_{L-1}`` is the bottleneck.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        block: str | BlockFactory = "double_conv",
        norm: str = "batch",
        pool_sizes: PoolSizes | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels needs at least one level")
        self.spatial_dims, self.in_channels, self.channels = spatial_dims, in_channels, channels
        self.pool_sizes = normalize_pool_sizes(spatial_dims, len(channels) - 1, pool_sizes)
        self.blocks = nn.ModuleList(
            make_block(block, spatial_dims, in_channels if i == 0 else channels[i - 1], channels[i], norm=norm)
            for i in range(len(channels))
        )
        self.pools = nn.ModuleList(MaxPool[spatial_dims](_kernel(p)) for p in self.pool_sizes)

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis: every level must keep at least one voxel."""
        return min_shape(self.pool_sizes, self.spatial_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features per level, finest first; the last one is the bottleneck."""
        feats: list[torch.Tensor] = []
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h if i == 0 else self.pools[i - 1](h))
            feats.append(h)
        return feats


class UNetDecoder(nn.Module):
    """The U-Net expanding path: per level, up-sampling to the skip's exact grid, merging with the skip, a block.

    Level ``l`` (0 finest, ``L - 2`` the coarsest skip) takes the decoder output one level coarser (the bottleneck
    for the coarsest), up-samples it with an :class:`~agseg.blocks.conv.UpConv` that halves the channels to
    ``channels[l]``, merges it with the skip and applies a block: with ``merge="concat"`` (the U-Net)
    ``[skip', up]`` and a block ``2 * channels[l] -> channels[l]``; with ``merge="add"`` (FocusNet++, seed 004
    sec. 2: "we add skip connections from the encoder to the decoder, rather than concatenating them")
    ``skip' + up`` and a block ``channels[l] -> channels[l]``.

    Args:
        spatial_dims: 2 or 3.
        channels: widths per level, finest first, as the encoder's (the last one the bottleneck).
        block: a registered block name or a factory.
        up_mode: ``"interp"`` (linear interpolation + 3x3 conv), ``"nearest"`` (repetition + 3x3 conv),
            ``"transpose"`` (transposed conv) or ``"resize"`` (linear interpolation only, channels kept: the
            authors' code of seeds 001/003, ``UnetUp3_CT``, and UNet++; with ``merge="concat"`` the block then takes
            ``channels[l] + channels[l + 1]``; not with ``merge="add"``, whose widths must match).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        pool_sizes: the encoder's pool sizes; the transposed convolutions undo them axis by axis.
        merge: ``"concat"`` or ``"add"`` (see above).

    Attributes:
        ups: ``nn.ModuleList``, ``ups[l]`` brings level ``l + 1`` to level ``l``.
        blocks: ``nn.ModuleList``, ``blocks[l]`` the block of level ``l``.

    Shapes: ``forward(features)`` with the encoder's ``[f_0 (B, channels[0], *S_0), ..., f_{L-1}]`` returns
    ``[d_0, ..., d_{L-2}]``, ``d_l`` of shape ``(B, channels[l], *S_l)``, finest first.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        block: str | BlockFactory = "double_conv",
        up_mode: str = "interp",
        norm: str = "batch",
        pool_sizes: PoolSizes | None = None,
        merge: str = "concat",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"a decoder needs at least 2 levels (one skip and the bottleneck), got {channels}")
        if merge not in MERGES:
            raise ValueError(f"unknown skip merge {merge!r}; valid: {', '.join(MERGES)}")
        if up_mode not in DECODER_UP_MODES:
            raise ValueError(f"unknown up-sampling mode {up_mode!r}; valid: {', '.join(DECODER_UP_MODES)}")
        if up_mode == "resize" and merge != "concat":
            raise ValueError('up_mode="resize" keeps the coarse width, so it needs merge="concat"')
        n_skips = len(channels) - 1
        self.spatial_dims, self.channels, self.merge, self.up_mode = spatial_dims, channels, merge, up_mode
        self.pool_sizes = normalize_pool_sizes(spatial_dims, n_skips, pool_sizes)
        if up_mode == "resize":
            self.ups = nn.ModuleList(Resize() for _ in range(n_skips))
            widths = [channels[i] + channels[i + 1] for i in range(n_skips)]
        else:
            self.ups = nn.ModuleList(
                UpConv(spatial_dims, channels[i + 1], channels[i], up_mode, scale=_kernel(self.pool_sizes[i]))
                for i in range(n_skips)
            )
            widths = [(2 if merge == "concat" else 1) * channels[i] for i in range(n_skips)]
        self.blocks = nn.ModuleList(
            make_block(block, spatial_dims, widths[i], channels[i], norm=norm) for i in range(n_skips)
        )

    def forward(
        self,
        features: Sequence[torch.Tensor],
        skip_fn: SkipFn | None = None,
        attention: dict[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Decoder outputs, finest first.

        Args:
            features: the encoder's features per level, finest first, the last one the bottleneck.
            skip_fn: ``skip_fn(level, skip, coarse) -> (skip', alpha or None)``, the skip to merge at ``level``;
                identity when ``None``.
            attention: if given, every ``alpha`` that ``skip_fn`` returns is stored as ``attention["level{l}"]``.
        """
        if len(features) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps (one per level), got {len(features)}")
        outs: list[torch.Tensor] = []
        h = features[-1]
        for level in reversed(range(len(self.blocks))):
            skip = features[level]
            if skip_fn is not None:
                skip, alpha = skip_fn(level, skip, h)
                if alpha is not None and attention is not None:
                    attention[f"level{level}"] = alpha
            up = self.ups[level](h, skip.shape[2:])
            h = self.blocks[level](ops.cat([skip, up], dim=1) if self.merge == "concat" else skip + up)
            outs.append(h)
        return outs[::-1]


class AttentionSkips(nn.Module):
    """The Attention U-Net's skip processing: grid attention gates on chosen skips (seed 001, seed 003 sec. 2).

    Gating:
        ``"multi"`` (the papers' design, thesis multi-gating): the gate on skip ``l`` is driven by the decoder
        features one level coarser; the coarsest skip (level ``L - 2``) by the gating signal (1x1(x1) conv + BN +
        ReLU of the bottleneck, the authors' ``UnetGridGatingSignal``).
        ``"single"`` (thesis single-gating): that one gating signal drives every gate.

    Args:
        spatial_dims: 2 or 3.
        channels: widths per level, finest first, as the encoder's.
        gated_levels: skip levels with a gate, 0 the finest; ``None``: all but the finest (seed 001/003).
        gating: ``"multi"`` or ``"single"``.
        heads: sub-gates per skip (multi-dimensional attention, seed 003 sec. 2.2.1).
        inter_ratio: the gates' intermediate channels ``F_int`` as a fraction of the skip's channels.
        sub_sample: factor by which the gates sub-sample the skip (the papers: 2). With per-axis ``pool_sizes``, a
            gate sub-samples only along the axes its level pools (factor 1 where the pool size is 1, where skip
            and gating grids coincide).
        gate_init: ``"open"`` or ``"default"`` (see :class:`~agseg.blocks.attention_gate.GridAttentionGate`).
        norm: norm of the gating signal and the gates' output transforms.
        pool_sizes: the encoder's pool sizes.
        gate_style: ``"oktay"`` (seed 001/003: strided-conv sub-sampling, no norm inside the gate, output 1x1 conv +
            norm, ``F_int = C/2``, x sub-sampled by 2) or ``"thesis"`` (seed 000 Table 3.2: a norm after theta, phi
            and psi, max-pool sub-sampling, ``alpha * x`` as the new skip, ``F_int = C``, and single gating at the
            skip's full resolution). ``inter_ratio``, ``sub_sample`` and the three ``gate_*`` switches below, when
            given, override what the style says.
        gate_norm: a norm after theta, phi and psi.
        gate_output_transform: the output 1x1 conv + norm on ``alpha * x``.
        gate_sub_sample_mode: ``"conv"`` or ``"maxpool"``.
        gating_from: what the gating signal is computed from: ``"bottleneck"`` (the bottleneck block's output, the
            authors' code) or ``"pool"`` (the thesis, sec. 3.2.1: "the feature maps coming from the last
            downsampling operation (max pooling)", i.e. the bottleneck block's input, ``channels[-2]`` wide).
            Default: ``"pool"`` for the thesis style with single gating, ``"bottleneck"`` otherwise.

    Attributes:
        gating_signal: the 1x1 conv + norm + ReLU that makes the gating signal (``channels[-1]`` wide).
        gates: ``nn.ModuleDict`` of :class:`~agseg.blocks.attention_gate.AttentionGateBlock` keyed by ``str(level)``.

    Use: ``skip_fn = skips.bind(features)`` with the encoder's features, finest first (computes the gating signal
    once; a bare bottleneck tensor is accepted with ``gating_from="bottleneck"``), then pass ``skip_fn`` to the
    decoder; ``skip_fn(level, skip (B, C_l, *S_l), coarse) -> (gated skip (B, C_l, *S_l), alpha (B, heads, *S_l))``
    on gated levels, ``(skip, None)`` on the others.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        gated_levels: Iterable[int] | None = None,
        gating: str = "multi",
        heads: int = 1,
        inter_ratio: float | None = None,
        sub_sample: int | None = None,
        gate_init: str = "open",
        norm: str = "batch",
        pool_sizes: PoolSizes | None = None,
        gate_style: str = "oktay",
        gate_norm: bool | None = None,
        gate_output_transform: bool | None = None,
        gate_sub_sample_mode: str | None = None,
        gating_from: str | None = None,
    ) -> None:
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")
        if gate_style not in GATE_STYLES:
            raise ValueError(f"unknown gate_style {gate_style!r}; valid: {', '.join(GATE_STYLES)}")
        thesis = gate_style == "thesis"
        inter_ratio = (1.0 if thesis else 0.5) if inter_ratio is None else inter_ratio
        sub_sample = (1 if thesis and gating == "single" else 2) if sub_sample is None else sub_sample
        gate_kwargs = {
            "gate_norm": thesis if gate_norm is None else bool(gate_norm),
            "output_transform": (not thesis) if gate_output_transform is None else bool(gate_output_transform),
            "sub_sample_mode": ("maxpool" if thesis else "conv")
            if gate_sub_sample_mode is None
            else gate_sub_sample_mode,
        }
        self.gate_style = gate_style
        c = tuple(int(ch) for ch in channels)
        n_skips = len(c) - 1
        levels = sorted(set(range(1, n_skips) if gated_levels is None else (int(i) for i in gated_levels)))
        bad = [i for i in levels if not 0 <= i < n_skips]
        if bad:
            raise ValueError(f"gated_levels {bad} out of range: this net has skip levels 0..{n_skips - 1}")
        if not levels:
            raise ValueError("gated_levels is empty: use 'unet' for a net without gates")
        if inter_ratio <= 0:
            raise ValueError(f"inter_ratio must be > 0, got {inter_ratio}")
        self.channels, self.gating, self.gated_levels = c, gating, tuple(levels)
        pools = normalize_pool_sizes(spatial_dims, n_skips, pool_sizes)
        if gating_from is None:
            gating_from = "pool" if thesis and gating == "single" else "bottleneck"
        if gating_from not in GATING_SOURCES:
            raise ValueError(f"unknown gating_from {gating_from!r}; valid: {', '.join(GATING_SOURCES)}")
        self.gating_from = gating_from
        src = c[-2] if gating_from == "pool" else c[-1]
        self.pool = MaxPool[spatial_dims](_kernel(pools[-1])) if gating_from == "pool" else None
        self.gating_signal = ConvNormAct(spatial_dims, src, c[-1], kernel_size=1, norm=norm)
        self.gates = nn.ModuleDict()
        for lvl in levels:
            g_channels = c[-1] if gating == "single" or lvl == n_skips - 1 else c[lvl + 1]
            factors = tuple(sub_sample if p > 1 else 1 for p in pools[lvl])
            self.gates[str(lvl)] = AttentionGateBlock(
                spatial_dims,
                c[lvl],
                g_channels,
                inter_channels=max(1, round(c[lvl] * inter_ratio)),
                heads=heads,
                sub_sample=_kernel(factors),
                init=gate_init,
                norm=norm,
                **gate_kwargs,
            )

    @property
    def heads(self) -> int:
        """Sub-gates per gated skip (the second axis of every attention map)."""
        return next(iter(self.gates.values())).heads

    def gating_source(self, level: int) -> str:
        """Which signal drives the gate at ``level``: ``"bottleneck"`` or ``"decoder{l+1}"``."""
        if self.gating == "single" or level == len(self.channels) - 2:
            return "bottleneck"
        return f"decoder{level + 1}"

    def bind(self, features: Sequence[torch.Tensor] | torch.Tensor) -> SkipFn:
        """The decoder's ``skip_fn`` for one forward pass, the gating signal computed once from the encoder's
        ``features`` (finest first; the bottleneck alone is enough with ``gating_from="bottleneck"``)."""
        if isinstance(features, torch.Tensor):
            if self.gating_from == "pool":
                raise ValueError('gating_from="pool" needs the encoder features, not the bottleneck alone')
            source = features
        else:
            source = self.pool(features[-2]) if self.gating_from == "pool" else features[-1]
        gating = self.gating_signal(source)

        def skip_fn(level: int, skip: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return self(level, skip, coarse, gating)

        return skip_fn

    def forward(
        self, level: int, skip: torch.Tensor, coarse: torch.Tensor, gating: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gate ``skip`` at ``level`` with ``gating`` (the gating signal) or ``coarse`` (decoder features one level
        coarser), as :meth:`gating_source` says; ``(skip, None)`` on an ungated level."""
        key = str(level)
        if key not in self.gates:
            return skip, None
        g = gating if self.gating_source(level) == "bottleneck" else coarse
        return self.gates[key](skip, g)


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
            outs.insert(0, self.fuse(ops.cat(outs, dim=1)))
        return outs if self.training else outs[0]


def check_input(
    x: torch.Tensor,
    spatial_dims: int,
    in_channels: int,
    min_input_shape: Sequence[int],
    pool_sizes: Sequence[Sequence[int]],
) -> None:
    """Raise a ``ValueError`` that says what is wrong when ``x`` is not a valid input of an encoder-decoder net.

    Args:
        x: the input, expected ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial axes.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        min_input_shape: the smallest spatial size per axis (the per-axis product of the pool sizes).
        pool_sizes: per-axis pool sizes, one tuple per down-sampling step (``levels = len(pool_sizes) + 1``).
    """
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected a {spatial_dims + 2}D input (B, C, {', '.join('XYZ'[:spatial_dims])}) for a "
            f"{spatial_dims}D net, got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    spatial, minimum = tuple(x.shape[2:]), tuple(min_input_shape)
    small = [a for a, (s, m) in enumerate(zip(spatial, minimum, strict=True)) if s < m]
    if not small:
        return
    levels = len(pool_sizes) + 1
    if all(p == 2 for sizes in pool_sizes for p in sizes):
        raise ValueError(
            f"input spatial size {spatial} is too small for {levels} levels: every side must be at least "
            f"{minimum[0]} (2 ** (levels - 1)); too small along axis {', '.join(map(str, small))}"
        )
    detail = "; ".join(f"axis {a} must be at least {minimum[a]}, got {spatial[a]}" for a in small)
    raise ValueError(
        f"input spatial size {spatial} is too small for {levels} levels with pool_sizes "
        f"{[list(p) for p in pool_sizes]}: {detail} (the minimum per axis is {minimum}, the product of the "
        f"pool sizes along it)"
    )


#: Up-sampling of the coarser node in :class:`NestedDecoder`: ``"interp"`` (interpolation + 3x3 conv to the row's
#: width, agseg's U-Net), ``"transpose"`` (transposed conv to the row's width), ``"resize"`` (interpolation only, the
#: coarser node's width is kept: UNet++).
NESTED_UP_MODES = ("interp", "transpose", "resize")

#: A node ``X^{i,j}`` of the nested grid: ``(row i, column j)``; row 0 is the finest, column 0 the encoder.
Node = tuple[int, int]


class NestedDecoder(nn.Module):
    """UNet++'s nested, dense skip paths (Zhou et al. 2018) with ANU-Net's attention gates (seed 002).

    The nodes ``X^{i,j}`` form a triangle over the encoder's features: row ``i`` (0 finest) is encoder level ``i``'s
    grid and width ``channels[i]``, column ``j`` its ``j``-th convolution; column 0 is the encoder
    (``X^{i,0} = f_i``). With ``L = len(channels) - 1``, every node with ``j >= 1`` and ``i + j <= L`` is::

        u^{i,j} = up^{i,j}(X^{i+1,j-1})                          to row i's exact grid (odd sizes work)
        X^{i,j} = block^{i,j}([A^{i,j}_0(X^{i,0}; u^{i,j}), ..., A^{i,j}_{j-1}(X^{i,j-1}; u^{i,j}), u^{i,j}])

    ``A^{i,j}_k(x; g)`` is an attention gate on the same-row skip ``X^{i,k}`` driven by the up-sampled coarser node
    ``u^{i,j}``, the very tensor that is concatenated (seed 002: "the gate signal (g), e.g. X2_1 [...] which is an
    upsampled feature", "the encoded feature (f), e.g. X1_1"); with ``attention=False`` ``A`` is the identity and the
    decoder is UNet++'s. One gate per (node, skip) pair, our reading where seed 002 is ambiguous: every skip a node
    receives is gated by that node's own signal, so ``X^{1,0}`` is gated by ``u^{1,1}`` for ``X^{1,1}`` and again,
    by another gate, by ``u^{1,2}`` for ``X^{1,2}``. The alternatives: one gate per node over the concatenated skips
    (one map shared by skips of different depth), or one gate per source node whose output every later node reuses
    (a later node then sees its skips gated by older, coarser-column signals, not by its own). The gate is
    :class:`~agseg.blocks.attention_gate.AttentionGateBlock` at the skip's full resolution (``sub_sample = 1``: its
    gating signal is already on the skip's grid), open at initialisation by default.

    Counts for ``L`` levels: ``L (L + 1) / 2`` nested nodes (``(L + 1)(L + 2) / 2`` with the encoder column), one
    up-sampling per nested node, and ``sum_j j (L + 1 - j) = L (L + 1)(L + 2) / 6`` gates (20 for L = 4).

    Args:
        spatial_dims: 2 or 3.
        channels: widths per row, finest first, as the encoder's (the last one the bottleneck row ``X^{L,0}``).
        block: the conv block of every nested node (a registered name or a factory).
        up_mode: one of :data:`NESTED_UP_MODES`.
        norm: ``"batch"``, ``"instance"`` or ``"none"`` (blocks and the gates' output transforms).
        pool_sizes: the encoder's pool sizes (the transposed convolutions undo them axis by axis).
        attention: gate every skip (ANU-Net); ``False``: UNet++.
        attention_heads: sub-gates per gate (multi-dimensional attention, seed 003 sec. 2.2.1).
        inter_ratio: the gates' intermediate channels as a fraction of the skip's channels.
        gate_init: ``"open"`` or ``"default"`` (see :class:`~agseg.blocks.attention_gate.GridAttentionGate`).
        gate_norm: a norm after each of the gates' theta, phi and psi convolutions (seed 002 Fig. 4: "conv + BN" on
            each input and before the sigmoid); off by default (agseg's grid gate, seeds 001/003).

    Attributes:
        ups: ``nn.ModuleDict``, ``ups["i_j"]`` brings ``X^{i+1,j-1}`` to row ``i`` for node ``X^{i,j}``.
        blocks: ``nn.ModuleDict``, ``blocks["i_j"]`` the block of node ``X^{i,j}``.
        gates: ``nn.ModuleDict`` of ``nn.ModuleList``: ``gates["i_j"][k]`` gates ``X^{i,k}`` for ``X^{i,j}``
            (empty without attention).
        nodes: the nested nodes ``(i, j)`` in the order they are computed (column by column, finest row first).

    Shapes: ``forward(features)`` with the encoder's ``[f_0 (B, channels[0], *S_0), ..., f_L]`` returns every node
    ``{(i, j): (B, channels[i], *S_i)}``, the encoder column included.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        block: str | BlockFactory = "double_conv",
        up_mode: str = "interp",
        norm: str = "batch",
        pool_sizes: PoolSizes | None = None,
        attention: bool = True,
        attention_heads: int = 1,
        inter_ratio: float = 0.5,
        gate_init: str = "open",
        gate_norm: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        c = tuple(int(ch) for ch in channels)
        if len(c) < 2:
            raise ValueError(f"a nested decoder needs at least 2 rows (channels), got {c}")
        if up_mode not in NESTED_UP_MODES:
            raise ValueError(f"unknown up-sampling mode {up_mode!r}; valid: {', '.join(NESTED_UP_MODES)}")
        if inter_ratio <= 0:
            raise ValueError(f"inter_ratio must be > 0, got {inter_ratio}")
        depth = len(c) - 1
        self.spatial_dims, self.channels, self.depth = spatial_dims, c, depth
        self.up_mode, self.attention = up_mode, bool(attention)
        self.pool_sizes = normalize_pool_sizes(spatial_dims, depth, pool_sizes)
        self.nodes: tuple[Node, ...] = tuple((i, j) for j in range(1, depth + 1) for i in range(depth + 1 - j))
        self.ups = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        for i, j in self.nodes:
            key = f"{i}_{j}"
            if up_mode == "resize":
                self.ups[key] = Resize()
                up_channels = c[i + 1]
            else:
                self.ups[key] = UpConv(spatial_dims, c[i + 1], c[i], up_mode, scale=_kernel(self.pool_sizes[i]))
                up_channels = c[i]
            self.blocks[key] = make_block(block, spatial_dims, j * c[i] + up_channels, c[i], norm=norm)
            if self.attention:
                self.gates[key] = nn.ModuleList(
                    AttentionGateBlock(
                        spatial_dims,
                        c[i],
                        up_channels,
                        inter_channels=max(1, round(c[i] * inter_ratio)),
                        heads=attention_heads,
                        sub_sample=1,
                        init=gate_init,
                        norm=norm,
                        gate_norm=gate_norm,
                    )
                    for _ in range(j)
                )

    @staticmethod
    def gate_name(row: int, column: int, skip: int) -> str:
        """The attention map name of the gate on skip ``X^{row,skip}`` feeding node ``X^{row,column}``."""
        return f"node{row}_{column}_skip{skip}"

    def forward(
        self, features: Sequence[torch.Tensor], attention: dict[str, torch.Tensor] | None = None
    ) -> dict[Node, torch.Tensor]:
        """Every node of the grid, ``{(i, j): X^{i,j}}``, the encoder column ``(i, 0)`` included.

        Args:
            features: the encoder's features per level, finest first, the last one the bottleneck.
            attention: if given, the gates' coefficients are stored as ``attention[gate_name(i, j, k)]``,
                ``(B, heads, *S_i)`` in [0, 1].
        """
        if len(features) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps (one per row), got {len(features)}")
        x: dict[Node, torch.Tensor] = {(i, 0): f for i, f in enumerate(features)}
        for i, j in self.nodes:
            key = f"{i}_{j}"
            skips = [x[(i, k)] for k in range(j)]
            u = self.ups[key](x[(i + 1, j - 1)], skips[0].shape[2:])
            if self.attention:
                gated = []
                for k, (gate, skip) in enumerate(zip(self.gates[key], skips, strict=True)):
                    y, alpha = gate(skip, u)
                    gated.append(y)
                    if attention is not None:
                        attention[self.gate_name(i, j, k)] = alpha
                skips = gated
            x[(i, j)] = self.blocks[key](ops.cat([*skips, u], dim=1))
        return x
