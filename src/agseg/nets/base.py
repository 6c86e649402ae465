"""The net contract: what training, inference and the CLI may rely on, written down once.

Every registered net derives from :class:`Net` (segmentation nets from :class:`SegmentationNet`, classifiers from
:class:`ClassificationNet`). Code outside ``agseg.nets`` reads a net's properties through the helpers below
(:func:`spatial_dims_of`, :func:`min_input_shape_of`, ...), which also give sensible answers for a plain
``nn.Module`` a user brings (no ``getattr`` probes scattered through the package).

Contract:
    ``task``: ``"segmentation"`` or ``"classification"`` (class attribute).
    ``spatial_dims``: 2 or 3.
    ``in_channels``, ``out_channels``: image channels in, output channels (classes; 1 for a sigmoid output).
    ``deep_supervision``: in training mode ``forward`` returns a list of outputs, main output first.
    ``min_input_shape``: the smallest spatial size per axis the net accepts (``min_input_size``: its maximum).
    ``forward_with_attention(x) -> (output, maps)``: ``maps`` maps gate names to ``(B, heads, *grid)`` in [0, 1];
    empty for a net without gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "ClassificationNet",
    "Net",
    "Output",
    "SegmentationNet",
    "has_attention",
    "main_output",
    "min_input_shape_of",
    "spatial_dims_of",
    "task_of",
    "unwrap",
    "uses_deep_supervision",
]

Output = torch.Tensor | list[torch.Tensor]

TASKS = ("segmentation", "classification")


class Net(nn.Module):
    """Base class of every agseg net: the attributes of the contract (see the module docstring)."""

    task: ClassVar[str] = "segmentation"
    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 1
    deep_supervision: bool = False

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis (array order); 1 per axis unless a net says otherwise."""
        return (1,) * self.spatial_dims

    @property
    def min_input_size(self) -> int:
        """The largest entry of :attr:`min_input_shape` (one number for isotropic nets)."""
        return max(self.min_input_shape)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
        """``(forward(x), maps)``; the base class has no gates, so ``maps`` is empty."""
        return self(x), {}


class SegmentationNet(Net):
    """A net whose output is per-voxel logits ``(B, out_channels, *spatial)`` (a list with deep supervision)."""

    task: ClassVar[str] = "segmentation"


class ClassificationNet(Net):
    """A net whose output is per-image logits ``(B, out_channels)`` (a list with deep-supervised heads)."""

    task: ClassVar[str] = "classification"


def main_output(out: Any) -> torch.Tensor:
    """The main output of a forward pass: the tensor itself, or the first of a deep-supervision list."""
    return out if isinstance(out, torch.Tensor) else out[0]


def task_of(model: nn.Module) -> str:
    """``"segmentation"`` or ``"classification"`` (a plain module counts as segmentation)."""
    return getattr(unwrap(model), "task", "segmentation")


def spatial_dims_of(model: nn.Module, default: int | None = None) -> int | None:
    """The net's spatial dimensions, or ``default`` for a module that does not say."""
    value = getattr(unwrap(model), "spatial_dims", None)
    return int(value) if value is not None else default


def min_input_shape_of(model: nn.Module, spatial_dims: int) -> tuple[int, ...]:
    """Smallest accepted spatial size per axis (1 per axis for a module that does not say)."""
    net = unwrap(model)
    if isinstance(net, Net):
        shape = tuple(int(s) for s in net.min_input_shape)
        return shape if len(shape) == spatial_dims else (max(shape),) * spatial_dims
    size = getattr(net, "min_input_size", 1)
    if isinstance(size, Sequence):
        return tuple(int(s) for s in size)
    return (int(size),) * spatial_dims


def uses_deep_supervision(model: nn.Module) -> bool:
    """True when the net returns a list of outputs in training mode."""
    return bool(getattr(unwrap(model), "deep_supervision", False))


def has_attention(model: nn.Module) -> bool:
    """True when the net can return attention maps (``forward_with_attention``)."""
    return callable(getattr(unwrap(model), "forward_with_attention", None))


def unwrap(model: nn.Module) -> nn.Module:
    """The net inside a ``DistributedDataParallel``/``DataParallel`` wrapper or a ``torch.compile`` module."""
    seen = 0
    while seen < 8:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = inner
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            break
        seen += 1
    return model
