"""Surface distances: against MONAI and brute force, known answers, the empty-mask convention, the surface."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy.spatial.distance import cdist, directed_hausdorff

from agseg.metrics import assd, hausdorff, hd95, surface, surface_distances

SHAPES = [((64, 64), (0.7, 1.3)), ((32, 32, 32), (2.5, 0.8, 1.1))]


def _monai(pred, ref, spacing, **kw) -> dict[str, float]:
    p = torch.from_numpy(pred[None, None]).float()
    r = torch.from_numpy(ref[None, None]).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd": compute_hausdorff_distance(p, r, include_background=True, spacing=spacing, **kw).item(),
            "hd95": compute_hausdorff_distance(
                p, r, include_background=True, spacing=spacing, percentile=95, **kw
            ).item(),
            "assd": compute_average_surface_distance(
                p, r, include_background=True, spacing=spacing, symmetric=True
            ).item(),
        }


@pytest.mark.parametrize("shape,spacing", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_match_monai(blobs, shape, spacing, seed):
    a, b = blobs(shape, seed)
    ref = _monai(a, b, spacing)
    assert hausdorff(a, b, spacing) == pytest.approx(ref["hd"], rel=1e-6)
    assert hausdorff(a, b, spacing, percentile=95) == pytest.approx(ref["hd95"], rel=1e-6)
    assert hd95(a, b, spacing) == pytest.approx(ref["hd95"], rel=1e-6)
    assert assd(a, b, spacing) == pytest.approx(ref["assd"], rel=1e-6)
    # isotropic default spacing too
    ref1 = _monai(a, b, None)
    assert hausdorff(a, b) == pytest.approx(ref1["hd"], rel=1e-6)
    assert hd95(a, b) == pytest.approx(ref1["hd95"], rel=1e-6)


@pytest.mark.parametrize("shape,spacing", SHAPES)
def test_directed_matches_monai(blobs, shape, spacing):
    a, b = blobs(shape, 4)
    ref = _monai(a, b, spacing, directed=True)
    assert hausdorff(a, b, spacing, directed=True) == pytest.approx(ref["hd"], rel=1e-6)
    assert hausdorff(a, b, spacing, 95, directed=True) == pytest.approx(ref["hd95"], rel=1e-6)
    assert hausdorff(a, b, spacing, directed=True) <= hausdorff(a, b, spacing)


@pytest.mark.parametrize("shape,spacing", SHAPES)
def test_eq_3_4_by_brute_force(blobs, shape, spacing):
    """Thesis eq. 3.4 on the surface point sets, computed with SciPy's directed_hausdorff and cdist."""
    a, b = blobs(shape, 5)
    pa = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    mhd = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert hausdorff(a, b, spacing) == pytest.approx(mhd, rel=1e-12)
    d = cdist(pa, pb)
    d_ab, d_ba = d.min(1), d.min(0)
    assert assd(a, b, spacing) == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), rel=1e-12)
    assert hd95(a, b, spacing) == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), rel=1e-12)
    pooled = np.percentile(np.concatenate([d_ab, d_ba]), 95)
    assert hd95(a, b, spacing, percentile_mode="pooled") == pytest.approx(pooled, rel=1e-12)


