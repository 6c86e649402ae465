"""Surface-distance metrics on binary masks (2D or 3D), spacing-aware: Hausdorff, HD95, ASSD.

Surface definition (the same as MONAI 1.6.1 ``get_mask_edges`` with ``spacing=None``, i.e. what
``compute_hausdorff_distance`` and ``compute_average_surface_distance`` use): the surface of a mask ``M`` is
``M XOR binary_erosion(M)`` with SciPy's default structuring element, **connectivity 1** (face neighbours: a
4-neighbourhood in 2D, 6 in 3D), and voxels on the array border count as surface (outside is background).
``connectivity=ndim`` (full, 8/26 neighbours) is available and gives thinner surfaces.

Distances: for each surface voxel of one mask, the Euclidean distance, in physical units (index times
``spacing``), to the nearest surface voxel of the other mask. Two exact methods give identical values: a
Euclidean distance transform (``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)``) on the joint
bounding box of both masks, or a k-d tree on the surface voxel coordinates (what MONAI does on CPU);
``method="auto"`` picks the faster one from the sizes.

Relation to the thesis (seed 000, eq. 3.3-3.4): the directed Hausdorff distance is
``HD(A, B) = max_{a in A} min_{b in B} ||b - a||`` and the "modified Hausdorff distance" of eq. 3.4 is
``mHD(A, B) = max{HD(A, B), HD(B, A)}``, i.e. the classical symmetric Hausdorff distance. :func:`hausdorff`
computes exactly eq. 3.4 with ``A``, ``B`` the surface voxel sets (the thesis models both masks "as 2 surfaces").
It is *not* the Dubuisson-Jain modified Hausdorff distance (max of the two *mean* directed distances), despite the
name. ``percentile=95`` (HD95) replaces each directed max by the 95th percentile (linear interpolation, as
``numpy.percentile`` / ``torch.quantile``) and takes the max of the two, as MONAI does
(``percentile_mode="max"``); ``percentile_mode="pooled"`` takes the percentile of both directions pooled
(MedPy's ``hd95``). :func:`assd` is the mean of all distances of both directions pooled (MONAI
``compute_average_surface_distance(symmetric=True)``); it is the voxel approximation of the papers' mesh
surface-to-surface distance S2S (seed 001/003, in mm).

Empty masks (tested): both empty: 0.0 for every distance (MONAI: NaN); exactly one empty: ``inf`` for every
distance (the distance to an empty set; MONAI gives ``inf`` for HD and ASSD but NaN for HD95). The aggregator
:func:`agseg.metrics.table.summarize` counts ``inf``/NaN as undefined and reports how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from agseg.metrics.overlap import check_pair

__all__ = ["assd", "hausdorff", "hd95", "surface", "surface_distances"]

_METHODS = ("auto", "edt", "kdtree")
# "auto": k-d tree when the bounding box holds many more voxels than the two surfaces together. Measured with
# SciPy on one core: the two EDTs cost about 0.4 us per box voxel, the two k-d tree queries about 1.2 us per
# surface voxel, so the EDT wins below about 3 box voxels per surface voxel (only for very ragged masks).
_EDT_VOXELS_PER_SURFACE_VOXEL = 3.0


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` (clipped to the array), or ``None`` if empty."""
    slices = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if idx.size == 0:
            return None
        slices.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, mask.shape[ax])))
    return tuple(slices)


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= mask.ndim:
        raise ValueError(f"connectivity must be in 1..{mask.ndim}, got {connectivity}")
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface(mask: Any, connectivity: int = 1) -> np.ndarray:
    """Surface voxels of a binary mask: ``mask XOR erosion(mask)`` (border voxels included).

    Args:
        mask: binary array ``(*spatial)`` (2D or 3D; anything :func:`~agseg.metrics.overlap.as_bool` takes).
        connectivity: of the erosion's structuring element; 1 (face neighbours, MONAI) to ``ndim`` (full).

    Returns:
        Boolean array of the same shape.
    """
    m, _, _ = check_pair(mask, mask)
    out = np.zeros_like(m)
    box = _bbox(m)
    if box is not None:
        out[box] = _surface(m[box], connectivity)
    return out


def _nearest(
    src: np.ndarray, dst: np.ndarray, spacing: tuple[float, ...], method: str, dst_dt: np.ndarray | None
) -> np.ndarray:
    if method == "edt":
        assert dst_dt is not None
        return dst_dt[src]
    tree = cKDTree(np.argwhere(dst) * np.asarray(spacing))
    return tree.query(np.argwhere(src) * np.asarray(spacing), k=1)[0]


