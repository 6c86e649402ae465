"""Preprocessing: shapes, intensities, geometry bookkeeping, and exact undo back to the original grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from agseg.data import (
    Geometry,
    PreprocessConfig,
    Preprocessor,
    PreprocessRecord,
    invert,
    read_image,
    read_mask,
    write_image,
    write_mask,
)
from agseg.data.preprocess import resize_array


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    a, b = a == label, b == label
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _centre(g: Geometry) -> np.ndarray:
    """Physical centre of the grid's extent."""
    idx = (np.asarray(g.shape, float)[::-1] - 1) / 2
    return np.asarray(g.origin) + g.direction_matrix @ (np.asarray(g.spacing) * idx)


CONFIGS_3D = {
    "isotropic+fixed_grid": PreprocessConfig(target_spacing=1.0, target_size=(32, 32, 32), intensity="zscore_case"),
    "isotropic+crop_pad": PreprocessConfig(target_spacing=(1.2, 1.2, 1.2), crop_or_pad=(24, 16, 40)),
    "keep_aspect": PreprocessConfig(target_spacing=1.0, target_size=(32, 32, 32), keep_aspect=True),
}


@pytest.mark.parametrize("name", ["v.mhd", "v.nii.gz", "v.nrrd", "v.mha", "dicom_series"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS_3D))
def test_round_trip_restores_size_and_geometry(
    tmp_path: Path, name: str, cfg_name: str, rotated_geometry: Geometry, sphere_volume
) -> None:
    """Read -> preprocess -> undo -> write gives a mask with the original size, spacing, origin and direction."""
    image, mask = sphere_volume
    fmt_geom = rotated_geometry.replace(format="dicom") if name == "dicom_series" else rotated_geometry
    write_image(tmp_path / name, image, fmt_geom)
    write_mask(tmp_path / f"mask_{name}", mask, fmt_geom)
    img, geom = read_image(tmp_path / name)
    raw_mask, _ = read_mask(tmp_path / f"mask_{name}")

    out = Preprocessor(CONFIGS_3D[cfg_name]).apply(img, geom, raw_mask.astype(np.uint8))
    record = PreprocessRecord.from_dict(json.loads(json.dumps(out.record.to_dict())))  # as saved with a run
    back, back_geom = invert(out.label, record)
    written = write_mask(tmp_path / "pred" / f"pred_{name}", back, back_geom)

    again, g2 = read_mask(written)
    assert again.shape == image.shape
    assert g2.shape == geom.shape
    np.testing.assert_allclose(g2.spacing, geom.spacing, rtol=1e-5)
    np.testing.assert_allclose(g2.origin, geom.origin, atol=1e-4)
    np.testing.assert_allclose(g2.direction, geom.direction, atol=1e-5)
    assert _dice(again, mask, 1) > 0.85 and _dice(again, mask, 2) > 0.7


def test_round_trip_2d_png(tmp_path: Path) -> None:
    from agseg.data import chest_phantom

    image, mask = chest_phantom(96, rng=0)
    g = Geometry.identity(image.shape, format="png", dtype="uint8")
    write_image(tmp_path / "x.png", image, g)
    img, geom = read_image(tmp_path / "x.png")
    out = Preprocessor(PreprocessConfig(target_size=(64, 64), intensity="minmax01")).apply(img, geom, mask > 127)
    assert out.image.shape == (1, 64, 64) and set(np.unique(out.label)) == {0, 1}
    assert out.image.min() >= 0 and out.image.max() <= 1
    back, bg = invert(out.label, out.record)
    p = write_mask(tmp_path / "pred.png", back, bg, binary=True)
    m2, _g2 = read_mask(p)
    assert m2.shape == (96, 96) and set(np.unique(m2)) == {0, 255}
    assert _dice(m2 > 127, mask > 127, True) > 0.95


def test_resampling_keeps_physical_centre(rotated_geometry: Geometry, sphere_volume) -> None:
    image, _mask = sphere_volume
    out = Preprocessor(PreprocessConfig(target_spacing=1.0, intensity="none")).apply(image[None], rotated_geometry)
    g = out.record.geometry
    assert g.shape == (35, 20, 18)  # round(shape * spacing) in array order (z, y, x)
    np.testing.assert_allclose(_centre(g), _centre(rotated_geometry), atol=1e-6)
    np.testing.assert_allclose(np.asarray(g.spacing) * np.asarray(g.shape)[::-1], [18.2, 19.8, 35.0], rtol=1e-6)


def test_crop_pad_undo_is_exact(rotated_geometry: Geometry, sphere_volume) -> None:
    image, mask = sphere_volume
    out = Preprocessor(PreprocessConfig(crop_or_pad=(20, 16, 30), intensity="none")).apply(
        image[None], rotated_geometry, mask
    )
    assert out.image.shape == (1, 20, 16, 30)
    # the crop/pad moved the origin so every kept voxel sits at the same physical point
    g = out.record.geometry
    np.testing.assert_allclose(_centre(g) - _centre(rotated_geometry), 0, atol=rotated_geometry.spacing[0])
    back, bg = invert(out.label, out.record)
    kept = np.zeros_like(mask, bool)
    kept[:, 3:19, :] = True  # y was cropped from 22 to 16
    np.testing.assert_array_equal(back[kept], mask[kept])
    assert (back[~kept] == 0).all() and bg == rotated_geometry.replace(n_channels=1, dtype="uint8")


