"""The trained models shipped with agseg work offline on a fresh install and keep each input's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from typer.testing import CliRunner

from agseg.cli import app
from agseg.data.synthetic import chest_phantom
from agseg.inference.pretrained import list_pretrained, pretrained_info, pretrained_path

runner = CliRunner()


def test_shipped_models_are_present_small_and_documented():
    assert {"cxr-lungs", "hippocampus", "nuclei"} <= set(list_pretrained())
    for name in ("cxr-lungs", "hippocampus", "nuclei"):
        size = (pretrained_path(name) / "model.safetensors").stat().st_size
        assert size <= 10 * 2**20, f"{name}: {size} bytes"
        info = pretrained_info(name)
        assert info["trained_on"] and info["licence"] and info["cv_performance"]


def _predict_png(model, image, out):
    """``agseg predict --model MODEL IMAGE --out OUT``; the written mask as booleans."""
    res = runner.invoke(app, ["predict", "--model", model, str(image), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with Image.open(out / image.name) as m:
        return np.asarray(m) > 127


def _dice(pred, ref):
    return 2 * (pred & ref).sum() / (pred.sum() + ref.sum())


def test_cxr_lungs_on_a_512_png(tmp_path):
    image, mask = chest_phantom(512, rng=3)
    Image.fromarray(image).save(tmp_path / "xray.png")
    pred = _predict_png("cxr-lungs", tmp_path / "xray.png", tmp_path / "o")
    assert pred.shape == (512, 512)
    dice = _dice(pred, mask > 127)
    assert dice > 0.5, f"the shipped lung model finds little of a phantom's lungs (Dice {dice:.2f})"


def _nuclei_phantom(h, w, seed):
    """Bright discs (nuclei) on a dark noisy background, as an RGBA PNG like the DSB 2018 images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    ref = np.zeros((h, w), bool)
    for _ in range(25):
        cy, cx, r = rng.integers(15, h - 15), rng.integers(15, w - 15), rng.integers(6, 12)
        ref |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.where(ref, 180, 15) + rng.normal(0, 8, (h, w))
    rgba = np.stack([img, img, img, np.full((h, w), 255.0)], -1).clip(0, 255).astype(np.uint8)
    return rgba, ref


def test_nuclei_on_an_rgba_png_of_any_size(tmp_path):
    rgba, ref = _nuclei_phantom(300, 340, 0)  # not a multiple of the 256 training crops: sliding windows
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cells.png")
    pred = _predict_png("nuclei", tmp_path / "cells.png", tmp_path / "o")
    assert pred.shape == (300, 340)
    dice = _dice(pred, ref)
    assert dice > 0.7, f"the shipped nuclei model finds little of a phantom's nuclei (Dice {dice:.2f})"


def test_shipped_models_predict_whole_folders(tmp_path):
    """`agseg predict DIR --model NAME`: a folder of PNGs and a folder of NIfTI volumes (a folder used to be taken
    for a DICOM series)."""
    (tmp_path / "pngs").mkdir()
    (tmp_path / "vols").mkdir()
    for i in range(2):
        Image.fromarray(chest_phantom(256, rng=i)[0]).save(tmp_path / "pngs" / f"x{i}.png")
        vol = np.random.default_rng(i).normal(100, 20, size=(30, 40, 30)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "vols" / f"v{i}.nii.gz"))
    for model, folder, names in (("cxr-lungs", "pngs", ["x0.png", "x1.png"]),
                                 ("hippocampus", "vols", ["v0.nii.gz", "v1.nii.gz"])):  # fmt: skip
        res = runner.invoke(app, ["predict", str(tmp_path / folder), "--model", model, "--out", str(tmp_path / model)])
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in (tmp_path / model).iterdir()) == names


def test_hippocampus_on_a_nifti_volume(tmp_path):
    rng = np.random.default_rng(0)
    vol = sitk.GetImageFromArray(rng.normal(100, 20, size=(36, 50, 35)).astype(np.float32))
    vol.SetSpacing((1.0, 1.0, 1.2))
    vol.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(vol, str(tmp_path / "t1.nii.gz"))
    res = runner.invoke(
        app, ["predict", "--model", "hippocampus", str(tmp_path / "t1.nii.gz"), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    out = sitk.ReadImage(str(tmp_path / "o" / "t1.nii.gz"))
    assert out.GetSize() == vol.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), vol.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), vol.GetOrigin(), atol=1e-5)
    assert set(np.unique(sitk.GetArrayFromImage(out))) <= {0, 1, 2}


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,dataset,case",
    [("cxr-lungs", "cxr_lungs", 0), ("hippocampus", "msd_hippocampus", 0), ("nuclei", "dsb2018_nuclei", 0)],
)
def test_shipped_model_on_real_cases(shared_data, name, dataset, case):
    """On cases it was trained on this is a sanity check of the packaging, not a performance claim."""
    from agseg.data import load_dataset
    from agseg.inference.predictor import Predictor
    from agseg.metrics import dice

    opts = {"mask_threshold": 127} if dataset == "cxr_lungs" else {}
    c = load_dataset(shared_data / dataset, **opts)[case].load()
    pred = Predictor.from_path(pretrained_path(name)).predict_array(c.image, c.geometry)
    assert pred.label.shape == c.label.shape
    assert dice(pred.label > 0, c.label > 0) > 0.8
