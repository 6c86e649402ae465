"""``agseg evaluate``: folders of masks -> per-case metrics equal to the metric functions, summary, clear errors."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from agseg.cli import app
from agseg.config import EvalConfig, from_dict
from agseg.data import load_dataset, write_dataset
from agseg.data.errors import DataError
from agseg.data.io import Geometry, mask_path_for, read_mask, write_mask
from agseg.experiments.evaluate import evaluate_folders, evaluate_run, unpaired
from agseg.experiments.run import run_cv
from agseg.metrics import DEFAULT_METRICS, dice, evaluate_case, get_metric, hd95, list_metrics, read_csv


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
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", metrics=["dice", "hd95"])
    rows, summary = res.rows, res.summary
    assert [r["case_id"] for r in rows] == ["c0", "c1", "c2"]
    for i, r in enumerate(rows):
        assert r["dice"] == pytest.approx(dice(preds[i], refs[i]))
        assert r["hd95"] == pytest.approx(hd95(preds[i], refs[i]))
    assert summary["dice"]["n"] == 3
    saved = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert saved["metrics"]["dice"]["mean"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    # pooled Dice = Dice of all cases' pixels laid side by side (not the mean of per-case values)
    pooled = dice(np.concatenate([preds[i] for i in range(3)]), np.concatenate([refs[i] for i in range(3)]))
    assert res.pooled["dice"] == pytest.approx(pooled) and saved["pooled"]["dice"] == pytest.approx(pooled)
    assert res.pooled["dice"] != pytest.approx(summary["dice"]["mean"], abs=1e-6)
    assert res.pooled["n_cases"] == 3


def test_every_default_metric_list_is_metrics_default(tmp_path):
    assert set(DEFAULT_METRICS) <= set(list_metrics())
    for fn in (evaluate_folders, evaluate_run):
        assert tuple(inspect.signature(fn).parameters["metrics"].default) == DEFAULT_METRICS, fn.__name__
    assert tuple(EvalConfig().metrics) == DEFAULT_METRICS
    ref, pred = _disc((30, 30), (15, 15), 6), _disc((30, 30), (16, 15), 5)
    assert tuple(evaluate_case(pred, ref)) == DEFAULT_METRICS
    g = Geometry.identity((30, 30), format="png")
    write_mask(tmp_path / "ref" / "a.png", ref, g)
    write_mask(tmp_path / "pred" / "a.png", pred, g)
    out = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                                   "-o", str(tmp_path / "ev")])  # fmt: skip
    assert out.exit_code == 0, out.output
    (row,) = read_csv(tmp_path / "ev" / "metrics.csv", text_columns=("case_id",))
    assert list(row) == ["case_id", *DEFAULT_METRICS]  # `agseg evaluate` without -m computes the default list
    for m in DEFAULT_METRICS:
        assert row[m] == pytest.approx(get_metric(m)(pred, ref)), m


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
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, metrics=["dice", "hd"])
    rows, summary = res.rows, res.summary
    r = rows[0]
    assert r["dice_1"] == pytest.approx(1.0) and r["dice_2"] == 0.0
    assert r["hd_1"] == 0.0 and np.isinf(r["hd_2"])
    assert summary["hd_2"]["n_undefined"] == 1  # counted, not dropped
    assert set(res.pooled) == {"1", "2"} and res.pooled["1"]["dice"] == 1.0
    assert res.pooled["2"]["recall"] == 0.0 and np.isnan(res.pooled["2"]["precision"])  # nothing predicted as 2


def test_mismatched_shapes_and_missing_folders_are_named(tmp_path):
    write_mask(tmp_path / "ref" / "a.png", np.ones((10, 10), bool), Geometry.identity((10, 10), format="png"))
    write_mask(tmp_path / "pred" / "a.png", np.ones((12, 10), bool), Geometry.identity((12, 10), format="png"))
    with pytest.raises(DataError, match=r"a\.png.*shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path / "ref")])
    assert res.exit_code != 0 and "nope" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "pred")])  # --ref missing
    assert res.exit_code == 2 and "--run" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--run", str(tmp_path / "ref")])  # not a CV folder
    assert res.exit_code == 1 and "no finished fold" in res.output


def test_evaluate_run_reproduces_the_cv_table_and_adds_pooled(tmp_path):
    cxr = write_dataset(tmp_path / "cxr", "cxr", n=6, size=48, seed=2)
    raw = {
        "name": "tiny",
        "data": {"path": str(cxr), "options": {"mask_threshold": 127},
                 "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {"name": "unet", "channels": [4, 8, 16]},
        "train": {"epochs": 1, "batch_size": 2, "amp": "off"},
        "cv": {"folds": 2, "val_fraction": 0.0},
        "eval": {"metrics": ["dice", "hd95"]},
    }  # fmt: skip
    cv = run_cv(from_dict(raw), tmp_path / "cv", progress=False)
    res = evaluate_run(tmp_path / "cv", tmp_path / "ev", metrics=["dice", "hd95", "recall"], progress=False)
    assert len(res.rows) == len(cv.rows) == 6
    by_case = {r["case_id"]: r for r in cv.rows}
    for r in res.rows:  # same predictions, same references: the CV's own numbers come back
        assert r["dice"] == pytest.approx(by_case[r["case_id"]]["dice"])
        assert r["hd95"] == pytest.approx(by_case[r["case_id"]]["hd95"], nan_ok=True)
        assert (r["repeat"], r["fold"]) == (by_case[r["case_id"]]["repeat"], by_case[r["case_id"]]["fold"])
    index = load_dataset(cxr, mask_threshold=127)
    preds = [
        read_mask(
            mask_path_for(
                index.get(r["case_id"]).image_paths[0], tmp_path / "cv" / f"repeat0_fold{r['fold']}" / "predictions"
            )
        )[0]
        for r in res.rows
    ]
    refs = [index.get(r["case_id"]).load().label for r in res.rows]
    tp = sum(int(((p != 0) & (q != 0)).sum()) for p, q in zip(preds, refs, strict=True))
    total = sum(int((p != 0).sum() + (q != 0).sum()) for p, q in zip(preds, refs, strict=True))
    assert res.pooled["dice"] == pytest.approx(2 * tp / total)
    assert set(res.summary) == {"dice", "hd95", "recall"}  # repeat/fold are not metrics
    saved = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert saved["pooled"]["dice"] == pytest.approx(res.pooled["dice"]) and saved["folds"] == [
        "repeat0_fold0",
        "repeat0_fold1",
    ]
    out = CliRunner().invoke(
        app, ["evaluate", "--run", str(tmp_path / "cv" / "repeat0_fold1"), "-o", str(tmp_path / "ev1"), "-m", "dice"]
    )
    assert out.exit_code == 0, out.output
    assert "pooled" in out.output and len(read_csv(tmp_path / "ev1" / "metrics.csv")) == 3


def _antialiased(shape, centre, r):
    """An 8-bit disc with anti-aliased edges (0..255 in steps), like the cxr_lungs masks: lung = value > 127."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    return (np.clip(r + 0.5 - d, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path, arr):
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def test_anti_aliased_references_are_binarised_by_default_and_side_outputs_are_not_predictions(tmp_path):
    g = Geometry.identity((48, 48), format="png")
    refs = {}
    for i in range(3):
        refs[i] = _antialiased((48, 48), (24, 24), 9.3 + i)
        assert len(np.unique(refs[i])) > 3  # edges between 0 and 255
        _write_png(tmp_path / "ref" / f"c{i}.png", refs[i])
        pred = _disc((48, 48), (25, 23), 9)
        write_mask(tmp_path / "pred" / f"c{i}.png", pred, g)
        for side in ("prob", "attention", "att_level1"):  # what `agseg predict --probs --attention` adds
            _write_png(tmp_path / "pred" / f"c{i}_{side}.png", np.full((48, 48), 200, np.uint8))
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, metrics=["dice"])
    # was: every grey level a class (dice_36, dice_73, ... and a mean near 0), and the maps predictions without a
    # reference (a warning each)
    assert [r["case_id"] for r in res.rows] == ["c0", "c1", "c2"] and set(res.rows[0]) == {"case_id", "dice"}
    assert unpaired(tmp_path / "pred", tmp_path / "ref") == ([], [])
    for i, r in enumerate(res.rows):
        assert r["dice"] == pytest.approx(dice(_disc((48, 48), (25, 23), 9), refs[i] > 127))
    # asked for: the values are labels; then too many of them is refused, naming the folder
    _write_png(tmp_path / "ref2" / "c0.png", (np.arange(48 * 48).reshape(48, 48) % 200).astype(np.uint8))
    with pytest.raises(DataError, match=r"ref2.*199 foreground values.*--ref-threshold"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref2", None, metrics=["dice"], ref_threshold=None)


def test_evaluate_cli_counts_missing_apart_in_one_warning(tmp_path, caplog):
    g = Geometry.identity((32, 32), format="png")
    for i in range(5):
        write_mask(tmp_path / "ref" / f"c{i}.png", _disc((32, 32), (16, 16), 6), g)
    write_mask(tmp_path / "pred" / "c0.png", _disc((32, 32), (16, 16), 6), g)
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                                   "--out", str(tmp_path / "ev"), "-m", "dice"])  # fmt: skip
    assert res.exit_code == 3, res.output
    assert "1 of 5 references predicted" in res.output
    warned = [r.getMessage() for r in caplog.records if "no prediction" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("4 of 5 references have no prediction"), warned
    row = next(line for line in res.output.splitlines() if line.strip("│ ").startswith("dice"))
    assert [c.strip() for c in row.strip("│").split("│")][4:] == ["5", "4", "0"]  # n, missing, undefined


def test_auto_thresholding_keeps_label_maps_and_named_classes(tmp_path):
    g = Geometry.identity((40, 40), format="png")
    disc = _disc((40, 40), (20, 20), 9)
    # a 0/255 binary mask scored with the class named: 255 in both (was Dice 0: the reference became 0/1)
    _write_png(tmp_path / "ref" / "b.png", np.where(disc, 255, 0).astype(np.uint8))
    _write_png(tmp_path / "pred" / "b.png", np.where(disc, 255, 0).astype(np.uint8))  # as predict writes them
    named = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, metrics=["dice"], labels=[255])
    assert named.rows[0]["dice_255"] == pytest.approx(1.0)
    # an 8-bit label map that uses 255 as one class beside a large 128 region stays a label map
    lab = np.zeros((40, 40), np.uint8)
    lab[:, :20], lab[disc] = 128, 255
    _write_png(tmp_path / "ref2" / "b.png", lab)
    _write_png(tmp_path / "pred2" / "b.png", lab)
    kept = evaluate_folders(tmp_path / "pred2", tmp_path / "ref2", None, metrics=["dice"])
    assert kept.rows[0]["dice_128"] == pytest.approx(1.0) and kept.rows[0]["dice_255"] == pytest.approx(1.0)
    # a reference whose own name looks like a side output is still a case
    _write_png(tmp_path / "ref" / "b_prob.png", np.where(disc, 255, 0).astype(np.uint8))
    write_mask(tmp_path / "pred" / "b_prob.png", disc, g)
    both = evaluate_folders(tmp_path / "pred", tmp_path / "ref", None, metrics=["dice"])
    assert [r["case_id"] for r in both.rows] == ["b", "b_prob"] and not both.missing