def test_identity_config_changes_nothing_spatial(rotated_geometry: Geometry, sphere_volume) -> None:
    image, mask = sphere_volume
    out = Preprocessor(PreprocessConfig(intensity="none")).apply(image[None], rotated_geometry, mask)
    assert out.record.steps == []
    np.testing.assert_array_equal(out.image[0], image)
    np.testing.assert_array_equal(invert(out.label, out.record)[0], mask)


def test_invert_probabilities(rotated_geometry: Geometry, sphere_volume) -> None:
    image, mask = sphere_volume
    out = Preprocessor(PreprocessConfig(target_size=(16, 16, 16))).apply(image[None], rotated_geometry, mask)
    probs = np.stack([out.label == k for k in range(3)]).astype(np.float32)
    back, bg = invert(probs, out.record)
    assert back.shape == (3, *image.shape) and back.dtype == np.float32 and bg.n_channels == 3
    assert _dice(back.argmax(0), mask, 1) > 0.8


@pytest.mark.parametrize("mode", ["zscore_case", "minmax01", "ct_window", "none"])
def test_intensity_modes(mode: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(50, 20, (2, 10, 12)).astype(np.float32)
    g = Geometry.identity((10, 12))
    cfg = PreprocessConfig(intensity=mode, window=(0, 100) if mode == "ct_window" else None)
    out = Preprocessor(cfg).apply(img, g)
    x = out.image
    if mode == "zscore_case":
        np.testing.assert_allclose(x.reshape(2, -1).mean(1), 0, atol=1e-5)
        np.testing.assert_allclose(x.reshape(2, -1).std(1), 1, atol=1e-4)
    elif mode in ("minmax01", "ct_window"):
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    else:
        np.testing.assert_array_equal(x, img)
    assert out.record.intensity["mode"] == mode


def test_global_zscore_needs_fit_and_uses_dataset_stats() -> None:
    from agseg.data import Case

    g = Geometry.identity((4, 4))
    cases = [Case(f"c{i}", f"c{i}", np.full((1, 4, 4), float(v), np.float32), g) for i, v in enumerate([0, 2, 4])]
    pre = Preprocessor(PreprocessConfig(intensity="zscore_global"))
    with pytest.raises(ValueError, match="fit"):
        pre.apply(cases[0].image, g)
    pre.fit(cases)
    assert pre.stats["mean"] == pytest.approx([2.0]) and pre.stats["std"] == pytest.approx([np.sqrt(8 / 3)])
    assert pre.apply_case(cases[2]).image.mean() == pytest.approx(2 / np.sqrt(8 / 3), rel=1e-5)
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.fingerprint() == pre.fingerprint() and not again.needs_fit


def test_global_zscore_on_the_working_grid_weighs_every_case_alike() -> None:
    # the thesis: mean and std "of the resampled dataset". Two cases, 2x2 at value 0 and 8x8 at value 10, both
    # resized to 4x4: per voxel of the originals the mean is (4*0 + 64*10) / 68 = 9.41; per case on the working grid
    # it is (0 + 10) / 2 = 5 with std 5. This test failed before global_stats existed (TypeError).
    from agseg.data import Case

    cases = [
        Case("small", "a", np.zeros((1, 2, 2), np.float32), Geometry.identity((2, 2))),
        Case("large", "b", np.full((1, 8, 8), 10.0, np.float32), Geometry.identity((8, 8))),
    ]
    voxel = Preprocessor(PreprocessConfig(intensity="zscore_global", target_size=(4, 4))).fit(cases)
    assert voxel.stats["mean"] == pytest.approx([640 / 68])
    working = Preprocessor(
        PreprocessConfig(intensity="zscore_global", target_size=(4, 4), crop_or_pad=(6, 6), global_stats="working")
    ).fit(cases)
    assert working.stats["mean"] == pytest.approx([5.0]) and working.stats["std"] == pytest.approx([5.0])
    assert working.stats["weighting"] == "case, working grid"
    with pytest.raises(ValueError, match="global_stats"):
        PreprocessConfig(global_stats="resampled")
    # keep_aspect pads to target_size: the padding stays out of the statistics
    wide = [Case("w", "w", np.full((1, 4, 8), 7.0, np.float32), Geometry.identity((4, 8)))]
    aspect = PreprocessConfig(intensity="zscore_global", target_size=(8, 8), keep_aspect=True, global_stats="working")
    assert Preprocessor(aspect).fit(wide).stats["mean"] == pytest.approx([7.0])
    # the default leaves the config's dict (and so every cache key) as it was before global_stats existed
    assert "global_stats" not in PreprocessConfig().to_dict() and "weighting" not in voxel.stats


def test_label_map_and_threshold_in_config() -> None:
    g = Geometry.identity((2, 3))
    img = np.zeros((1, 2, 3), np.float32)
    m = np.array([[0, 3, 4], [5, 3, 0]], np.uint8)
    out = Preprocessor(PreprocessConfig(label_map={3: 1, 4: 1, 5: 0})).apply(img, g, m)
    np.testing.assert_array_equal(out.label, [[0, 1, 1], [0, 1, 0]])
    from agseg.data import DataError

    with pytest.raises(DataError, match=r"values \[7\] are not in the label map"):
        Preprocessor(PreprocessConfig(label_map={3: 1})).apply(img, g, np.full((2, 3), 7, np.uint8))
    aa = np.array([[0, 100, 128], [200, 255, 10]], np.uint8)
    out = Preprocessor(PreprocessConfig(mask_threshold=127)).apply(img, g, aa)
    np.testing.assert_array_equal(out.label, [[0, 0, 1], [1, 1, 0]])


def test_config_yaml_round_trip_and_validation() -> None:
    cfg = PreprocessConfig(
        target_spacing=1.0,
        target_size=[128, 128, 128],
        intensity="ct_window",
        window=(-1000, 400),
        label_map={3: 1, 4: 1, 5: 0},
    )
    assert PreprocessConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="intensity"):
        PreprocessConfig(intensity="zscore")
    with pytest.raises(ValueError, match="window"):
        PreprocessConfig(intensity="ct_window")
    with pytest.raises(ValueError, match="dimensions"):
        Preprocessor(PreprocessConfig(target_size=(8, 8, 8))).apply(np.zeros((1, 4, 4)), Geometry.identity((4, 4)))


