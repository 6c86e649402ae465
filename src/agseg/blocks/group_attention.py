"""The residual group attention block of FocusNet++ (ResGANet; seed 004 sec. 2.1, Fig. 2).

Data flow for an input ``x`` of ``C_in`` channels and a block width ``C`` (``out_channels``), ``G`` filter groups
of ``d = C / G`` channels (the paper: ``G = 4``), ``P = G / 2`` attention/feature pairs::

    h = Conv1x1(x)                                     C_in -> C       "processed by a 1x1 convolution"
    g_0, ..., g_{G-1} = split(h, G)                    d channels each
    for p in 0..P-1:                                    group 2p learns attention for group 2p+1 ("to its right")
        A_p = sigmoid(Conv1x1(PreAct3(PreAct3(g_{2p}))))       per-pixel weights, d channels
        O_p = g_{2p+1} + PreAct3(PreAct3(g_{2p+1}))            O_r = x_r + F(x_r)
        a_p = A_p * O_p                                        Hadamard product
        e_p = LReLU(Norm(Conv1x1(a_p)))                        d -> 2d, the same embedding for every pair
    y = SE(Norm(Conv1x1(concat(e_0, ..., e_{P-1}))))           P * 2d = C -> C, squeeze-and-excitation
    out = shortcut(x) + y                                       identity, or Conv1x1 + Norm when C_in != C

with ``PreAct3 = Norm - LeakyReLU - Conv 3x3(x3)`` (the paper's "BN-LeakyReLU-Conv"). Kernels as sec. 2 says: 3x3
for feature extraction, 1x1 before the sigmoid gating. One code path for 2D and 3D (:mod:`agseg.layers`).

Choices where seed 004 is not explicit (each tested in ``tests/blocks/test_group_attention.py``):

- **Pairing.** "Each group, alternatively, is responsible for learning the attention weights for the group to its
  right, and the next group learns the features": roles alternate, so groups ``(0, 1)``, ``(2, 3)`` form pairs, the
  attention of group 1 depends on group 0 only and that of group 3 on group 2 only (as in the authors' public
  Keras code). ``groups`` must therefore be even.
- **Attention channels.** "per-pixel weights": one weight per pixel *and* channel of the feature group (``d``
  maps, as the authors' code), not one map broadcast over the group's channels.
- **Residual unit.** ``O_r = x_r + F(x_r)`` with an identity shortcut, as the equation is written (the authors'
  code adds a 1x1 projection on it).
- **"Permutation invariant 1D convolution embedding".** The paper does not say over what. We read it as a
  kernel-size-1 convolution ("1D" in the PointNet sense of a shared per-element map) **shared by every group
  pair**: it acts on each voxel alone (it commutes with any permutation of the voxels) and it is the same
  function for every pair (permuting the pairs permutes their embeddings). The concatenation and final 1x1
  convolution that follow are ordered, as the paper describes them. ``shared_embedding=False`` gives one
  embedding per pair, as the authors' code.
- **Norms.** A norm after the final 1x1 convolution, before the squeeze-and-excitation (ResNeXt; the authors'
  code). Convolutions directly followed by a norm have no bias (unless ``norm="none"``); all others have one.
- **No activation after the residual addition** (pre-activation residual design, He et al. 2016, which the
  paper's BN-LeakyReLU-Conv order follows): a closed branch (``y = 0``) makes the block an exact identity. The
  authors' code applies a LeakyReLU after the addition.
- **LeakyReLU slope 0.3**: Keras' default, the framework of the paper (its code calls ``LeakyReLU()``).
- **SE reduction 16** (Hu et al.; not given in seed 004).
"""

from __future__ import annotations

import torch
from torch import nn

from agseg.blocks import ops
from agseg.blocks.squeeze_excite import SqueezeExcitation
from agseg.layers import Conv, check_spatial_dims, make_norm

__all__ = ["GroupAttention", "PreActResidual", "ResGroupAttentionBlock"]


def _pre_act(spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int, norm: str, slope: float, bias: bool):
    """``Norm - LeakyReLU - Conv`` (the paper's BN-LeakyReLU-Conv)."""
    return nn.Sequential(
        make_norm(norm, spatial_dims, in_ch),
        nn.LeakyReLU(slope),
        Conv[spatial_dims](in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias),
    )


class GroupAttention(nn.Module):
    """Per-pixel attention weights learned from one filter group (seed 004 sec. 2.1, ``A_r``).

    ``A = sigmoid(Conv1x1(PreAct(PreAct(g))))``: two Norm-LeakyReLU-Conv 3x3(x3) operations followed by a
    Conv 1x1(x1)-sigmoid.

    Shapes: ``(B, channels, *spatial) -> (B, channels, *spatial)`` in (0, 1).
    """

    def __init__(
        self, spatial_dims: int, channels: int, norm: str = "batch", negative_slope: float = 0.3, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _pre_act(spatial_dims, channels, channels, kernel_size, norm, negative_slope, bias=norm == "none"),
            _pre_act(spatial_dims, channels, channels, kernel_size, norm, negative_slope, bias=True),
        )
        self.gate = Conv[spatial_dims](channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(self.body(x)))


