"""Sononet and AG-Sononet: image classifiers with a VGG-like feature extractor (seed 003 sec. 2.4, Fig. 4, Table 5).

**Sononet** (Baumgartner et al. 2016, the baseline of seed 003): a feature extraction module of five levels of
3x3 conv + batch norm + ReLU layers (``convs = (3, 3, 3, 2, 2)`` per level), max-pooling by 2 between levels, then an
*adaptation module*: a 1x1 conv + BN + ReLU to half the last width, a 1x1 conv + BN to the number of classes, and
channel-wise global average pooling. The logits are the pooled class maps.

**AG-Sononet** (seed 003 sec. 2.4): the adaptation module is removed; the last feature map ``g`` (level 4, "layer
17") is the gating signal of two grid attention gates on the last feature maps of levels 2 and 3 ("layer 11 and
14, just before pooling"). Per gate, the compatibility score ``q`` of eq. 1 is computed by a
:class:`~agseg.blocks.attention_gate.GridAttentionGate` (``theta`` 1x1 on ``x``, ``phi`` 1x1 on ``g`` resampled
bilinearly to ``x``'s grid, ``psi`` 1x1 after a ReLU) and normalised over the image as the paper prescribes,

    alpha_i = (q_i - min_j q_j) / sum_j (q_j - min_j q_j),

then the attention-weighted sum ``x_hat = sum_i alpha_i x_i`` (a vector of ``F_l`` features) is taken per scale.
The coarsest scale is globally average pooled. The three vectors are concatenated and a fully connected layer
gives the logits. With ``deep_supervision`` a fully connected head per scale is added (the authors' ``deep_sup``
aggregation: in training mode ``forward`` returns ``[main, head_gate0, head_gate1, head_pooled]``, main first;
their weights ``[1, 0.1, 0.1, 0.1]`` go to ``train.ds_weights``).

Capacity (Table 5, "number of initial filters is denoted by the postfix -n"): widths ``(n, 2n, 4n, 8n, 8n)``. The
presets ``sononet8/16/32`` and ``ag_sononet8/16/32`` have 0.16/0.65/2.58 M and 0.18/0.70/2.79 M parameters for
14 classes and one input channel, as Table 5 lists (``tests/nets/test_sononet.py`` checks it). The layer counts of
the paper (gates at layers 11 and 14, pooling counted as a layer, ``l3 = 17``) fix ``convs = (3, 3, 3, 2, 2)``; the
authors' configurations train the baseline with the same extractor (``sononet2``), which is what lets AG-Sononet
start from a trained Sononet (``agseg train --init-from SONONET_RUN``: the feature extractor's parameters have the
same names, ``features.blocks.L.J...``, in both nets).

Choices where seed 003 is not explicit (each tested):

* *What is normalised.* The paper writes the normalisation on "the attention coefficients" and says it replaces a
  softmax that "was often too sparse"; the discussion says dividing by the sum is the classification alternative to
  the sigmoid. We apply it to the compatibility score ``q`` in place of the sigmoid (``attention_norm="sum"``, the
  authors' ``concatenation_mean_flow`` mode); ``attention_norm="sigmoid_sum"`` normalises ``sigmoid(q)`` instead
  (the literal reading). Both give weights >= 0 that sum to 1 over the image.
* *Gate layers.* The gates work at the attended layer's resolution (``sub_sample=1``), with ``F_int`` = the gating
  signal's width ``8n`` and no output transform (``W``): the sums need the features themselves. This is what makes
  the parameter counts of Table 5.
* *Initialisation.* "Gates pass features at all locations" has no counterpart under a min-subtracted normalisation
  (a constant ``q`` is 0/0), and the normalised map does not depend on ``psi``'s scale or bias; the gates keep
  PyTorch's default initialisation (``gate_init="default"``), as the authors' code does in this mode.
* *Numerics.* The gates and the normalisation run in float32 outside autocast: under bf16 the differences
  ``q - min q`` lose most of their bits.
* *Attention maps.* ``forward_with_attention`` returns ``(alpha - min) / (max - min)`` per image, i.e. the weights
  divided by their maximum, in [0, 1] (1 where the net looks most); the weights themselves are the map divided by
  its sum.

Every argument can be overridden; 3D works through the same code path (``spatial_dims=3``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from agseg.blocks import ops
from agseg.blocks.attention_gate import GridAttentionGate
from agseg.blocks.conv import ConvNormAct
from agseg.layers import Conv, MaxPool, check_spatial_dims, make_norm, resize_to
from agseg.nets.base import ClassificationNet
from agseg.nets.parts import check_input
from agseg.nets.registry import register_model

__all__ = [
    "ATTENTION_NORMS",
    "SONONET_CONVS",
    "AGSononet",
    "Sononet",
    "SononetFeatures",
    "normalise_attention",
    "sononet_channels",
]

#: 3x3 conv layers per level of the feature extractor (seed 003 Fig. 4: gates at layers 11 and 14, l3 = 17).
SONONET_CONVS: tuple[int, ...] = (3, 3, 3, 2, 2)
#: How AG-Sononet turns a gate's compatibility score ``q`` into weights (see the module docstring).
ATTENTION_NORMS = ("sum", "sigmoid_sum")
_PAPER = "seed 003 sec. 2.4, Fig. 4, Table 5 (Schlemper et al. 2019); Baumgartner et al. 2016"


def sononet_channels(capacity: int) -> tuple[int, ...]:
    """Widths per level for a capacity (number of initial filters) ``n``: ``(n, 2n, 4n, 8n, 8n)`` (seed 003 Table 5).

    Raises:
        ValueError: ``capacity < 1``.
    """
    if int(capacity) < 1:
        raise ValueError(f"capacity (the number of initial filters) must be >= 1, got {capacity}")
    n = int(capacity)
    return (n, 2 * n, 4 * n, 8 * n, 8 * n)


def _resolve_widths(capacity: int | None, channels: Sequence[int] | None, convs: Sequence[int]) -> tuple[int, ...]:
    if capacity is not None and channels is not None:
        raise ValueError("give capacity or channels, not both (capacity n means channels (n, 2n, 4n, 8n, 8n))")
    if channels is None:
        return _checked_widths(sononet_channels(8 if capacity is None else capacity), convs)
    return _checked_widths(tuple(int(c) for c in channels), convs)


def _checked_widths(widths: tuple[int, ...], convs: Sequence[int]) -> tuple[int, ...]:
    if len(widths) < 2:
        raise ValueError(f"channels needs at least 2 levels, got {widths}")
    if min(widths) < 1:
        raise ValueError(f"every width in channels must be >= 1, got {widths}")
    if len(tuple(convs)) != len(widths):
        raise ValueError(f"convs needs one entry per level ({len(widths)}), got {tuple(convs)}")
    if min(int(c) for c in convs) < 1:
        raise ValueError(f"every level needs at least one conv layer, got convs {tuple(convs)}")
    return widths


def _resolve_outputs(out_channels: int | None, num_classes: int | None) -> int:
    """``out_channels``, with ``num_classes`` as its alias (they must agree when both are given)."""
    if out_channels is not None and num_classes is not None and int(out_channels) != int(num_classes):
        raise ValueError(
            f"num_classes ({num_classes}) and out_channels ({out_channels}) disagree: num_classes is an alias of "
            "out_channels (a binary label set trains one sigmoid output; leave both out in a config)"
        )
    n = out_channels if out_channels is not None else num_classes if num_classes is not None else 2
    if int(n) < 1:
        raise ValueError(f"out_channels (num_classes) must be >= 1, got {n}")
    return int(n)


class SononetFeatures(nn.Module):
    """The feature extraction module: per level ``convs[l]`` 3x3(x3) conv + norm + ReLU layers, max-pooling by 2
    between levels (VGG style).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: widths per level, finest first.
        convs: conv layers per level.
        norm: ``"batch"`` (the papers), ``"instance"`` or ``"none"``.

    Attributes:
        blocks: ``nn.ModuleList`` of ``nn.Sequential`` of :class:`~agseg.blocks.conv.ConvNormAct` (parameter names
            ``blocks.L.J.0.weight`` (conv), ``blocks.L.J.1.*`` (norm)), shared by Sononet and AG-Sononet.
        pools: the max-pools, ``pools[l]`` between level ``l`` and ``l + 1``.

    Shapes: ``forward(x (B, in_channels, *S))`` returns ``[f_0, ..., f_{L-1}]``, ``f_l`` of shape
    ``(B, channels[l], *S / 2**l)`` (floored), the output of each level's last conv (before pooling).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        convs: Sequence[int] = SONONET_CONVS,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.spatial_dims, self.channels, self.convs = spatial_dims, tuple(channels), tuple(int(c) for c in convs)
        blocks = []
        cin = in_channels
        for width, n in zip(self.channels, self.convs, strict=True):
            layers = []
            for _ in range(n):
                layers.append(ConvNormAct(spatial_dims, cin, width, 3, norm=norm))
                cin = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pools = nn.ModuleList(MaxPool[spatial_dims](2) for _ in range(len(self.channels) - 1))

    @property
    def pool_sizes(self) -> tuple[tuple[int, ...], ...]:
        return ((2,) * self.spatial_dims,) * (len(self.channels) - 1)

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Every level keeps at least one voxel: ``2 ** (levels - 1)`` per axis."""
        return (2 ** (len(self.channels) - 1),) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h if i == 0 else self.pools[i - 1](h))
            feats.append(h)
        return feats


def _global_avg(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S) -> (B, C)``: channel-wise global average pooling."""
    return x.flatten(2).mean(-1)


