"""Reading and writing every format with its geometry; bad files give errors naming them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agseg.data import (
    DataError,
    Geometry,
    detect_format,
    mask_path_for,
    read_header,
    read_image,
    read_mask,
    split_ext,
    write_image,
    write_mask,
)
from agseg.data.io import data_files

FORMATS_3D = ["vol.nii", "vol.nii.gz", "vol.mhd", "vol.mha", "vol.nrrd", "dicom_series"]


@pytest.mark.parametrize("name", FORMATS_3D)
def test_3d_round_trip_keeps_geometry(tmp_path: Path, name: str, rotated_geometry: Geometry, sphere_volume) -> None:
    image, _mask = sphere_volume
    geom = rotated_geometry.replace(format="dicom") if name == "dicom_series" else rotated_geometry
    write_image(tmp_path / name, image, geom)
    arr, g = read_image(tmp_path / name)
    assert arr.shape == (1, *image.shape)
    np.testing.assert_array_equal(arr[0], image)
    assert rotated_geometry.mismatch(g, tol=1e-4) is None
    assert g.format == detect_format(tmp_path / name)
    h = read_header(tmp_path / name)
    assert h.shape == image.shape and rotated_geometry.mismatch(h, tol=1e-4) is None


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_2d_binary_mask_written_as_0_255(tmp_path: Path, ext: str) -> None:
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 3:20] = 1
    g = Geometry.identity((20, 30), format=ext[1:], dtype="uint8")
    p = write_mask(tmp_path / f"m{ext}", m, g, binary=True)
    raw, g2 = read_mask(p)
    assert set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(raw > 127, m > 0)
    assert g2.shape == (20, 30) and g2.spacing == pytest.approx((1, 1))


def test_multiclass_png_mask_keeps_values(tmp_path: Path) -> None:
    m = np.arange(12, dtype=np.uint8).reshape(3, 4) % 4
    p = write_mask(tmp_path / "m.png", m, Geometry.identity((3, 4), format="png"))
    np.testing.assert_array_equal(read_mask(p)[0], m)


@pytest.mark.parametrize("binary", [False, None])
def test_mask_encoding_follows_the_label_set_not_the_pixels(tmp_path: Path, binary: bool | None) -> None:
    # a multi-class prediction that happens to hold only class 1: written with value 1 (it used to become 255,
    # which a re-evaluation then scored as class 255, i.e. class 1 missed)
    m = np.zeros((6, 7), np.uint8)
    m[1:3, 2:5] = 1
    p = write_mask(tmp_path / "m.png", m, Geometry.identity((6, 7), format="png"), binary=binary)
    np.testing.assert_array_equal(read_mask(p)[0], m)


def test_jpeg_mask_is_written_as_png(tmp_path: Path) -> None:
    m = np.ones((8, 8), np.uint8)
    p = write_mask(tmp_path / "x.jpg", m, Geometry.identity((8, 8), format="jpg"), binary=True)
    assert p.suffix == ".png" and read_mask(p)[0].max() == 255
    assert mask_path_for(tmp_path / "in" / "x.jpeg", tmp_path / "out", "_pred").name == "x_pred.png"
    assert mask_path_for("a/ct.nii.gz", "o").as_posix() == "o/ct.nii.gz"


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 255, (4, 10, 12)).astype(np.uint8)
    write_image(tmp_path / "c.png", rgba, Geometry.identity((10, 12), format="png", n_channels=4))
    arr, g = read_image(tmp_path / "c.png")
    assert arr.shape == (3, 10, 12) and g.n_channels == 3
    np.testing.assert_array_equal(arr, rgba[:3])
    assert read_image(tmp_path / "c.png", drop_alpha=False)[0].shape == (4, 10, 12)
    assert read_header(tmp_path / "c.png").n_channels == 3


def test_4d_nifti_is_channels_first(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((2, 5, 6, 7)).astype(np.float32)  # (t, z, y, x)
    img = sitk.GetImageFromArray(a, isVector=False)  # a 4D scalar image, like MSD multi-modal files
    img.SetSpacing((0.5, 0.6, 0.7, 1.0))
    sitk.WriteImage(img, str(tmp_path / "m.nii.gz"))
    arr, g = read_image(tmp_path / "m.nii.gz")
    assert arr.shape == (2, 5, 6, 7) and g.n_channels == 2 and g.spacing == pytest.approx((0.5, 0.6, 0.7))
    np.testing.assert_allclose(arr, a)


def test_geometry_dict_round_trip(rotated_geometry: Geometry) -> None:
    assert Geometry.from_dict(rotated_geometry.to_dict()) == rotated_geometry
    assert rotated_geometry.array_spacing == (2.5, 0.9, 0.7)
    assert "spacing" in (rotated_geometry.mismatch(rotated_geometry.replace(spacing=(0.7, 0.9, 3.0))) or "")


def test_corrupt_png_error_names_file(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    write_image(good, np.zeros((64, 64), np.uint8), Geometry.identity((64, 64), format="png"))
    bad = tmp_path / "corrupt.png"
    data = bytearray(good.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="corrupt.png") as e:
        read_image(bad)
    assert e.value.path == str(bad) and "cannot read" in e.value.problem
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    with pytest.raises(DataError, match="garbage.png"):
        read_image(tmp_path / "garbage.png")


def test_truncated_nii_gz_error_names_file(tmp_path: Path, rotated_geometry: Geometry, sphere_volume) -> None:
    p = tmp_path / "t.nii.gz"
    write_image(p, sphere_volume[0], rotated_geometry)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])  # ITK alone would read this silently, padding with zeros
    with pytest.raises(DataError, match=r"t\.nii\.gz.*truncated"):
        read_image(p)


def test_truncated_nii_error_names_file(tmp_path: Path, rotated_geometry: Geometry, sphere_volume) -> None:
    p = tmp_path / "t.nii"
    write_image(p, sphere_volume[0], rotated_geometry)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t\.nii: truncated"):
        read_image(p)


def test_multi_member_gzip_is_not_truncated(tmp_path: Path, rotated_geometry: Geometry, sphere_volume) -> None:
    p = tmp_path / "ok.nii"
    write_image(p, sphere_volume[0], rotated_geometry)
    raw = p.read_bytes()
    q = tmp_path / "ok.nii.gz"
    q.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # legal: concatenated members
    np.testing.assert_array_equal(read_image(q)[0][0], sphere_volume[0])


def test_truncated_raw_and_missing_files(tmp_path: Path, rotated_geometry: Geometry, sphere_volume) -> None:
    p = tmp_path / "v.mhd"
    write_image(p, sphere_volume[0], rotated_geometry)
    assert [f.name for f in data_files(p)] == ["v.mhd", "v.raw"]
    raw = tmp_path / "v.raw"
    raw.write_bytes(raw.read_bytes()[:500])
    with pytest.raises(DataError, match=r"v\.mhd"):
        read_image(p)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_image(tmp_path / "empty.nii.gz")
    (tmp_path / "x.xyz").write_bytes(b"1")
    with pytest.raises(DataError, match="unsupported"):
        read_image(tmp_path / "x.xyz")


def test_dicom_folder_with_two_series(tmp_path: Path, rotated_geometry: Geometry, sphere_volume) -> None:
    g = rotated_geometry.replace(format="dicom")
    write_image(tmp_path / "a", sphere_volume[0], g)
    write_image(tmp_path / "b", sphere_volume[0], g)
    both = tmp_path / "both"
    both.mkdir()
    for f in (tmp_path / "a").iterdir():
        shutil.copy(f, both / f"a{f.name}")
    for f in (tmp_path / "b").iterdir():
        shutil.copy(f, both / f"b{f.name}")
    with pytest.raises(DataError, match="2 DICOM series"):
        read_image(both)


def test_write_checks_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differs"):
        write_image(tmp_path / "x.nii.gz", np.zeros((3, 4, 5)), Geometry.identity((3, 4, 6)))
    with pytest.raises(ValueError, match="integer"):
        write_mask(tmp_path / "x.nii.gz", np.full((3, 4, 5), 0.5), Geometry.identity((3, 4, 5)))


def test_split_ext() -> None:
    assert split_ext("a/b.nii.gz") == ("b", ".nii.gz")
    assert split_ext("c.PNG") == ("c", ".PNG")
    assert split_ext("1.3.6.1.mhd") == ("1.3.6.1", ".mhd")
