"""Sononet and AG-Sononet through the usual commands on a tiny synthetic dataset: classes from the case names,
`agseg cv` with stratified folds and a classification summary, `agseg predict` with predictions, attention maps,
boxes (CSV + overlay), `agseg train --init-from` a Sononet run, and `agseg compare` of the two CVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agseg.cli import app
from agseg.data.synthetic import write_shape_dataset
from agseg.metrics import read_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """24 PNGs ``images/shape_NNN_<class>.png`` (class 1: a square on noise) with masks: the folders layout."""
    return write_shape_dataset(tmp_path_factory.mktemp("shapes"), 24, layout="pattern", size=64,
                               shapes=("none", "square"), shape_size=(20, 28), seed=3)  # fmt: skip


def _config(path: Path, data: Path, model: str, extra: str = "") -> Path:
    path.write_text(
        f"name: {model}\n"
        f"data: {{path: {data}, labels: {{0: none, 1: square}}, options: {{class_pattern: '_(\\d)$'}}, "
        "preprocess: {intensity: zscore_case}}\n"
        f"model: {{name: {model}, capacity: 4{extra}}}\n"
        "train: {epochs: 3, batch_size: 8, optimizer: sgd, lr: 0.05, nesterov: true, amp: 'off', threads: 1}\n"
        "cv: {folds: 2, val_fraction: 0.0}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def cvs(shapes, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cv")
    out = {}
    for model, extra in (("sononet", ""), ("ag_sononet", ", deep_supervision: true")):
        cfg = _config(root / f"{model}.yaml", shapes, model, extra)
        splits = ["--splits", str(out["sononet"] / "splits.json")] if out else []
        res = runner.invoke(app, ["cv", str(cfg), "--out", str(root / model), *splits])
        assert res.exit_code == 0, res.output
        out[model] = root / model
    return out


def test_cv_writes_per_case_classes_a_classification_summary_and_stratified_folds(cvs):
    for model, cv in cvs.items():
        rows = read_csv(cv / "metrics.csv")
        assert len(rows) == 24 and {"target", "predicted", "prob_none", "prob_square", "correct"} <= set(rows[0])
        assert all(r["case_id"].endswith(f"_{int(r['target'])}") for r in rows)  # the class came from the name
        block = json.loads((cv / "summary.json").read_text(encoding="utf-8"))["classification"]
        pooled = block["pooled"]
        assert pooled["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
        assert {"precision_macro", "recall_macro", "f1_macro", "roc_auc", "f1_square", "recall_none"} <= set(pooled)
        assert block["n_folds"] == 2 and set(block["fold_mean"]) == set(block["fold_std"])
        plan = json.loads((cv / "splits.json").read_text(encoding="utf-8"))
        assert plan["stratified"] is True
        for f in plan["folds"]:  # 6 of each class in every test fold of 12
            assert sorted(int(c[-1]) for c in f["test"]) == [0] * 6 + [1] * 6, model
    bundle = json.loads((cvs["ag_sononet"] / "repeat0_fold0" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["task"] == "classification" and bundle["model_name"] == "ag_sononet"


def test_predict_writes_predictions_maps_and_boxes(cvs, shapes, tmp_path):
    images = sorted((shapes / "images").glob("*.png"))[:2]
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", *map(str, images), "--run", str(cvs["ag_sononet"] / "repeat0_fold0"),
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    pred = read_csv(out / "predictions.csv", text_columns=("case", "predicted_class"))
    assert [r["case"] for r in pred] == ["shape_000_0", "shape_001_1"]
    assert {"predicted", "predicted_class", "prob_none", "prob_square"} <= set(pred[0])
    with (out / "boxes.csv").open(encoding="utf-8") as fh:
        boxes = list(csv.DictReader(fh))
    assert list(boxes[0]) == ["case", "gate", "y0", "x0", "y1", "x1", "consistent"]
    for case in ("shape_000_0", "shape_001_1"):
        rows = {r["gate"]: r for r in boxes if r["case"] == case}
        assert "box" in rows
        for r in rows.values():
            if r["y0"]:
                assert 0 <= int(r["y0"]) < int(r["y1"]) <= 64 and 0 <= int(r["x0"]) < int(r["x1"]) <= 64
        overlay = np.asarray(Image.open(out / f"{case}_boxes.png"))
        assert overlay.shape == (64, 64, 3)
        for gate in ("gate0", "gate1"):
            assert np.asarray(Image.open(out / f"{case}_att_{gate}.png")).shape == (64, 64)
        assert (out / f"{case}_attention.png").is_file()
    # a second run into the same folder is refused before any work (boxes.csv exists)
    res = runner.invoke(app, ["predict", str(images[0]), "--run", str(cvs["ag_sononet"] / "repeat0_fold0"),
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code != 0 and "exists already" in res.output


def test_a_sononet_predicts_without_boxes(cvs, shapes, tmp_path):
    image = sorted((shapes / "images").glob("*.png"))[0]
    res = runner.invoke(app, ["predict", str(image), "--run", str(cvs["sononet"] / "repeat0_fold0"),
                              "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "predictions.csv").is_file() and not (tmp_path / "boxes.csv").exists()


def test_ag_sononet_is_initialised_from_a_sononet_run(cvs, shapes, tmp_path):
    cfg = _config(tmp_path / "ag.yaml", shapes, "ag_sononet", ", deep_supervision: true")
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "ag"), "--init-from",
                              str(cvs["sononet"] / "repeat0_fold0"), "--set", "train.epochs=1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ag" / "init_from.json").read_text(encoding="utf-8"))
    loaded = set(report["loaded"])
    assert loaded and all(k.startswith("features.") for k in loaded)
    feature_params = {k for k in report["loaded"] + report["missing"] if k.startswith("features.")}
    assert feature_params == loaded  # the whole feature extractor came across, by name


def test_compare_the_two_classifier_cvs(cvs, tmp_path):
    res = runner.invoke(app, ["compare", str(cvs["sononet"]), str(cvs["ag_sononet"]), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    with (tmp_path / "classifier_pairwise.csv").open(encoding="utf-8") as fh:
        (pair,) = list(csv.DictReader(fh))
    assert pair["n_pairs"] == "24" and pair["auc_method"] == "delong" and pair["mcnemar_method"] in ("exact", "none")
    assert "## Classifiers" in (tmp_path / "compare.md").read_text(encoding="utf-8")


def test_compare_per_group_of_cases_matches_sklearn_on_each_group(cvs, tmp_path):
    """`--group REGEX`: each model's accuracy and ROC AUC over the cases whose id the regex puts in one group, here the
    tens digit of the case number (shape_00N, shape_01N, shape_02N), against accuracy and sklearn's AUC by hand."""
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(cvs["sononet"]), str(cvs["ag_sononet"]), "--group", r"^shape_0(\d)",
                              "--out", str(out), "--no-plots"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with (out / "classifier_groups.csv").open(encoding="utf-8") as fh:
        groups = list(csv.DictReader(fh))
    assert [(g["group"], g["n"]) for g in groups[:3]] == [("0", "10"), ("1", "10"), ("2", "4")]
    assert len(groups) == 6 and "By group of cases" in (out / "compare.md").read_text(encoding="utf-8")
    for model, cv in cvs.items():
        rows = read_csv(cv / "metrics.csv")
        for g in (r for r in groups if r["model"] == model):
            sub = [r for r in rows if r["case_id"][7] == g["group"]]
            assert float(g["accuracy"]) == pytest.approx(np.mean([r["correct"] for r in sub]))
            y = [int(r["target"]) for r in sub]
            if len(set(y)) == 2:
                auc = roc_auc_score(y, [r["prob_square"] for r in sub])
                assert float(g["roc_auc"]) == pytest.approx(auc)
    res = runner.invoke(app, ["compare", str(cvs["sononet"]), "--group", "(", "--out", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "not a valid regular expression" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()


def test_a_classifier_on_images_cropped_to_their_masks_cvs_and_predict_refuses_new_images(shapes, tmp_path):
    """preprocess.crop_to_mask: the CV crops every case (training and test) to its mask's box, the localisation
    measurement too (a uniform map's share is the mask's share of that box); agseg predict, which has no masks for
    new images, refuses the model in one line before writing anything."""
    from agseg.inference.localise import measure_localisation

    cfg = _config(tmp_path / "crop.yaml", shapes, "ag_sononet")
    sets = ["train.epochs=1", "data.preprocess.crop_to_mask=0.1", "data.preprocess.target_size=[48,48]"]
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "cv"), *(a for s in sets for a in ("--set", s))])
    assert res.exit_code == 0, res.output
    assert len(read_csv(tmp_path / "cv" / "metrics.csv")) == 24
    pre = json.loads((tmp_path / "cv" / "repeat0_fold0" / "preprocess.json").read_text(encoding="utf-8"))
    assert json.dumps(pre).count("crop_to_mask") >= 1
    loc = measure_localisation(tmp_path / "cv", shapes, class_pattern=r"_(\d)$", amp="off")
    assert loc["n_cases"] == 24
    for row in loc["rows"]:
        mask = np.asarray(Image.open(shapes / "masks" / f"{row['case_id']}.png")) > 0
        ys, xs = np.nonzero(mask)
        if not ys.size:  # class 0: an empty mask, the image kept whole
            assert row["mask_share"] == 0 and row["target"] == 0
            continue
        m = int(0.1 * 64)  # the box widened by 10 % of the side, clipped to the image
        seen = mask[max(0, ys.min() - m) : ys.max() + 1 + m, max(0, xs.min() - m) : xs.max() + 1 + m]
        assert row["mask_share"] == pytest.approx(seen.mean()) and seen.mean() > mask.mean()
        assert all(0 <= row[k] <= 1 for k in row if k.startswith("mass_inside"))
    image = sorted((shapes / "images").glob("*.png"))[1]
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", str(image), "--run", str(tmp_path / "cv" / "repeat0_fold0"),
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code != 0 and "cropped to their masks" in " ".join(res.output.split())
    assert "Traceback" not in res.output and not out.exists()
