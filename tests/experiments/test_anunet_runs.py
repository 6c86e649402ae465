"""ANU-Net through the usual commands: a 3D net trains with `agseg train` and predicts in the input's geometry; a CV
scores every pruning level from the same trained nets; `agseg predict --prune L` uses the smaller net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from agseg.cli import app
from agseg.data import write_dataset
from agseg.inference.predictor import Predictor
from agseg.metrics import read_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("v") / "vols", "volumes", n=6, size=(12, 20, 20), seed=2,
                         spacing=(0.8, 0.9, 2.0))  # fmt: skip


def _cfg(tmp_path, data, extra=""):
    cfg = tmp_path / "anunet3d.yaml"
    cfg.write_text(
        f"name: anu3d\ndata: {{path: {data}, preprocess: {{crop_or_pad: [12, 20, 20]}}}}\n"
        "model: {name: anunet, channels: [4, 8, 16]}\n"
        "train: {epochs: 2, batch_size: 2, amp: 'off', loss: anunet_hybrid}\ncv: {folds: 2, val_fraction: 0.0}\n"
        "eval: {metrics: [dice]}\n" + extra,
        encoding="utf-8",
    )
    return cfg


def test_a_3d_anunet_trains_and_predicts_in_the_inputs_geometry(volumes, tmp_path):
    res = runner.invoke(app, ["train", str(_cfg(tmp_path, volumes)), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    bundle = json.loads((tmp_path / "run" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["model_name"] == "anunet" and bundle["model_kwargs"]["spatial_dims"] == 3
    vol = sorted((volumes / "images").iterdir())[0]
    res = runner.invoke(app, ["predict", str(vol), "--run", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    a, b = sitk.ReadImage(str(vol)), sitk.ReadImage(str(tmp_path / "o" / vol.name))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin())
    # the pruned net predicts too, with fewer parameters (depth 2 of 2 -> level 1)
    full = Predictor.from_path(tmp_path / "run", amp="off")
    small = Predictor.from_path(tmp_path / "run", amp="off", prune=1)
    n = lambda p: sum(t.numel() for t in p.model.parameters())  # noqa: E731
    assert n(small) < n(full)
    res = runner.invoke(app, ["predict", str(vol), "--run", str(tmp_path / "run"), "--out", str(tmp_path / "o1"),
                              "--prune", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output


def test_a_cv_scores_every_pruning_level_of_the_same_nets(volumes, tmp_path):
    res = runner.invoke(app, ["cv", str(_cfg(tmp_path, volumes)), "--out", str(tmp_path / "cv")])
    assert res.exit_code == 0, res.output
    full = read_csv(tmp_path / "cv" / "metrics.csv", text_columns=("model", "case_id"))
    l1 = read_csv(tmp_path / "cv" / "metrics_L1.csv", text_columns=("model", "case_id"))
    assert {r["case_id"] for r in l1} == {r["case_id"] for r in full} and len(full) == 6
    assert {r["model"] for r in l1} == {"anu3d_L1"}
    # level 1 re-predicted by hand with the fold's pruned net gives the table's numbers
    from agseg.data import load_dataset
    from agseg.experiments.evaluate import case_metrics

    fold0 = tmp_path / "cv" / "repeat0_fold0"
    pred = Predictor.from_path(fold0, prune=1)
    ids = {r["case_id"]: r for r in l1 if int(r["fold"]) == 0}
    case = load_dataset(volumes).get(next(iter(ids))).load()
    p = pred.predict_array(case.image, case.geometry)
    dice = case_metrics(p.label, case.label, case.geometry.array_spacing, ["dice"], [1, 2])["dice"]
    assert dice == pytest.approx(ids[case.case_id]["dice"])
    summary = json.loads((tmp_path / "cv" / "summary_L1.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["dice"]["n"] == 6 and summary["level"] == 1
