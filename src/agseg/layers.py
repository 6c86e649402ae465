"""Layer factories picked by ``spatial_dims``: one code path for 2D and 3D.

Every block and net in agseg takes ``spatial_dims`` as its first argument and gets its layers from the
tables below (``Conv[spatial_dims]``), as MONAI's ``networks/layers/factories.py`` does, so there is no
``if dim == 3`` branch and no duplicated 2D/3D file anywhere in the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveAvgPool",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dropout",
    "InstanceNorm",
    "MaxPool",
    "check_spatial_dims",
    "interp_mode",
    "make_norm",
    "resize_to",
]

Conv: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
ConvTranspose: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BatchNorm: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
InstanceNorm: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
MaxPool: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AvgPool: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
AdaptiveAvgPool: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
Dropout: dict[int, type[nn.Module]] = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}

_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}
NORMS = ("batch", "instance", "none")


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 1, 2 or 3, else raise a ``ValueError`` that says so."""
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer by name: ``"batch"``, ``"instance"`` (affine) or ``"none"`` (identity)."""
    if norm == "batch":
        return BatchNorm[spatial_dims](channels)
    if norm == "instance":
        return InstanceNorm[spatial_dims](channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def interp_mode(spatial_dims: int) -> str:
    """The linear interpolation mode for ``spatial_dims`` (``linear``, ``bilinear`` or ``trilinear``)."""
    return _INTERP[check_spatial_dims(spatial_dims)]


def _compiling() -> bool:
    """True while torch.compile / torch.export traces (``torch.compiler.is_compiling`` from torch 2.3)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "linear") -> torch.Tensor:
    """Resample ``x`` of shape ``(B, C, *spatial)`` to ``size``; a no-op when the size already matches.

    Args:
        x: tensor ``(B, C, *spatial)``.
        size: target spatial size.
        mode: ``"linear"`` (bi/trilinear, picked from the number of spatial dims) or ``"nearest"``.
    """
    if _compiling():
        # traced for export / compile: keep sizes symbolic (int() would freeze them at the example's) and always
        # resample (same-size bi/trilinear resampling with align_corners=False is the identity), so the graph holds
        # for every input size, not only those whose internal sizes happen to match as the example's did
        size = tuple(size)
    else:
        size = tuple(int(s) for s in size)
        if tuple(x.shape[2:]) == size:
            return x
    if mode == "linear":
        return F.interpolate(x, size=size, mode=interp_mode(x.ndim - 2), align_corners=False)
    return F.interpolate(x, size=size, mode=mode)
