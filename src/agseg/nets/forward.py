"""Tensor-level forward passes any net can be given, shared by training (attention snapshots) and inference.

Padding to the net's minimum size and cropping back, autocast, the main output of a deep-supervision list, and
attention maps resampled to the input grid: written once here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agseg.layers import resize_to
from agseg.nets.base import has_attention, main_output, min_input_shape_of, spatial_dims_of, unwrap
from agseg.runtime import autocast

__all__ = ["batched", "crop_to", "forward_padded", "forward_with_attention_padded", "pad_to_shape"]


def batched(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Add a batch axis to an unbatched ``(C, *spatial)`` image (nets that do not state ``spatial_dims`` get
    batches)."""
    spatial_dims = spatial_dims_of(model)
    return image[None] if spatial_dims is not None and image.ndim == spatial_dims + 1 else image


def pad_to_shape(x: torch.Tensor, minimum: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Replicate-pad ``x`` ``(B, C, *spatial)`` at the high end of each axis up to ``minimum``; returns the padded
    tensor and the original spatial size (for :func:`crop_to`)."""
    size = tuple(x.shape[2:])
    target = [max(s, int(m)) for s, m in zip(size, minimum, strict=True)]
    pad: list[int] = []
    for s, t in zip(reversed(size), reversed(target), strict=True):
        pad += [0, t - s]
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The first ``size`` voxels of each spatial axis of ``x`` ``(B, C, *spatial)``."""
    return x[(slice(None), slice(None), *(slice(0, int(s)) for s in size))]


def _device(model: nn.Module) -> torch.device:
    p = next(unwrap(model).parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def forward_padded(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """float32 main output of ``model`` for a batch ``x`` ``(B, C, *spatial)``: padded up to the net's minimum size,
    run under autocast, cropped back to ``x``'s grid."""
    device = _device(model)
    x, size = pad_to_shape(x.to(device).float(), min_input_shape_of(model, x.ndim - 2))
    with autocast(device, amp_dtype):
        out = main_output(model(x))
    return _crop_output(out.float(), size)


def _crop_output(out: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop a per-voxel output back to ``size``; a per-image output ``(B, K)`` is returned as it is."""
    return crop_to(out, size) if out.ndim == len(size) + 2 else out


def forward_with_attention_padded(
    model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(logits, maps)`` for a batch ``x``: float32 main output and attention maps resampled (linearly) to ``x``'s
    grid, ``{gate: (B, heads, *spatial)}``; empty maps for a net without gates."""
    device = _device(model)
    x, size = pad_to_shape(x.to(device).float(), min_input_shape_of(model, x.ndim - 2))
    net = unwrap(model)
    with autocast(device, amp_dtype):
        if has_attention(net):
            out, maps = net.forward_with_attention(x)
        else:
            out, maps = model(x), {}
    grid = x.shape[2:]
    maps = {k: crop_to(resize_to(v.float(), grid), size) for k, v in maps.items()}
    return _crop_output(main_output(out).float(), size), maps