class PreActResidual(nn.Module):
    """``O = x + F(x)``, ``F`` two Norm-LeakyReLU-Conv 3x3(x3) operations (seed 004 sec. 2.1, ``O_r``).

    Shapes: ``(B, channels, *spatial) -> (B, channels, *spatial)``.
    """

    def __init__(
        self, spatial_dims: int, channels: int, norm: str = "batch", negative_slope: float = 0.3, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _pre_act(spatial_dims, channels, channels, kernel_size, norm, negative_slope, bias=norm == "none"),
            _pre_act(spatial_dims, channels, channels, kernel_size, norm, negative_slope, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResGroupAttentionBlock(nn.Module):
    """Residual group attention block (ResGANet, seed 004 sec. 2.1); see the module docstring for the data flow
    and the choices made where the paper is not explicit.

    Registered in :mod:`agseg.blocks.registry` as ``"resgroup"``, so any net taking ``block=`` can use it
    (``create_model("unet", block="resgroup")``).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels ``C_in``.
        out_channels: block width ``C``, divisible by ``groups``.
        norm: ``"batch"`` (the paper), ``"instance"`` or ``"none"``.
        groups: filter groups ``G`` (4 in the paper); even, half of them attention groups.
        se_reduction: bottleneck ratio of the squeeze-and-excitation.
        negative_slope: LeakyReLU slope (0.3, Keras' default).
        shared_embedding: one 1x1 embedding for every group pair (our reading of "permutation invariant");
            ``False``: one per pair (the authors' code).
        kernel_size: kernel of the feature-extraction convolutions (3).

    Attributes:
        proj_in: the input 1x1(x1) convolution ``C_in -> C``.
        attention: ``nn.ModuleList`` of :class:`GroupAttention`, ``attention[p]`` reads group ``2p``.
        features: ``nn.ModuleList`` of :class:`PreActResidual`, ``features[p]`` transforms group ``2p + 1``.
        embed: ``nn.ModuleList`` of the ``d -> 2d`` embeddings (one entry when shared).
        proj_out: the final 1x1(x1) convolution ``C -> C`` and its norm.
        se: the :class:`~agseg.blocks.squeeze_excite.SqueezeExcitation`.
        shortcut: identity when ``C_in == C``, else 1x1(x1) convolution + norm.

    Shapes: ``(B, C_in, *spatial) -> (B, C, *spatial)`` (the grid is kept).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str = "batch",
        groups: int = 4,
        se_reduction: int = 16,
        negative_slope: float = 0.3,
        shared_embedding: bool = True,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if groups < 2 or groups % 2:
            raise ValueError(f"groups must be even and >= 2 (attention/feature pairs), got {groups}")
        if out_channels < groups or out_channels % groups:
            raise ValueError(
                f"out_channels ({out_channels}) must be a positive multiple of groups ({groups}): the block splits "
                f"its width into {groups} filter groups"
            )
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        d, pairs = out_channels // groups, groups // 2
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.group_channels, self.pairs, self.shared_embedding = d, pairs, shared_embedding
        no_bias = norm != "none"
        conv = Conv[spatial_dims]
        self.proj_in = conv(in_channels, out_channels, 1)
        self.attention = nn.ModuleList(
            GroupAttention(spatial_dims, d, norm, negative_slope, kernel_size) for _ in range(pairs)
        )
        self.features = nn.ModuleList(
            PreActResidual(spatial_dims, d, norm, negative_slope, kernel_size) for _ in range(pairs)
        )
        self.embed = nn.ModuleList(
            nn.Sequential(
                conv(d, 2 * d, 1, bias=not no_bias), make_norm(norm, spatial_dims, 2 * d), nn.LeakyReLU(negative_slope)
            )
            for _ in range(1 if shared_embedding else pairs)
        )
        self.proj_out = nn.Sequential(
            conv(pairs * 2 * d, out_channels, 1, bias=not no_bias), make_norm(norm, spatial_dims, out_channels)
        )
        self.se = SqueezeExcitation(spatial_dims, out_channels, se_reduction)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(
                conv(in_channels, out_channels, 1, bias=not no_bias), make_norm(norm, spatial_dims, out_channels)
            )
        )

    def split(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The ``G`` filter groups of ``h`` ``(B, C, *spatial)``, each ``(B, d, *spatial)``."""
        return list(torch.chunk(h, self.groups, dim=1))

    def attend(self, h: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Group attention on ``h`` (the output of :attr:`proj_in`, ``(B, C, *spatial)``).

        Returns:
            ``(attended, maps)``, one entry per pair ``p``: ``attended[p] = maps[p] * O_p`` and ``maps[p] = A_p``
            (learned from group ``2p``), both ``(B, d, *spatial)``.
        """
        g = self.split(h)
        maps = [self.attention[p](g[2 * p]) for p in range(self.pairs)]
        attended = [maps[p] * self.features[p](g[2 * p + 1]) for p in range(self.pairs)]
        return attended, maps

    def embed_groups(self, attended: list[torch.Tensor]) -> list[torch.Tensor]:
        """The ``d -> 2d`` embedding of each pair's attended features (the same module for all when shared)."""
        return [self.embed[0 if self.shared_embedding else p](a) for p, a in enumerate(attended)]

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``y`` ``(B, C, *spatial)`` (everything but the shortcut)."""
        attended, _ = self.attend(self.proj_in(x))
        return self.se(self.proj_out(ops.cat(self.embed_groups(attended), dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.branch(x)
