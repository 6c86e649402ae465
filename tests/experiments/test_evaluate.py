"""``agseg evaluate``: folders of masks -> per-case metrics equal to the metric functions, summary, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from agseg.cli import app
from agseg.data.errors import DataError
from agseg.data.io import Geometry, write_mask
from agseg.experiments.evaluate import evaluate_folders
from agseg.metrics import dice, hd95


def _disc(shape, centre, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= r * r


def test_png_folders_binary(tmp_path):
    g = Geometry.identity((40, 40), format="png")
    refs, preds = {}, {}
    for i in range(3):
        refs[i] = _disc((40, 40), (20, 20), 8 + i)
        preds[i] = _disc((40, 40), (21, 19), 8)
        write_mask(tmp_path / "ref" / f"c{i}.png", refs[i], g)
        write_mask(tmp_path / "pred" / f"c{i}.png", preds[i], g)
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", metrics=["dice", "hd95"])
    assert [r["case_id"] for r in rows] == ["c0", "c1", "c2"]
    for i, r in enumerate(rows):
        assert r["dice"] == pytest.approx(dice(preds[i], refs[i]))
        assert r["hd95"] == pytest.approx(hd95(preds[i], refs[i]))
    assert summary["dice"]["n"] == 3
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["metrics"]["dice"]["mean"] == pytest.approx(np.mean([r["dice"] for r in rows]))


def test_nifti_multiclass_with_spacing_and_empty_prediction(tmp_path):
    g = Geometry(spacing=(0.7, 0.7, 2.5), origin=(1.0, 2.0, 3.0), direction=tuple(np.eye(3).ravel()),
                 shape=(8, 16, 16), format="nifti")  # fmt: skip
    ref = np.zeros((8, 16, 16), np.uint8)
    ref[2:6, 4:10, 4:10] = 1
    ref[2:6, 10:14, 4:10] = 2
    pred = ref.copy()
    pred[:, :, :] = np.where(ref == 2, 0, ref)  # label 2 missed entirely
    write_mask(tmp_path / "ref" / "a.nii.gz", ref, g)
    write_mask(tmp_path / "pred" / "a.nii.gz", pred, g)
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, metrics=["dice", "hd"])
    r = rows[0]
    assert r["dice_1"] == pytest.approx(1.0) and r["dice_2"] == 0.0
    assert r["hd_1"] == 0.0 and np.isinf(r["hd_2"])
    assert summary["hd_2"]["n_undefined"] == 1  # counted, not dropped


def test_mismatched_shapes_and_missing_folders_are_named(tmp_path):
    write_mask(tmp_path / "ref" / "a.png", np.ones((10, 10), bool), Geometry.identity((10, 10), format="png"))
    write_mask(tmp_path / "pred" / "a.png", np.ones((12, 10), bool), Geometry.identity((12, 10), format="png"))
    with pytest.raises(DataError, match=r"a\.png.*shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path / "ref")])
    assert res.exit_code != 0 and "nope" in res.output