def test_resize_mask_stays_labels() -> None:
    m = np.zeros((512, 512), np.uint8)
    m[100:300, 50:200] = 1
    m[350:400, 300:500] = 2
    r = resize_array(m, (256, 256), label=True)
    assert r.dtype == np.uint8 and set(np.unique(r)) == {0, 1, 2}
    assert abs(int((r == 1).sum()) - 100 * 75) <= 2 * 100


def test_crop_to_mask_keeps_the_widened_box_and_inverts_in_place() -> None:
    """A 2D image cropped to its mask's box plus 10 % of each side's size, by hand: rows 20..39 of 100 widened by
    10 -> 10..49, columns 30..49 of 80 widened by 8 -> 22..57; the origin moves with it and invert puts every kept
    pixel back where it was (fill outside)."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 100, 80)).astype(np.float32)
    mask = np.zeros((100, 80), np.uint8)
    mask[20:40, 30:50] = 1
    geom = Geometry(spacing=(0.5, 2.0), origin=(3.0, -1.0), direction=(1.0, 0.0, 0.0, 1.0), shape=(100, 80))
    out = Preprocessor(PreprocessConfig(crop_to_mask=0.1, intensity="none", target_size=(40, 36))).apply(
        image, geom, mask
    )
    np.testing.assert_array_equal(out.image, image[:, 10:50, 22:58])
    np.testing.assert_array_equal(out.label, mask[10:50, 22:58])
    # origin (x, y): x moves by 22 columns of 0.5, y by 10 rows of 2.0
    np.testing.assert_allclose(out.record.geometry.origin, (3.0 + 22 * 0.5, -1.0 + 10 * 2.0))
    back, bg = invert(out.image[0], out.record, fill=-7.0)
    np.testing.assert_array_equal(back[10:50, 22:58], image[0, 10:50, 22:58])
    kept = np.zeros((100, 80), bool)
    kept[10:50, 22:58] = True
    assert (back[~kept] == -7.0).all() and bg.shape == (100, 80)


def test_crop_to_mask_clips_at_the_border_keeps_an_empty_mask_whole_and_needs_a_mask() -> None:
    image = np.arange(2 * 12 * 10, dtype=np.float32).reshape(2, 12, 10)
    geom = Geometry(spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0), shape=(12, 10))
    pre = Preprocessor(PreprocessConfig(crop_to_mask=0.25, intensity="none", target_size=(6, 6)))
    mask = np.zeros((12, 10), np.uint8)
    mask[0:2, 8:10] = 2  # a corner: the widened box (3 rows, 2 columns of margin) is clipped by the image
    out = pre.apply(image, geom, mask)
    assert out.record.steps[0]["crop"] == [[0, 7], [6, 0]] and out.image.shape == (2, 6, 6)
    empty = pre.apply(image, geom, np.zeros((12, 10), np.uint8))
    assert [s["op"] for s in empty.record.steps] == ["resize"]  # nothing cropped
    with pytest.raises(ValueError, match="crop_to_mask.*has none"):
        pre.apply(image, geom)
    with pytest.raises(ValueError, match="crop_to_mask"):
        PreprocessConfig(crop_to_mask=1.0, target_size=(6, 6))
    with pytest.raises(ValueError, match="crop_to_mask needs target_size"):
        PreprocessConfig(crop_to_mask=0.1)
    # off by default and then absent from the dict, so caches keyed by older configs still match
    assert "crop_to_mask" not in PreprocessConfig().to_dict()
    assert (
        PreprocessConfig.from_dict(PreprocessConfig(crop_to_mask=0.05, target_size=(6, 6)).to_dict()).crop_to_mask
        == 0.05
    )
