"""The seams issue's acceptance: an explicit label set, label-set-driven mask encoding, early config errors, and a
classifier trained and cross-validated by the same commands as the segmentation nets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from agseg.cli import app
from agseg.config import ConfigError, from_dict
from agseg.data.errors import DataError
from agseg.data.io import read_mask
from agseg.experiments.evaluate import evaluate_run
from agseg.experiments.run import load_index, run_cv, train_model, train_split
from agseg.inference.bundle import load_bundle
from agseg.inference.predictor import Predictor
from agseg.metrics import read_csv
from agseg.nets.base import ClassificationNet
from agseg.nets.registry import _REGISTRY, register_model

runner = CliRunner()


def _nifti(path: Path, arr: np.ndarray) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def rare_class(tmp_path_factory) -> Path:
    """40 NIfTI cases; class 1 in every case, class 2 in case 31 only (an odd index: a sample of every 2nd case, as
    the old guess took for 40 cases, misses it)."""
    root = tmp_path_factory.mktemp("rare")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        lab = np.zeros((8, 16, 16), np.uint8)
        lab[2:6, 4:10, 4:10] = 1
        if i == 31:
            lab[3:5, 11:14, 11:14] = 2
        img = (lab * 2.0 + rng.normal(size=lab.shape)).astype(np.float32)
        _nifti(root / "images" / f"case_{i:02d}.nii.gz", img)
        _nifti(root / "labels" / f"case_{i:02d}.nii.gz", lab)
    return root


def _cfg(path: Path, **over) -> object:
    raw = {
        "name": "seam",
        "data": {"path": str(path), "preprocess": {"intensity": "zscore_case"}},
        "model": {"name": "unet", "channels": [4, 8]},
        "train": {"epochs": 1, "batch_size": 4, "amp": "off", "max_steps_per_epoch": 2},
        "cv": {"folds": 2, "val_fraction": 0.0},
        "eval": {"metrics": ["dice"]},
    }
    cfg = from_dict(raw)
    return cfg.replace(**over) if over else cfg


def test_a_class_in_one_case_of_forty_gives_a_three_output_net(rare_class, tmp_path):
    cfg = _cfg(rare_class)
    index = load_index(cfg)
    train, val = train_split(cfg, index)
    run = train_model(cfg, tmp_path / "run", train, val, index=index)
    assert run.model.out_channels == 3
    bundle = json.loads((tmp_path / "run" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["labels"] == [0, 1, 2]
    record = json.loads((tmp_path / "run" / "labels.json").read_text(encoding="utf-8"))
    assert record["cases_with_value"] == {"0": 40, "1": 40, "2": 1}
    assert record["source"].startswith("counted over 40")


def test_a_declared_label_set_is_checked_against_every_case(rare_class, tmp_path):
    cfg = _cfg(rare_class, **{"data.labels": {0: "background", 1: "organ"}})
    index = load_index(cfg)
    with pytest.raises(DataError, match=r"case_31\.nii\.gz.*\[2\]"):
        train_model(cfg, tmp_path / "run", list(index), [], index=index)
    assert not (tmp_path / "run").exists(), "the run directory was written before the data check"


@pytest.fixture(scope="module")
def multiclass_png(tmp_path_factory) -> Path:
    """12 PNG cases with labels 0/1/2; class 2 is a few pixels in 3 cases (a 1-epoch net never predicts it)."""
    root = tmp_path_factory.mktemp("mc")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        lab = np.zeros((32, 32), np.uint8)
        lab[6:24, 6:24] = 1
        if i % 4 == 0:
            lab[26:28, 26:28] = 2
        img = np.clip(lab * 90 + rng.normal(40, 10, lab.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(lab).save(root / "masks" / f"c{i:02d}.png")
    return root


def test_multiclass_png_predictions_keep_values_and_evaluate_run_agrees(multiclass_png, tmp_path):
    cfg = _cfg(
        multiclass_png,
        **{"data.options": {"mask_threshold": None}, "data.preprocess": {"intensity": "minmax01"},
           "train.max_steps_per_epoch": None, "train.epochs": 20, "train.lr": 0.02, "model.channels": [8, 16],
           "data.labels": {0: "background", 1: "organ", 2: "spot"}},
    )  # fmt: skip
    res = run_cv(cfg, tmp_path / "cv")
    preds = sorted((tmp_path / "cv").glob("repeat0_fold*/predictions/*.png"))
    assert len(preds) == 12
    values = [set(np.unique(read_mask(p)[0]).tolist()) for p in preds]
    assert all(v <= {0, 1, 2} for v in values), values  # never 255: the label set is multi-class
    assert any(v == {0, 1} or v == {1} for v in values), "precondition: some prediction holds class 1 only"
    again = evaluate_run(tmp_path / "cv", metrics=["dice"])
    cv_rows = {r["case_id"]: r for r in read_csv(tmp_path / "cv" / "metrics.csv")}
    assert {r["case_id"] for r in again.rows} == set(cv_rows)
    for r in again.rows:  # the class names reach the columns, and the re-evaluation agrees with the CV
        for col in ("dice", "dice_organ", "dice_spot"):
            assert r[col] == pytest.approx(cv_rows[r["case_id"]][col], nan_ok=True), (r["case_id"], col)
    assert res.folds_done == 2
    # a fold scored before class names reached the columns (dice_1, dice_2) keeps its own column names
    fold = tmp_path / "cv" / "repeat0_fold0" / "metrics.csv"
    fold.write_text(
        fold.read_text(encoding="utf-8").replace("dice_organ", "dice_1").replace("dice_spot", "dice_2"),
        encoding="utf-8",
    )
    old = evaluate_run(tmp_path / "cv" / "repeat0_fold0", metrics=["dice"])
    assert {"dice_1", "dice_2"} <= set(old.rows[0]) and "dice_organ" not in old.rows[0]
    # and a CV whose folds were scored differently says so in one line instead of a KeyError
    with pytest.raises(DataError, match="metric columns.*evaluated differently"):
        from agseg.experiments.run import gather_cv
        from agseg.experiments.splits import SplitPlan

        gather_cv(tmp_path / "cv", cfg, SplitPlan.from_json(tmp_path / "cv" / "splits.json"))


def test_a_bundle_with_classes_writes_value_1_for_a_class_1_only_prediction(multiclass_png, tmp_path):
    cfg = _cfg(multiclass_png, **{"data.options": {"mask_threshold": None}})
    index = load_index(cfg)
    run = train_model(cfg, tmp_path / "run", list(index)[:4], [], index=index)
    model, bundle = load_bundle(tmp_path / "run")
    with torch.no_grad():  # make the net say "class 1" everywhere
        model.head.heads[0].weight.zero_()
        model.head.heads[0].bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    out = Predictor(model, bundle, amp="off").predict_file(index[0].image_paths[0], tmp_path / "out")
    assert run.bundle.labels == [0, 1, 2]
    assert set(np.unique(read_mask(out["mask"])[0]).tolist()) == {1}


def _yaml(path: Path, data: Path) -> Path:
    path.write_text(
        f"name: t\ndata: {{path: {data}, preprocess: {{target_size: [16, 16]}}}}\n"
        "model: {name: attention_unet, channels: [4, 8, 16]}\ntrain: {epochs: 1, amp: 'off'}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("verb", ["train", "cv"])
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.gatng=single", ["'gatng'", "model", "gating"]),
        ("model.name=vnet", ["model.name", "'vnet'", "attention_unet"]),
        ("train.loss=dicey", ["train.loss", "dice_ce"]),
        ("train.epochs=ten", ["train.epochs", "integer"]),
    ],
)
def test_config_errors_are_one_line_and_leave_no_run_directory(multiclass_png, tmp_path, override, named, verb):
    cfg = _yaml(tmp_path / "exp.yaml", multiclass_png)
    out = tmp_path / "run"
    res = runner.invoke(app, [verb, str(cfg), "--out", str(out), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for word in named:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------- the task seam
class TinyClassifier(ClassificationNet):
    """Global max pooling of one conv: enough to learn "bright square present"."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).amax((2, 3)))


