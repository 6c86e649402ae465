"""Weak localisation from attention maps (seed 003 appendix): boxes, the selection across scales, the measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agseg
from agseg.inference.localise import Box, box_inside, localise, mass_inside


def blob(shape, centre, sigma) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def test_box_known_answers():
    a, b = Box((0, 0), (4, 4)), Box((2, 2), (6, 6))
    assert a.size == 16 and a.as_tuple() == (0, 0, 4, 4)
    assert a.iou(b) == pytest.approx(4 / 28) and a.iou(a) == 1.0 and a.iou((10, 10, 12, 12)) == 0.0
    m = np.zeros((8, 9), bool)
    m[2:5, 3:7] = True
    box = Box.around(m)
    assert box == Box((2, 3), (5, 7)) and m[box.slices].all() and box.size == m.sum()
    assert Box.around(np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError, match="as many start as stop"):
        Box.from_tuple((1, 2, 3))


def test_one_blob_at_every_scale_gives_its_box():
    fine = blob((64, 64), (20, 40), 4)
    coarse = blob((16, 16), (5, 10), 1.2)  # the same place on a grid 4x coarser
    loc = localise({"gate0": fine, "gate1": coarse}, (64, 64))
    assert loc.consistent and loc.shape == (64, 64)
    y0, x0, y1, x1 = loc.box.as_tuple()
    assert y0 < 20 < y1 and x0 < 40 < x1
    assert loc.box.iou(Box((14, 34), (27, 47))) > 0.5
    assert set(loc.boxes) == {"gate0", "gate1"} and all(b is not None for b in loc.boxes.values())


def test_the_component_that_overlaps_across_scales_wins_over_a_stronger_lone_one():
    # gate0: a strong blob at A and a weaker one at B; gate1: only B. The appendix's rule picks B.
    g0 = blob((64, 64), (16, 16), 4) + 0.8 * blob((64, 64), (48, 48), 4)
    g1 = blob((64, 64), (48, 48), 6)
    loc = localise({"gate0": g0, "gate1": g1})
    assert loc.consistent
    assert loc.box.start[0] > 32 and loc.box.start[1] > 32
    # no overlap at all: the strongest single component, flagged as not consistent
    lone = localise({"gate0": blob((64, 64), (16, 16), 4), "gate1": 0.5 * blob((64, 64), (48, 48), 4)})
    assert not lone.consistent and lone.box.stop[0] < 32 and lone.boxes["gate1"] is None


def test_intersection_is_the_default_and_union_is_wider():
    g0 = blob((64, 64), (30, 30), 3)
    g1 = blob((64, 64), (32, 34), 9)  # a coarse, wide map around the same object
    inter, union = localise({"a": g0, "b": g1}), localise({"a": g0, "b": g1}, combine="union")
    assert inter.box.size < union.box.size
    assert union.box == localise({"b": g1}).box  # the wide component contains the narrow one


def test_flat_maps_give_no_box_and_thresholds_matter():
    loc = localise({"gate0": np.ones((16, 16)), "gate1": np.zeros((16, 16))})
    assert loc.box is None and not loc.consistent
    g = blob((64, 64), (32, 32), 6)
    assert localise({"g": g}, threshold=0.8).box.size < localise({"g": g}, threshold=0.2).box.size


def test_batched_torch_maps_with_heads_on_their_own_grids():
    maps = {
        "gate0": torch.from_numpy(np.stack([blob((16, 16), (4, 4), 1.5), blob((16, 16), (12, 8), 1.5)]))[:, None],
        "gate1": torch.from_numpy(np.stack([blob((8, 8), (2, 2), 0.8), blob((8, 8), (6, 4), 0.8)]))[:, None],
    }
    locs = localise(maps, shape=(64, 64))
    assert isinstance(locs, list) and len(locs) == 2
    assert locs[0].box.stop[0] < 32 and locs[1].box.start[0] > 32
    with pytest.raises(ValueError, match="different grids"):
        localise({k: v[0] for k, v in maps.items()})
    with pytest.raises(ValueError, match="no attention maps"):
        localise({})
    with pytest.raises(ValueError, match="combine"):
        localise({"g": np.ones((4, 4))}, combine="max")


def test_localise_is_exported_at_the_top_level_and_takes_a_nets_maps():
    assert agseg.localise is localise
    net = agseg.create_model("ag_sononet", in_channels=1, num_classes=2, capacity=2).eval()
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        _, maps = net.forward_with_attention(x)
    locs = agseg.localise(maps, shape=x.shape[2:])
    assert len(locs) == 2 and all(loc.shape == (64, 48) for loc in locs)
    for loc in locs:
        if loc.box is not None:
            assert all(0 <= a < b <= s for a, b, s in zip(loc.box.start, loc.box.stop, (64, 48), strict=True))


def test_mass_and_box_inside_a_mask():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    a = np.zeros((10, 10))
    a[:, 3:7] = 1.0
    assert mass_inside(a, mask) == pytest.approx(0.5)
    assert np.isnan(mass_inside(np.zeros((10, 10)), mask))
    assert box_inside(Box((0, 0), (10, 10)), mask) == pytest.approx(0.5)
    assert box_inside((0, 0, 4, 5), mask) == 1.0 and np.isnan(box_inside(None, mask))
    with pytest.raises(ValueError, match="different grids"):
        mass_inside(np.ones((5, 5)), mask)