class _SononetBase(ClassificationNet):
    """What both nets share: the argument checks, the feature extractor and the input check."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        num_classes: int | None,
        capacity: int | None,
        channels: Sequence[int] | None,
        convs: Sequence[int],
        norm: str,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.spatial_dims, self.in_channels = spatial_dims, int(in_channels)
        self.out_channels = _resolve_outputs(out_channels, num_classes)
        self.channels = _resolve_widths(capacity, channels, convs)
        self.features = SononetFeatures(spatial_dims, in_channels, self.channels, convs, norm)

    @property
    def num_classes(self) -> int:
        """Alias of :attr:`out_channels` (1 for a binary sigmoid output)."""
        return self.out_channels

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        return self.features.min_input_shape

    def _check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.spatial_dims, self.in_channels, self.min_input_shape, self.features.pool_sizes)


@register_model(
    "sononet",
    description="Sononet: VGG-like feature extractor + adaptation module (1x1 convs to the classes, global average)",
    paper=_PAPER,
    task="classification",
)
class Sononet(_SononetBase):
    """Sononet image classifier (the baseline of seed 003 Table 5).

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: image channels.
        out_channels: outputs (classes; 1 for a binary sigmoid output). Default 2.
        num_classes: alias of ``out_channels``.
        capacity: number of initial filters ``n`` (Table 5's ``-n``): widths ``(n, 2n, 4n, 8n, 8n)``; default 8.
        channels: widths per level instead of ``capacity``.
        convs: conv layers per level (default ``(3, 3, 3, 2, 2)``).
        norm: ``"batch"`` (the paper), ``"instance"`` or ``"none"``.

    Attributes:
        features: the :class:`SononetFeatures`.
        adaptation: 1x1 conv + BN + ReLU to ``channels[-1] // 2``, then 1x1 conv + BN to ``out_channels``.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels)`` logits; every side at least ``2 ** (levels - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_classes: int | None = None,
        capacity: int | None = None,
        channels: Sequence[int] | None = None,
        convs: Sequence[int] = SONONET_CONVS,
        norm: str = "batch",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, num_classes, capacity, channels, convs, norm)
        last = self.channels[-1]
        mid = max(1, last // 2)
        self.adaptation = nn.Sequential(
            ConvNormAct(spatial_dims, last, mid, 1, norm=norm),
            Conv[spatial_dims](mid, self.out_channels, 1, bias=norm == "none"),
            make_norm(norm, spatial_dims, self.out_channels),
        )

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The adaptation module's class maps ``(B, out_channels, *S / 2**(levels-1))`` before the global average."""
        self._check_input(x)
        return self.adaptation(self.features(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _global_avg(self.class_maps(x))


def _float32(x: torch.Tensor) -> AbstractContextManager:
    """A context without autocast on ``x``'s device (meta tensors have no autocast)."""
    if x.device.type in ("cpu", "cuda"):
        return torch.autocast(x.device.type, enabled=False)
    return nullcontext()


def normalise_attention(q: torch.Tensor, mode: str = "sum", eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """AG-Sononet's normalisation of compatibility scores over each image (seed 003 sec. 2.4).

    Args:
        q: scores ``(B, 1, *S)``.
        mode: ``"sum"``: ``(q - min q) / sum (q - min q)``; ``"sigmoid_sum"``: the same of ``sigmoid(q)``.
        eps: the smallest denominator (a constant map gives zero weights, not NaN).

    Returns:
        ``(weights, map)``, both ``(B, 1, *S)``: the weights (>= 0, summing to 1 per image) and the map scaled to
        [0, 1] by its maximum (``(q - min) / (max - min)``).
    """
    if mode not in ATTENTION_NORMS:
        raise ValueError(f"unknown attention_norm {mode!r}; valid: {', '.join(ATTENTION_NORMS)}")
    s = torch.sigmoid(q) if mode == "sigmoid_sum" else q
    flat = s.flatten(2)
    a = flat - flat.amin(-1, keepdim=True)
    weights = a / a.sum(-1, keepdim=True).clamp_min(eps)
    scaled = a / a.amax(-1, keepdim=True).clamp_min(eps)
    return weights.view_as(q), scaled.view_as(q)


@register_model(
    "ag_sononet",
    description="AG-Sononet: Sononet with grid attention gates on two layers, attention-weighted pooling per scale",
    paper=_PAPER,
    task="classification",
)
class AGSononet(_SononetBase):
    """Attention-gated Sononet (seed 003 sec. 2.4, Fig. 4); see the module docstring for the design and its choices.

    Args:
        spatial_dims, in_channels, out_channels, num_classes, capacity, channels, convs, norm: as :class:`Sononet`.
        gated_levels: the levels whose last feature map is gated (0 finest); default ``(2, 3)`` (layers 11 and 14).
            The gating signal is always the last level's output.
        inter_channels: the gates' intermediate channels ``F_int``; default the gating signal's width.
        attention_norm: ``"sum"`` (default) or ``"sigmoid_sum"`` (see :func:`normalise_attention`).
        gate_init: ``"default"`` (PyTorch's, the default here) or ``"open"``
            (:class:`~agseg.blocks.attention_gate.GridAttentionGate`).
        deep_supervision: add a fully connected head per scale; in training mode ``forward`` returns
            ``[main, head per gate (finest first), head of the pooled coarsest scale]``.

    Attributes:
        features: the :class:`SononetFeatures` (same parameter names as Sononet's).
        gates: ``nn.ModuleList`` of :class:`~agseg.blocks.attention_gate.GridAttentionGate`, one per gated level.
        classifier: the fully connected layer on the concatenated vectors ``[x_hat per gate, pooled last level]``.
        heads: the per-scale heads (``deep_supervision``), else empty.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels)`` logits; ``forward_with_attention`` also returns
    ``{"gate0": (B, 1, *S_l0), "gate1": (B, 1, *S_l1)}`` in [0, 1] on each gated level's grid.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_classes: int | None = None,
        capacity: int | None = None,
        channels: Sequence[int] | None = None,
        convs: Sequence[int] = SONONET_CONVS,
        norm: str = "batch",
        gated_levels: Iterable[int] = (2, 3),
        inter_channels: int | None = None,
        attention_norm: str = "sum",
        gate_init: str = "default",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, num_classes, capacity, channels, convs, norm)
        levels = tuple(int(g) for g in gated_levels)
        n_levels = len(self.channels)
        if not levels:
            raise ValueError("gated_levels must name at least one level (AG-Sononet has gates)")
        if len(set(levels)) != len(levels) or any(not 0 <= g < n_levels - 1 for g in levels):
            raise ValueError(
                f"gated_levels {levels} out of range: distinct levels 0..{n_levels - 2} (the last level, "
                f"{n_levels - 1}, is the gating signal)"
            )
        if attention_norm not in ATTENTION_NORMS:
            raise ValueError(f"unknown attention_norm {attention_norm!r}; valid: {', '.join(ATTENTION_NORMS)}")
        self.gated_levels = tuple(sorted(levels))
        self.attention_norm = attention_norm
        self.deep_supervision = bool(deep_supervision)
        g_ch = self.channels[-1]
        inter = g_ch if inter_channels is None else int(inter_channels)
        self.gates = nn.ModuleList(
            GridAttentionGate(
                spatial_dims, self.channels[lvl], g_ch, inter, sub_sample=1, init=gate_init, output_transform=False
            )
            for lvl in self.gated_levels
        )
        widths = [self.channels[lvl] for lvl in self.gated_levels] + [g_ch]
        self.classifier = nn.Linear(sum(widths), self.out_channels)
        self.heads = (
            nn.ModuleList(nn.Linear(w, self.out_channels) for w in widths) if deep_supervision else nn.ModuleList()
        )

    @property
    def has_gates(self) -> bool:
        return True

    def scores(self, gate: GridAttentionGate, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The compatibility score ``q`` (seed 003 eq. 1) of ``gate`` for features ``x`` and gating signal ``g``,
        float32 ``(B, 1, *x_spatial)``: ``sigmoid(q)`` is ``gate.attention(x, g)``."""
        with _float32(x):
            xf, gf = x.float(), g.float()
            theta = gate.theta(xf)
            q = gate.psi(F.relu(theta + resize_to(gate.phi(gf), theta.shape[2:])))
            return resize_to(q, x.shape[2:])

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor | list[torch.Tensor], dict[str, torch.Tensor]]:
        self._check_input(x)
        feats = self.features(x)
        g = feats[-1]
        vectors, maps = [], {}
        for i, (lvl, gate) in enumerate(zip(self.gated_levels, self.gates, strict=True)):
            xl = feats[lvl]
            with _float32(xl):
                weights, scaled = normalise_attention(self.scores(gate, xl, g), self.attention_norm)
                vectors.append((weights * xl.float()).flatten(2).sum(-1))
            maps[f"gate{i}"] = scaled
        vectors.append(_global_avg(g).float())
        logits = self.classifier(ops.cat(vectors, dim=1))
        if self.deep_supervision and self.training:
            return [logits, *(head(v) for head, v in zip(self.heads, vectors, strict=True))], maps
        return logits, maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, out_channels)``; with deep supervision in training mode the list ``[main, *heads]``."""
        return self._run(x)[0]

    def forward_with_attention(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | list[torch.Tensor], dict[str, torch.Tensor]]:
        """``(output, maps)``: output as :meth:`forward`; ``maps["gate{i}"]`` ``(B, 1, *S)`` in [0, 1] on the grid of
        the ``i``-th gated level (0 the finest), the attention weights scaled by their maximum."""
        return self._run(x)


for _n in (8, 16, 32):
    register_model(
        f"sononet{_n}",
        Sononet,
        defaults={"spatial_dims": 2, "channels": sononet_channels(_n)},
        description=f"Sononet-{_n}: capacity {_n} (widths {_n}-{2 * _n}-{4 * _n}-{8 * _n}-{8 * _n})",
        paper="seed 003 Table 5",
        task="classification",
    )
    register_model(
        f"ag_sononet{_n}",
        AGSononet,
        defaults={"spatial_dims": 2, "channels": sononet_channels(_n)},
        description=f"AG-Sononet-{_n}: capacity {_n}, gates on levels 2 and 3",
        paper="seed 003 Table 5",
        task="classification",
    )
