"""ANU-Net: attention-based nested U-Net, with pruning at inference (seed 002: Li et al. 2020), and UNet++.

The net is an :class:`~agseg.nets.parts.Encoder` (the backbone column ``X^{i,0}``), a
:class:`~agseg.nets.parts.NestedDecoder` (UNet++'s nested dense skip paths, every same-row skip passed through an
attention gate driven by the up-sampled coarser node) and a :class:`~agseg.nets.parts.DeepSupervisionHead` with a
1x1(x1) head on every first-row node ``X^{0,1..L}`` (deep supervision, seed 002 Fig. 5)::

    row 0   X00 ──▶ X01 ──▶ X02 ──▶ X03 ──▶ X04        heads on X01..X04: ANU-Net L1..L4
             ↓    ↗       ↗       ↗       ↗
    row 1   X10 ──▶ X11 ──▶ X12 ──▶ X13                ↓    max-pooling (the encoder column X^{i,0})
             ↓    ↗       ↗       ↗                    ↗    up-sampling of X^{i+1,j-1} into X^{i,j}: u^{i,j}
    row 2   X20 ──▶ X21 ──▶ X22                        ──▶  same-row skips, dense: X^{i,j} receives every
             ↓    ↗       ↗                                 X^{i,k}, k < j, each through its own gate
    row 3   X30 ──▶ X31                                     driven by u^{i,j}
             ↓    ↗
    row 4   X40

Pruning (seed 002 Fig. 6): the level-``l`` output ``X^{0,l}`` depends only on the nodes ``X^{i,j}`` with
``i + j <= l``, which are exactly the nodes of an ANU-Net of depth ``l`` with widths ``channels[:l + 1]``.
:meth:`ANUNet.prune` builds that smaller net (``deep_supervision=False``: its one head is the level-``l`` head) and
copies the weights into it, so a pruned net is an ordinary ``anunet`` that :func:`~agseg.nets.registry.create_model`
rebuilds from :meth:`ANUNet.pruned_kwargs`.

Design choices where seed 002 does not say (each tested in ``tests/nets/test_anunet.py``):
    * Gates: one per (node, skip) pair, driven by the node's up-sampled input ``u^{i,j} = up(X^{i+1,j-1})`` (the
      tensor that is also concatenated), at the skip's full resolution; see :class:`~agseg.nets.parts.NestedDecoder`.
      The gate is agseg's grid gate (seed 001/003 eq. 1-2: no norm after ``W_x``, ``W_g``, ``psi``; an output 1x1
      conv + BN), open at initialisation; seed 002 Fig. 4 describes conv + BN on each input and before the sigmoid.
    * Up-sampling: ``up_mode="interp"`` (default: interpolation + 3x3 conv to the row's width, the thesis' U-Net
      up-sampling, as in the U-Net configs that ANU-Net was compared with); ``"resize"`` is UNet++'s parameter-free
      interpolation (the coarser node's width is concatenated), used by the ``anunet_paper`` preset.
    * Outputs: logits (the paper's heads end in a sigmoid; agseg's losses take logits). Training mode with deep
      supervision: ``[Y_L, Y_{L-1}, ..., Y_1]``, ``Y_l`` the head on ``X^{0,l}``: the main output (the full net,
      ANU-Net L_L) first, as ``DeepSupervisionLoss`` and the predictor expect; ``anunet_hybrid`` sums the list with
      unit weights (eq. 3). Eval mode: ``Y_L`` alone (not the mean of the heads, UNet++'s "accurate mode"), so the
      full net's output is the deepest pruning level's and ``prune(L)`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agseg.blocks.registry import BlockFactory
from agseg.layers import check_spatial_dims
from agseg.nets.base import SegmentationNet
from agseg.nets.parts import DeepSupervisionHead, Encoder, NestedDecoder, Output, PoolSizes, check_input
from agseg.nets.registry import register_model

__all__ = ["ANUNet"]


@register_model(
    "anunet",
    description="ANU-Net: UNet++ nested dense skips, attention gate on every skip, deep supervision, prunable L1..L4",
    paper="seed 002 (Li et al. 2020, ANU-Net); Zhou et al. 2018 (UNet++)",
)
class ANUNet(SegmentationNet):
    """ANU-Net (``attention=True``) or UNet++ (``attention=False``) for 2D or 3D segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels (classes; 1 for a binary sigmoid output).
        channels: widths per row, finest first; ``L = len(channels) - 1`` is the depth, the level of the main
            output ``X^{0,L}`` (seed 002: 32-64-128-256-512, L = 4).
        norm: ``"batch"`` (paper), ``"instance"`` or ``"none"``.
        deep_supervision: a head on every first-row node ``X^{0,1..L}`` (the paper's, and what makes
            :meth:`prune` possible); ``False``: one head on ``X^{0,L}``.
        attention: gate every nested skip (ANU-Net); ``False`` gives UNet++.
        up_mode: ``"interp"``, ``"transpose"`` or ``"resize"`` (see the module docstring).
        attention_heads: sub-gates per gate (multi-dimensional attention, seed 003 sec. 2.2.1).
        inter_ratio: the gates' intermediate channels as a fraction of the skip's channels.
        gate_init: ``"open"`` (alpha about 0.95 at init) or ``"default"`` (PyTorch's init).
        gate_norm: batch norm after each gate convolution (theta, phi, psi): seed 002 Fig. 4's gate, "conv + BN" on
            each input and before the sigmoid. Off by default (agseg's grid gate, tested against seed 001/003 eq. 1-2).
        block: the conv block of every node, a name in :mod:`agseg.blocks.registry` or a factory.
        pool_sizes: one entry per down-sampling step (``L``), an int or one per axis; default 2 everywhere.

    Attributes:
        encoder, decoder, head: the parts (:class:`~agseg.nets.parts.Encoder`,
            :class:`~agseg.nets.parts.NestedDecoder`, :class:`~agseg.nets.parts.DeepSupervisionHead`).
        level: ``L``, the level of the main output.
        output_levels: the levels with a head, ascending (``1..L`` with deep supervision, else ``(L,)``).

    Parameter names: ``encoder.blocks.i`` (``X^{i,0}``), ``decoder.ups.i_j``, ``decoder.blocks.i_j``,
    ``decoder.gates.i_j.k`` (the gate on ``X^{i,k}`` for ``X^{i,j}``), ``head.heads.n`` (the head on
    ``X^{0,L-n}``: ``head.heads.0`` is the main output's).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` logits; every side at least
    :attr:`min_input_shape` (``2 ** L`` with the default pooling); odd sizes work.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        norm: str = "batch",
        deep_supervision: bool = True,
        attention: bool = True,
        up_mode: str = "interp",
        attention_heads: int = 1,
        inter_ratio: float = 0.5,
        gate_init: str = "open",
        block: str | BlockFactory = "double_conv",
        pool_sizes: PoolSizes | None = None,
        gate_norm: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 rows (level 1: X00, X10, X01), got {channels}")
        if in_channels < 1 or out_channels < 1 or min(channels) < 1:
            raise ValueError("in_channels, out_channels and every width in channels must be >= 1")
        self._init_kwargs: dict[str, Any] = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "norm": norm,
            "deep_supervision": bool(deep_supervision),
            "attention": bool(attention),
            "up_mode": up_mode,
            "attention_heads": attention_heads,
            "inter_ratio": inter_ratio,
            "gate_init": gate_init,
            "block": block,
            "pool_sizes": pool_sizes,
            "gate_norm": bool(gate_norm),
        }
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels = channels
        self.deep_supervision = bool(deep_supervision)
        self.attention = bool(attention)
        self.level = len(channels) - 1
        self.output_levels: tuple[int, ...] = (
            tuple(range(1, self.level + 1)) if self.deep_supervision else (self.level,)
        )
        self.encoder = Encoder(spatial_dims, in_channels, channels, block=block, norm=norm, pool_sizes=pool_sizes)
        self.pool_sizes = self.encoder.pool_sizes
        self.decoder = NestedDecoder(
            spatial_dims,
            channels,
            block=block,
            up_mode=up_mode,
            norm=norm,
            pool_sizes=self.pool_sizes,
            attention=attention,
            attention_heads=attention_heads,
            inter_ratio=inter_ratio,
            gate_init=gate_init,
            gate_norm=gate_norm,
        )
        # heads[n] is the head on X^{0,L-n}: the main output's first (fuse=False: no fused output).
        n_heads = len(self.output_levels)
        self.head = DeepSupervisionHead(
            spatial_dims, (channels[0],) * n_heads, out_channels, self.deep_supervision, False
        )

    # ------------------------------------------------------------------------------------------------ contract
    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis: every row must keep at least one voxel (product of the pool sizes)."""
        return self.encoder.min_input_shape

    @property
    def has_gates(self) -> bool:
        return self.attention

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The constructor's arguments, resolved (``create_model("anunet", **net.init_kwargs)`` rebuilds the net)."""
        return dict(self._init_kwargs)

    @property
    def pruning_levels(self) -> tuple[int, ...]:
        """The levels :meth:`prune` accepts: those with a head (:attr:`output_levels`)."""
        return self.output_levels

    def head_index(self, level: int) -> int:
        """Index in ``head.heads`` of the head on ``X^{0,level}``."""
        return self.level - self._check_level(level)

    def _check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"a pruning level is an int in {list(self.output_levels)}, got {level!r}")
        if level not in self.output_levels:
            valid = ", ".join(map(str, self.output_levels))
            if 1 <= level < self.level:
                raise ValueError(
                    f"level {level}: this net has no head on X^{{0,{level}}} (heads on levels {valid}; it was pruned "
                    f"to level {self.level} or built without deep supervision); prune the full net with deep "
                    f"supervision instead"
                )
            raise ValueError(f"level {level} out of range: this net of depth {self.level} has levels {valid}")
        return level

    # ------------------------------------------------------------------------------------------------- forward
    def _nodes(
        self, x: torch.Tensor, maps: dict[str, torch.Tensor] | None = None
    ) -> dict[tuple[int, int], torch.Tensor]:
        check_input(x, self.spatial_dims, self.in_channels, self.min_input_shape, self.pool_sizes)
        return self.decoder(self.encoder(x), attention=maps)

    def _run(self, x: torch.Tensor, maps: dict[str, torch.Tensor] | None = None) -> Output:
        nodes = self._nodes(x, maps)
        if self.deep_supervision and self.training:
            feats = [nodes[(0, lvl)] for lvl in reversed(self.output_levels)]
        else:
            feats = [nodes[(0, self.level)]]
        return self.head(feats, x.shape[2:])

    def forward(self, x: torch.Tensor) -> Output:
        """Logits ``(B, out_channels, *spatial)``: ``Y_L``; with deep supervision in training mode the list
        ``[Y_L, Y_{L-1}, ..., Y_1]`` (main output first, then by decreasing level)."""
        return self._run(x)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[Output, dict[str, torch.Tensor]]:
        """``(output, maps)``: output as :meth:`forward`; ``maps["node{i}_{j}_skip{k}"]`` the coefficients of the gate
        on ``X^{i,k}`` feeding ``X^{i,j}``, ``(B, attention_heads, *S_i)`` in [0, 1]. Empty with ``attention=False``."""
        maps: dict[str, torch.Tensor] = {}
        out = self._run(x, maps)
        return out, maps

    def forward_levels(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The output of every pruning level from one forward pass, in any mode: ``{l: Y_l}`` for
        ``l in output_levels``, each ``(B, out_channels, *spatial)`` logits; ``Y_l`` equals ``prune(l)(x)`` in eval
        mode. For scoring every level of one trained net (seed 002 Table: ANU-Net L1..L4)."""
        nodes = self._nodes(x)
        return {lvl: self.head.heads[self.head_index(lvl)](nodes[(0, lvl)]) for lvl in self.output_levels}

    # ------------------------------------------------------------------------------------------------- pruning
    def pruned_kwargs(self, level: int) -> dict[str, Any]:
        """The constructor's arguments of the net :meth:`prune` returns: depth ``level`` (``channels[:level + 1]``,
        the first ``level`` pool sizes), one head (``deep_supervision=False``), everything else unchanged. With the
        registry name they rebuild the pruned net: ``create_model("anunet", **net.pruned_kwargs(3))``."""
        self._check_level(level)
        kwargs = self.init_kwargs
        kwargs["channels"] = self.channels[: level + 1]
        if kwargs["pool_sizes"] is not None:
            kwargs["pool_sizes"] = tuple(self.pool_sizes[:level])
        kwargs["deep_supervision"] = False
        return kwargs

    def prune(self, level: int) -> ANUNet:
        """A new, standalone net that holds and computes only what the level-``level`` output ``X^{0,level}`` needs
        (seed 002 sec. "Model pruning", Fig. 6: ANU-Net L1..L4).

        The returned :class:`ANUNet` has depth ``level``: encoder rows ``0..level``, the nested nodes ``X^{i,j}``
        with ``i + j <= level`` and their gates, and the level-``level`` head as its only head. Its weights and
        buffers are copies of this net's (same values, own storage, same device and dtype, same train/eval mode);
        in eval mode its output equals ``forward_levels(x)[level]`` exactly. Prune after loading the trained
        weights; ``prune(self.level)`` of a pruned net returns a copy.

        Raises:
            ValueError: ``level`` has no head here (out of ``1..L``, or below the level of a pruned net or of a net
                without deep supervision: the lower heads were never there).
            TypeError: ``level`` is not an int.
        """
        kwargs = self.pruned_kwargs(level)
        pruned = type(self)(**kwargs)
        ref = next(self.parameters())
        pruned.to(device=ref.device, dtype=ref.dtype)
        source = self.state_dict()
        main = f"head.heads.{self.head_index(level)}."
        state = {}
        for key in pruned.state_dict():
            src = main + key.removeprefix("head.heads.0.") if key.startswith("head.heads.0.") else key
            state[key] = source[src].detach().clone()
        pruned.load_state_dict(state, strict=True)
        return pruned.train(self.training)


_PAPER = "seed 002 (Li et al. 2020)"
register_model(
    "anunet_paper",
    ANUNet,
    defaults={
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": (32, 64, 128, 256, 512),
        "deep_supervision": True,
        "attention": True,
        "up_mode": "resize",
    },
    description="ANU-Net as in the paper: 32-64-128-256-512 (L4), UNet++ up-sampling, 4 deep-supervision heads; "
    "train with loss anunet_hybrid",
    paper=f"{_PAPER}; loss eq. 3 (anunet_hybrid)",
)
register_model(
    "unetpp",
    ANUNet,
    defaults={
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": (32, 64, 128, 256, 512),
        "deep_supervision": True,
        "attention": False,
    },
    description="UNet++: nested dense skips without gates (ANU-Net's comparison), deep supervision, prunable",
    paper="Zhou et al. 2018; the UNet++ column of seed 002",
)