@pytest.fixture
def tiny_classifier():
    register_model("tiny_classifier_test", TinyClassifier, task="classification")
    yield "tiny_classifier_test"
    _REGISTRY.pop("tiny_classifier_test", None)


@pytest.fixture(scope="module")
def class_list(tmp_path_factory) -> Path:
    """A CSV case list of 16 PNG images with an image-level class (1: a bright square)."""
    root = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(2)
    rows = ["image,class"]
    for i in range(16):
        img = rng.normal(60, 10, (24, 24))
        if i % 2:
            img[6:18, 6:18] += 120
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"x{i:02d}.png")
        rows.append(f"x{i:02d}.png,{i % 2}")
    (root / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "cases.csv"


def test_a_classifier_is_cross_validated_and_predicted_by_the_same_commands(tiny_classifier, class_list, tmp_path):
    cfg = tmp_path / "cls.yaml"
    cfg.write_text(
        f"name: cls\ndata: {{path: {class_list}, labels: {{0: normal, 1: square}}, "
        "preprocess: {intensity: ct_window, window: [0, 255]}}\n"
        f"model: {{name: {tiny_classifier}}}\n"
        "train: {epochs: 30, batch_size: 4, lr: 0.05, amp: 'off'}\ncv: {folds: 2, val_fraction: 0.0}\n",
        encoding="utf-8",
    )
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "cv")])
    assert res.exit_code == 0, res.output
    rows = read_csv(tmp_path / "cv" / "metrics.csv")
    assert len(rows) == 16 and {"target", "predicted", "prob_normal", "prob_square", "correct"} <= set(rows[0])
    for r in rows:
        assert r["prob_normal"] + r["prob_square"] == pytest.approx(1.0, abs=1e-5)
        assert r["correct"] == float(r["predicted"] == r["target"])
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text(encoding="utf-8"))
    accuracy = summary["metrics"]["correct"]["mean"]
    assert accuracy == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert accuracy >= 0.75, "the tiny classifier should learn bright squares"
    log = (tmp_path / "cv" / "repeat0_fold0" / "log.csv").read_text(encoding="utf-8")
    assert "train_acc" in log.splitlines()[0]
    bundle = json.loads((tmp_path / "cv" / "repeat0_fold0" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["task"] == "classification" and bundle["labels"] == [0, 1]
    res = runner.invoke(
        app,
        [
            "predict",
            str(class_list.parent / "x01.png"),
            str(class_list.parent / "x02.png"),
            "--run",
            str(tmp_path / "cv" / "repeat0_fold0"),
            "--out",
            str(tmp_path / "pred"),
        ],
    )
    assert res.exit_code == 0, res.output  # fmt: skip
    pred = read_csv(tmp_path / "pred" / "predictions.csv")
    assert [r["case"] for r in pred] == ["x01", "x02"] and {"prob_normal", "prob_square"} <= set(pred[0])


def test_config_for_an_unknown_model_key_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict({"model": {"name": "unet", "gating": "multi"}})


def test_the_preprocessings_label_map_is_part_of_the_label_set(multiclass_png, tmp_path):
    # masks hold 0/1/2; the preprocessing maps 2 -> 1: the net is binary, not a 3-class net that dies on value 2
    cfg = _cfg(multiclass_png, **{"data.options": {"mask_threshold": None},
                                  "data.preprocess": {"label_map": {1: 1, 2: 1}}})  # fmt: skip
    index = load_index(cfg)
    run = train_model(cfg, tmp_path / "run", list(index)[:4], [], index=index)
    assert run.bundle.labels == [0, 1] and run.model.out_channels == 1


def test_auto_threshold_refuses_masks_coded_two_ways(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, fg in enumerate([255, 255, 128, 128]):  # two masks 0/255, two 0/128: coded differently
        m = np.zeros((16, 16), np.uint8)
        m[4:10, 4:10] = fg
        Image.fromarray(m).save(tmp_path / "masks" / f"c{i}.png")
        Image.fromarray((m // 2 + 20).astype(np.uint8)).save(tmp_path / "images" / f"c{i}.png")
    cfg = _cfg(tmp_path)
    with pytest.raises(DataError, match=r"mask_threshold 'auto' binarised 2 mask\(s\).*kept 2.*coded differently"):
        train_model(cfg, tmp_path / "run", list(load_index(cfg)), [])
    assert not (tmp_path / "run").exists()


def test_config_details_a_user_types_naturally(rare_class):
    cfg = _cfg(rare_class, **{"train.amp": False})  # YAML reads `amp: off` as false
    assert cfg.train.amp == "off"
    # per-axis pooling in a 3D config validates without spelling out spatial_dims
    cfg = _cfg(rare_class, **{"model.pool_sizes": [[1, 2, 2]]})
    assert cfg.model.kwargs["pool_sizes"] == [[1, 2, 2]]
    with pytest.raises(ConfigError, match="affine_prob"):
        _cfg(rare_class, **{"data.augment": {"affine_prob": 2.0}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_cuda_device_fails_before_anything_is_written(rare_class, tmp_path):
    from agseg.runtime import DeviceError

    cfg = _cfg(rare_class, **{"train.device": "cuda:1"})
    with pytest.raises(DeviceError, match="no CUDA device"):
        train_model(cfg, tmp_path / "run", list(load_index(cfg))[:2], [])
    assert not (tmp_path / "run").exists()