def surface_distances(
    pred: Any,
    ref: Any,
    spacing: Sequence[float] | None = None,
    *,
    connectivity: int = 1,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every surface voxel of each mask to the nearest surface voxel of the other.

    Args:
        pred: binary mask ``(*spatial)``, 2D or 3D.
        ref: binary mask, same shape.
        spacing: voxel size per axis (default 1); distances are in its units (mm for medical images).
        connectivity: surface definition (see :func:`surface`).
        method: ``"auto"``, ``"edt"`` (distance transform) or ``"kdtree"``; all exact and equal.

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``, float64 arrays of length ``|surface(pred)|`` and ``|surface(ref)|``.
        If one mask is empty, the other's distances are ``inf``; if both are empty, both arrays are empty.

    Raises:
        ValueError: on different shapes, a bad ``spacing`` or ``method``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    p, r, sp = check_pair(pred, ref, spacing)
    sp = sp if sp is not None else (1.0,) * p.ndim
    box = _bbox(p | r)
    if box is None:
        return np.empty(0), np.empty(0)
    p, r = p[box], r[box]
    sp_, sr_ = _surface(p, connectivity), _surface(r, connectivity)
    n_p, n_r = int(np.count_nonzero(sp_)), int(np.count_nonzero(sr_))
    if n_p == 0 or n_r == 0:
        return np.full(n_p, np.inf), np.full(n_r, np.inf)
    if method == "auto":
        method = "edt" if p.size <= _EDT_VOXELS_PER_SURFACE_VOXEL * (n_p + n_r) else "kdtree"
    dt_r = ndimage.distance_transform_edt(~sr_, sampling=sp) if method == "edt" else None
    dt_p = ndimage.distance_transform_edt(~sp_, sampling=sp) if method == "edt" else None
    d_pr = _nearest(sp_, sr_, sp, method, dt_r)
    d_rp = _nearest(sr_, sp_, sp, method, dt_p)
    return np.asarray(d_pr, dtype=np.float64), np.asarray(d_rp, dtype=np.float64)


def _empty_value(n_pred: int, n_ref: int) -> float | None:
    if n_pred == 0 and n_ref == 0:
        return 0.0
    if n_pred == 0 or n_ref == 0:
        return float("inf")
    return None


def hausdorff(
    pred: Any,
    ref: Any,
    spacing: Sequence[float] | None = None,
    percentile: float | None = None,
    *,
    directed: bool = False,
    percentile_mode: str = "max",
    connectivity: int = 1,
    method: str = "auto",
) -> float:
    """Symmetric Hausdorff distance between the mask surfaces (thesis eq. 3.4), or its percentile (HD95).

    Args:
        pred: binary mask ``(*spatial)``, 2D or 3D.
        ref: binary mask, same shape.
        spacing: voxel size per axis (default 1); the result is in its units.
        percentile: ``None`` for the maximum (HD), ``95`` for HD95 (any value in ``[0, 100]``).
        directed: only ``pred -> ref`` (thesis eq. 3.3), as MONAI's ``directed=True``.
        percentile_mode: ``"max"``: max of the two directed percentiles (MONAI); ``"pooled"``: percentile of
            both directions together (MedPy). Equal for ``percentile=None``.
        connectivity: surface definition (1 = MONAI; see the module docstring).
        method: ``"auto"``, ``"edt"`` or ``"kdtree"`` (identical values).

    Returns:
        The distance; ``0.0`` if both masks are empty, ``inf`` if exactly one is.
    """
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if percentile_mode not in ("max", "pooled"):
        raise ValueError(f"percentile_mode must be 'max' or 'pooled', got {percentile_mode!r}")
    d_pr, d_rp = surface_distances(pred, ref, spacing, connectivity=connectivity, method=method)
    special = _empty_value(d_pr.size, d_rp.size)
    if special is not None:
        return special
    if np.isinf(d_pr).any() or np.isinf(d_rp).any():  # cannot happen for non-empty surfaces; kept for safety
        return float("inf")

    def stat(d: np.ndarray) -> float:
        return float(d.max()) if percentile is None else float(np.percentile(d, percentile))

    if directed:
        return stat(d_pr)
    if percentile is not None and percentile_mode == "pooled":
        return stat(np.concatenate([d_pr, d_rp]))
    return max(stat(d_pr), stat(d_rp))


def hd95(pred: Any, ref: Any, spacing: Sequence[float] | None = None, **kwargs: Any) -> float:
    """95th-percentile Hausdorff distance: ``hausdorff(pred, ref, spacing, percentile=95, **kwargs)``."""
    return hausdorff(pred, ref, spacing, percentile=95, **kwargs)


def assd(
    pred: Any,
    ref: Any,
    spacing: Sequence[float] | None = None,
    *,
    connectivity: int = 1,
    method: str = "auto",
) -> float:
    """Average symmetric surface distance: the mean of the distances of both directions pooled.

    ``ASSD = (sum_{a in dA} d(a, dB) + sum_{b in dB} d(b, dA)) / (|dA| + |dB|)`` with ``dA``, ``dB`` the surface
    voxels; MONAI ``compute_average_surface_distance(symmetric=True)``; the papers' S2S distance (mm).

    Returns:
        The distance in ``spacing`` units; ``0.0`` if both masks are empty, ``inf`` if exactly one is.
    """
    d_pr, d_rp = surface_distances(pred, ref, spacing, connectivity=connectivity, method=method)
    special = _empty_value(d_pr.size, d_rp.size)
    if special is not None:
        return special
    return float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