@pytest.mark.parametrize("shape,spacing", SHAPES)
@pytest.mark.parametrize("connectivity", [1, 2])
def test_methods_agree(blobs, shape, spacing, connectivity):
    a, b = blobs(shape, 6)
    e = surface_distances(a, b, spacing, connectivity=connectivity, method="edt")
    k = surface_distances(a, b, spacing, connectivity=connectivity, method="kdtree")
    for x, y in zip(e, k, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def _ball(shape, radius, spacing, center=None) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` (physical units) of ``center`` (physical units)."""
    grid = np.indices(shape).astype(float)
    sp = np.asarray(spacing, dtype=float).reshape(-1, *([1] * len(shape)))
    c = (np.asarray(shape) - 1) / 2 * np.asarray(spacing) if center is None else np.asarray(center)
    return np.sqrt((((grid * sp) - c.reshape(sp.shape)) ** 2).sum(0)) <= radius


@pytest.mark.parametrize(
    "shape,spacing,r1,r2",
    [
        ((48, 48, 48), (1.0, 1.0, 1.0), 8.0, 14.0),
        ((40, 48, 36), (1.2, 0.9, 1.5), 9.0, 16.0),
        ((128, 128), (1.0, 1.0), 20.0, 45.0),
        ((120, 96), (0.6, 0.8), 10.0, 25.0),
    ],
)
def test_concentric_spheres(shape, spacing, r1, r2):
    inner, outer = _ball(shape, r1, spacing), _ball(shape, r2, spacing)
    voxel = max(spacing)
    for fn in (hausdorff, lambda p, r, s: hausdorff(p, r, s, percentile=95), assd):
        assert abs(fn(inner, outer, spacing) - (r2 - r1)) <= voxel
        assert fn(inner, outer, spacing) == fn(outer, inner, spacing)  # symmetric


@pytest.mark.parametrize(
    "shape,spacing", [((20, 24), (0.5, 2.0)), ((20, 24), (3.0, 0.7)), ((16, 18, 20), (2.5, 0.8, 1.3))]
)
def test_one_voxel_shift_gives_spacing(shape, spacing):
    box = np.zeros(shape, bool)
    box[tuple(slice(4, n - 5) for n in shape)] = True
    for axis, s in enumerate(spacing):
        shifted = np.roll(box, 1, axis=axis)
        assert hausdorff(box, shifted, spacing) == pytest.approx(s, rel=1e-12)
        assert hausdorff(shifted, box, spacing) == pytest.approx(s, rel=1e-12)


def test_identical_masks_give_zero(blobs):
    a, _ = blobs((32, 32, 32), 7)
    assert hausdorff(a, a, (1.0, 2.0, 3.0)) == 0.0
    assert hd95(a, a) == 0.0
    assert assd(a, a) == 0.0


def test_empty_mask_convention_and_monai_difference():
    z = np.zeros((16, 16), bool)
    a = z.copy()
    a[4:9, 5:11] = True
    for fn in (hausdorff, hd95, assd):
        assert fn(z, z) == 0.0
        assert fn(z, a, (1.0, 2.0)) == math.inf
        assert fn(a, z) == math.inf
    assert hausdorff(z, a, directed=True) == math.inf
    # MONAI: NaN when both are empty (we: 0); inf for HD and ASSD with one empty (same); NaN for HD95 (we: inf)
    m = _monai(z, z, None)
    assert all(math.isnan(v) for v in m.values())
    m = _monai(z, a, None)
    assert m["hd"] == math.inf and m["assd"] == math.inf and math.isnan(m["hd95"])
    m = _monai(a, z, None)
    assert m["hd"] == math.inf and m["assd"] == math.inf and math.isnan(m["hd95"])


def test_surface_definition():
    sq = np.zeros((7, 7), bool)
    sq[2:5, 2:5] = True
    s1 = surface(sq)
    assert s1.sum() == 8 and not s1[3, 3]  # the centre has all 4 face neighbours inside
    single = np.zeros((5, 5, 5), bool)
    single[2, 2, 2] = True
    assert np.array_equal(surface(single), single)
    full = np.ones((4, 5), bool)  # touches the border everywhere: border voxels are surface
    assert surface(full).sum() == 4 * 5 - 2 * 3
    # connectivity 1 (MONAI) vs full: a diagonal-free interior voxel is interior for 1, surface for full
    plus = np.zeros((5, 5), bool)
    plus[1:4, 2] = True
    plus[2, 1:4] = True
    assert not surface(plus, connectivity=1)[2, 2]
    assert surface(plus, connectivity=2)[2, 2]


def test_surface_of_border_touching_mask_matches_monai():
    a = np.zeros((20, 20), bool)
    a[:8, :12] = True  # touches two borders
    b = np.zeros((20, 20), bool)
    b[:10, 3:15] = True
    ref = _monai(a, b, (1.0, 1.5))
    assert hausdorff(a, b, (1.0, 1.5)) == pytest.approx(ref["hd"], rel=1e-6)
    assert assd(a, b, (1.0, 1.5)) == pytest.approx(ref["assd"], rel=1e-6)


def test_argument_checks():
    a = np.zeros((8, 8), bool)
    a[2:4, 2:4] = True
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        hausdorff(a, np.zeros((8, 9), bool))
    with pytest.raises(ValueError, match="spacing"):
        assd(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hausdorff(a, a, percentile=101)
    with pytest.raises(ValueError, match="method"):
        hausdorff(a, a, method="brute")
    with pytest.raises(ValueError, match="connectivity"):
        surface(a, connectivity=3)
    assert hausdorff(torch.from_numpy(a), a.astype(np.int32)) == 0.0
