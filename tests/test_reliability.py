"""A hostile but realistic user: every bad input gets one line naming the file or key, nothing is lost, nothing is
dropped silently (issue 14). Each test is one row of the reliability table in docs/reliability.md; run
``python benchmarks/reliability.py`` to regenerate it from these tests.

Every test drives the real command line (``agseg ...`` through Typer's runner) and checks the exit code, that the
output is one ``error:`` line with the expected words and no traceback, and that no file was lost or written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from typer.testing import CliRunner

import agseg
from agseg.cli import app
from agseg.data import write_dataset
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.inference.bundle import ModelBundle

runner = CliRunner()
_RECORD = os.environ.get("AGSEG_RELIABILITY_OUT")


def agseg_cli(*args: str, category: str, case: str):
    """Run ``agseg args``; with ``AGSEG_RELIABILITY_OUT`` set, append ``(category, case, exit code, first line)`` to
    that JSON-lines file (what benchmarks/reliability.py renders)."""
    res = runner.invoke(app, [str(a) for a in args])
    if _RECORD:
        out = res.output or ""
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error:")]
        first = next((i for i, ln in enumerate(lines) if ln.startswith("warning:")), None)
        notes = [" ".join(lines[first:])] if first is not None else []
        says = (errs or notes or [ln for ln in lines if ln.startswith("wrote")] or ["done"])[0]
        crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
        row = {"category": category, "case": case, "exit": res.exit_code, "says": says[:240],
               "traceback": "Traceback" in out or crashed}  # fmt: skip
        with open(_RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return res


def one_error_line(res, *words: str, code: int = 1) -> str:
    """The run exited with ``code`` and printed one ``error:`` line holding every word (case-insensitive)."""
    out = res.output or ""
    assert "Traceback" not in out, out
    assert res.exit_code == code, (res.exit_code, out)
    errs = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, out
    for w in words:
        assert w.lower() in errs[0].lower(), (w, errs[0])
    return errs[0]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


# ------------------------------------------------------------------------------------------------------ fixtures
def _bundle(folder: Path, spatial_dims: int = 2, in_channels: int = 1, labels=(0, 1), **pre) -> Path:
    kwargs = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": 1 if len(labels) == 2
              else len(labels), "channels": [4, 8]}  # fmt: skip
    torch.manual_seed(0)
    model = agseg.create_model("unet", **kwargs)
    config = PreprocessConfig(**(pre or {"intensity": "zscore_case"}))
    ModelBundle("unet", kwargs, Preprocessor(config).to_dict(), labels=list(labels)).save(folder, model)
    return folder


@pytest.fixture(scope="module")
def model2d(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("m2") / "model")


@pytest.fixture(scope="module")
def model3d(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("m3") / "model", spatial_dims=3)


@pytest.fixture(scope="module")
def cxr(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "cxr", "cxr", n=6, size=32, seed=3)


def _png(path: Path, size: int = 24, rgb: bool = False) -> Path:
    rng = np.random.default_rng(len(str(path)))
    arr = rng.integers(0, 255, (size, size, 3) if rgb else (size, size)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _volume(path: Path, shape=(8, 16, 16), nan: bool = False) -> Path:
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    if nan:
        arr[2, 3, 4] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def _cfg(path: Path, data: Path, extra: str = "") -> Path:
    path.write_text(
        f"name: t\ndata: {{path: {data}, options: {{mask_threshold: 127}}, preprocess: {{target_size: [16, 16]}}}}\n"
        "model: {name: unet, channels: [4, 8]}\ntrain: {epochs: 1, batch_size: 2, amp: 'off'}\n"
        "cv: {val_fraction: 0.0}\n" + extra,
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------------------------- data loss
DATA_LOSS = "data loss"


def test_predict_never_replaces_a_file_in_out(model2d, tmp_path):
    img = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    keep = _png(out / "x.png")
    before = keep.read_bytes()
    res = agseg_cli("predict", img, "--run", model2d, "--out", out, category=DATA_LOSS,
                    case="predict onto an existing file of the same name")  # fmt: skip
    one_error_line(res, "x.png", "exists", "--overwrite")
    assert keep.read_bytes() == before
    res = runner.invoke(app, ["predict", str(img), "--run", str(model2d), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert keep.read_bytes() != before  # replaced only when asked


def test_predict_refuses_the_datasets_mask_folder(model2d, cxr, tmp_path):
    before = _snapshot(cxr / "masks")
    res = agseg_cli("predict", cxr / "cxr", "--run", model2d, "--out", cxr / "masks", "--overwrite",
                    category=DATA_LOSS, case="predict into the dataset's mask folder (--overwrite too)")  # fmt: skip
    one_error_line(res, "masks", "mask folder")
    assert _snapshot(cxr / "masks") == before


def test_a_dicom_series_output_leaves_an_existing_series_alone(model3d, tmp_path):
    vol = _volume(tmp_path / "v.nii.gz")
    series = tmp_path / "in" / "series"
    from agseg.data.io import read_image, write_image

    arr, geom = read_image(vol)
    write_image(series, arr[0].round().astype(np.int16), geom.replace(format="dicom"))
    out = tmp_path / "out"
    existing = out / "series"
    write_image(existing, arr[0].round().astype(np.int16), geom.replace(format="dicom"))
    (existing / "notes.txt").write_text("mine", encoding="utf-8")
    before = _snapshot(existing)
    res = agseg_cli("predict", series, "--run", model3d, "--out", out, category=DATA_LOSS,
                    case="DICOM series predicted into a folder holding a series")  # fmt: skip
    one_error_line(res, "series", "exists")
    assert _snapshot(existing) == before, "files of the existing series were touched"
    res = runner.invoke(app, ["predict", str(series), "--run", str(model3d), "--out", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "new" / "series").glob("*.dcm"))) == 8


def test_two_inputs_with_one_name_are_refused_before_any_work(model2d, tmp_path):
    a, b = _png(tmp_path / "a" / "x.png"), _png(tmp_path / "b" / "x.png")
    res = agseg_cli("predict", a, b, "--run", model2d, "--out", tmp_path / "out", category=DATA_LOSS,
                    case="two inputs with the same file name")  # fmt: skip
    one_error_line(res, "x.png", "same output")
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_finished_run_without_resume(cxr, tmp_path):
    cfg = _cfg(tmp_path / "e.yaml", cxr)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(run)]).exit_code == 0
    before = _snapshot(run)
    res = agseg_cli("train", cfg, "--out", run, category=DATA_LOSS, case="train into a finished run without --resume")
    one_error_line(res, "holds a run", "--resume", "--overwrite")
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("change", "named"), [("model.channels=[8,16]", "model.channels"), ("train.lr=0.01", "train.lr")]
)
def test_resume_refuses_changed_settings_and_keeps_the_record(cxr, tmp_path, change, named):
    cfg = _cfg(tmp_path / "e.yaml", cxr)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(run)]).exit_code == 0
    before = (run / "config.yaml").read_text(encoding="utf-8")
    res = agseg_cli("train", cfg, "--out", run, "--resume", "--set", change, category=DATA_LOSS,
                    case=f"--resume with a changed setting ({named})")  # fmt: skip
    one_error_line(res, named, "other settings", code=2)
    assert (run / "config.yaml").read_text(encoding="utf-8") == before
    res = runner.invoke(app, ["train", str(cfg), "--out", str(run), "--resume", "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output  # more epochs is a legitimate resume
    assert (run / "log.csv").read_text(encoding="utf-8").count("\n") == 3


def test_cv_refuses_a_folder_of_another_cv(cxr, tmp_path):
    cfg = _cfg(tmp_path / "e.yaml", cxr)
    out = tmp_path / "cv"
    assert runner.invoke(app, ["cv", str(cfg), "--out", str(out), "--folds", "2", "--fold", "0"]).exit_code == 0
    res = agseg_cli("cv", cfg, "--out", out, "--folds", "2", "--set", "train.lr=0.1", category=DATA_LOSS,
                    case="cv into a folder of a CV with other settings")  # fmt: skip
    one_error_line(res, "train.lr", code=2)


# ------------------------------------------------------------------------------------------------ silent garbage
GARBAGE = "silent garbage"


def _masks(root: Path, values: list[np.ndarray]) -> Path:
    for i, m in enumerate(values):
        _png(root / "images" / f"c{i}.png", size=m.shape[0])
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"c{i}.png")
    return root


def test_a_stray_label_value_is_a_warned_class_not_a_silent_eight_class_net(tmp_path):
    ms = []
    for i in range(6):
        m = np.zeros((16, 16), np.uint8)
        m[4:10, 4:10] = 1
        if i == 2:
            m[0, 0] = 7
        ms.append(m)
    data = _masks(tmp_path / "d", ms)
    res = agseg_cli("data", "inspect", data, category=GARBAGE, case="a stray label value 7 in one mask")
    assert res.exit_code == 0 and "gaps" in res.output and "stray" in res.output, res.output
    from agseg.config import from_dict
    from agseg.experiments.run import experiment_label_set, load_index

    cfg = from_dict({"data": {"path": str(data), "options": {"mask_threshold": None}}, "model": {"name": "unet"}})
    ls, _ = experiment_label_set(cfg, list(load_index(cfg)), None)
    assert ls.values == (0, 1, 7) and ls.out_channels == 3  # not 8 outputs


def test_masks_stored_as_0_128_make_a_binary_net(tmp_path):
    data = _masks(tmp_path / "d", [np.pad(np.full((6, 6), 128), 5) for _ in range(4)])
    from agseg.config import from_dict
    from agseg.experiments.run import experiment_label_set, load_index

    cfg = from_dict({"data": {"path": str(data)}, "model": {"name": "unet"}})
    ls, _ = experiment_label_set(cfg, list(load_index(cfg)), None)
    assert ls.values == (0, 128) and ls.binary and ls.out_channels == 1  # not a 129-class net


def test_a_class_absent_from_both_masks_does_not_inflate_the_mean():
    from agseg.experiments.evaluate import case_metrics

    ref = np.zeros((8, 8), np.uint8)
    ref[2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    pred[6:8, 6:8] = 1  # class 1 missed entirely; class 7 absent from both
    row = case_metrics(pred, ref, None, ["dice"], [1, 7])
    assert row["dice_1"] == 0.0 and row["dice_7"] == 1.0 and row["dice"] == 0.0  # was 0.5


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".nii.gz"])
def test_predict_refuses_a_volume_with_a_nan_voxel(model3d, tmp_path, ext):
    vol = _volume(tmp_path / f"v{ext}", nan=True)
    res = agseg_cli("predict", vol, "--run", model3d, "--out", tmp_path / "out", category=GARBAGE,
                    case=f"a {ext} volume with one NaN voxel")  # fmt: skip
    one_error_line(res, vol.name, "nan")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_evaluate_counts_references_without_a_prediction(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:6, 2:6] = 255
    for name in ("a", "b", "c"):
        (tmp_path / "ref").mkdir(exist_ok=True)
        Image.fromarray(m).save(tmp_path / "ref" / f"{name}.png")
    (tmp_path / "pred").mkdir()
    Image.fromarray(m).save(tmp_path / "pred" / "a.png")
    res = agseg_cli("evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "ev",
                    category=GARBAGE, case="evaluate with references that have no prediction")  # fmt: skip
    one_error_line(res, "2 reference(s) have no prediction", code=3)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["dice"]["n"] == 3 and summary["metrics"]["dice"]["n_missing"] == 2
    before = (tmp_path / "ev" / "summary.json").read_bytes()
    res = agseg_cli("evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "ev",
                    category=DATA_LOSS, case="evaluate into a folder holding an evaluation")  # fmt: skip
    one_error_line(res, "metrics.csv", "exists", "--overwrite")
    assert (tmp_path / "ev" / "summary.json").read_bytes() == before


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("train.epochs", "0", "epochs"), ("cv.val_fraction", "1.5", "val_fraction"), ("train.lr", "1e12", "lr")],
)
def test_values_out_of_range_are_refused(cxr, tmp_path, key, value, named):
    cfg = _cfg(tmp_path / "e.yaml", cxr)
    res = agseg_cli("train", cfg, "--out", tmp_path / "run", "--set", f"{key}={value}", category=GARBAGE,
                    case=f"{key}: {value}")  # fmt: skip
    one_error_line(res, named, code=2)
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_with_one_line(cxr, tmp_path, monkeypatch):
    import agseg.experiments.run as run_mod

    real = run_mod.create_loss

    def nan_loss(name, **kw):
        loss = real(name, **kw)
        return lambda out, y: loss(out, y) * float("nan")

    monkeypatch.setattr(run_mod, "create_loss", nan_loss)
    res = agseg_cli("train", _cfg(tmp_path / "e.yaml", cxr), "--out", tmp_path / "run", category=GARBAGE,
                    case="a loss that becomes NaN")  # fmt: skip
    one_error_line(res, "non-finite training loss", "train.lr", "cases")


def test_predict_a_folder_of_pngs_and_a_folder_of_volumes(model2d, model3d, tmp_path):
    pngs = [_png(tmp_path / "pngs" / f"p{i}.png") for i in range(3)]
    res = agseg_cli("predict", tmp_path / "pngs", "--run", model2d, "--out", tmp_path / "o1", category=GARBAGE,
                    case="predict a folder of PNG images")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == sorted(p.name for p in pngs)
    for i in range(2):
        _volume(tmp_path / "vols" / f"v{i}.nii.gz")
    res = runner.invoke(app, ["predict", str(tmp_path / "vols"), "--run", str(model3d), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["v0.nii.gz", "v1.nii.gz"]


def test_predict_multi_channel_cases(tmp_path):
    model = _bundle(tmp_path / "model", spatial_dims=3, in_channels=2)
    for case in ("a", "b"):
        for k in range(2):
            _volume(tmp_path / "nnunet" / f"{case}_{k:04d}.nii.gz")
    res = agseg_cli("predict", tmp_path / "nnunet", "--run", model, "--out", tmp_path / "o1", category=GARBAGE,
                    case="predict nnU-Net CASE_0000/_0001 channel files")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    res = runner.invoke(app, ["predict", str(tmp_path / "nnunet" / "a_0000.nii.gz"), "--run", str(model), "--out",
                              str(tmp_path / "o2")])  # fmt: skip
    assert res.exit_code == 0 and [p.name for p in (tmp_path / "o2").iterdir()] == ["a.nii.gz"], res.output
    # a case folder with the channel files the model was trained on (BRATS: one folder per case)
    info = json.loads((model / "model.json").read_text(encoding="utf-8"))
    info["info"]["channel_patterns"] = ["Flair*", "T1c*"]
    (model / "model.json").write_text(json.dumps(info), encoding="utf-8")
    for case in ("p1", "p2"):
        _volume(tmp_path / "brats" / case / "Flair_x.nii.gz")
        _volume(tmp_path / "brats" / case / "T1c_x.nii.gz")
        _volume(tmp_path / "brats" / case / "OTMultiClass.nii.gz")
    res = runner.invoke(app, ["predict", str(tmp_path / "brats"), "--run", str(model), "--out", str(tmp_path / "o3")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == ["p1.nii.gz", "p2.nii.gz"]
    _volume(tmp_path / "lone" / "x_0000.nii.gz")
    res = agseg_cli("predict", tmp_path / "lone", "--run", model, "--out", tmp_path / "o4", category=GARBAGE,
                    case="a multi-channel case missing a channel file")  # fmt: skip
    one_error_line(res, "x_0000.nii.gz", "x_0001.nii.gz")


# ------------------------------------------------------------------------------------------------ bare tracebacks
TRACE = "one line, not a traceback"


CONFIG_MISTAKES = [
    ("train: {epochs: ten}", ["train.epochs", "integer"]),
    ("train: {epochs: 1.7}", ["train.epochs", "integer"]),
    ("seed: abc", ["seed", "integer"]),
    ("model: unet", ["model", "mapping"]),
    ("model: {name: vnet}", ["model.name", "registered models"]),
    ("model: {name: attention_unet, gatng: multi}", ["gatng", "valid keys"]),
    ("model: {name: attention_unet, gating: tripple}", ["gating", "single"]),
    ("data: {preprocess: {target_sise: [16, 16]}}", ["data.preprocess", "target_size"]),
    ("data: {augment: {rotate: 5}}", ["data.augment", "rotate_deg"]),
    ("train: {device: gpu}", ["train.device", "cuda"]),
    ("train: {loss: dicey}", ["train.loss", "dice_ce"]),
    ("eval: {metrics: [dise]}", ["eval.metrics", "dice"]),
]


@pytest.mark.parametrize(("text", "named"), CONFIG_MISTAKES, ids=[t for t, _ in CONFIG_MISTAKES])
def test_config_mistakes_are_one_line(cxr, tmp_path, text, named):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(f"data: {{path: {cxr}}}\n{text}\n" if not text.startswith("data") else
                   text.replace("data: {", f"data: {{path: {cxr}, ") + "\n", encoding="utf-8")  # fmt: skip
    res = agseg_cli("train", cfg, "--out", tmp_path / "run", category=TRACE, case=f"config `{text}`")
    one_error_line(res, *named, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "list"), ("42\n", "int")])
def test_a_config_that_is_not_a_mapping(tmp_path, text, what):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(text, encoding="utf-8")
    res = agseg_cli("train", cfg, category=TRACE, case=f"a YAML {what} as the whole config")
    one_error_line(res, "e.yaml", "mapping", code=2)


def test_a_bad_set_value(cxr, tmp_path):
    res = agseg_cli("train", _cfg(tmp_path / "e.yaml", cxr), "--set", "train.batch_size=[1,2]", category=TRACE,
                    case="--set train.batch_size=[1,2]")  # fmt: skip
    one_error_line(res, "train.batch_size", code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_predict_on_cuda_without_a_gpu(model2d, tmp_path):
    img = _png(tmp_path / "x.png")
    res = agseg_cli("predict", img, "--run", model2d, "--out", tmp_path / "o", "--device", "cuda", category=TRACE,
                    case="predict --device cuda without a GPU")  # fmt: skip
    one_error_line(res, "cuda", "no CUDA device")


@pytest.mark.parametrize(
    ("edit", "case"),
    [
        (lambda d: d.pop("model_kwargs"), "model.json without model_kwargs"),
        (lambda d: d.update(model_name="nope"), "model.json naming an unknown model"),
        (lambda d: d["model_kwargs"].update(channels="abc"), "model.json with bad model arguments"),
        (lambda d: d.update(labels=["x"]), "model.json with a broken label set"),
    ],
)
def test_a_tampered_model_json(tmp_path, edit, case):
    model = _bundle(tmp_path / "model")
    d = json.loads((model / "model.json").read_text(encoding="utf-8"))
    edit(d)
    (model / "model.json").write_text(json.dumps(d), encoding="utf-8")
    res = agseg_cli("predict", _png(tmp_path / "x.png"), "--run", model, "--out", tmp_path / "o", category=TRACE,
                    case=case)  # fmt: skip
    one_error_line(res, "model.json")


def test_an_rgb_image_for_a_grey_model(model2d, tmp_path):
    img = _png(tmp_path / "rgb.png", rgb=True)
    res = agseg_cli("predict", img, "--run", model2d, "--out", tmp_path / "o", category=TRACE,
                    case="an RGB image for a grey-level model")  # fmt: skip
    one_error_line(res, "rgb.png", "1 channel", "3")


def test_a_2d_image_for_a_3d_model(model3d, tmp_path):
    img = _png(tmp_path / "flat.png")
    res = agseg_cli("predict", img, "--run", model3d, "--out", tmp_path / "o", category=TRACE,
                    case="a 2D image for a 3D model")  # fmt: skip
    one_error_line(res, "flat.png", "2D image", "3D model")


def test_a_case_list_with_paths_relative_to_the_wrong_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _png(data / "img" / "a.png")
    _png(data / "img" / "b.png")
    (data / "cases.csv").write_text(
        "image\ndata/img/a.png\ndata/img/b.png\n", encoding="utf-8"
    )  # relative to the cwd, not the list
    monkeypatch.chdir(tmp_path)
    res = agseg_cli("data", "inspect", data / "cases.csv", category=TRACE,
                    case="a case list whose paths are relative to the current folder")  # fmt: skip
    assert res.exit_code != 0 or "relative" in res.output, res.output
    assert "Traceback" not in res.output and "relative to its folder" in " ".join(res.output.split()), res.output


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(model2d, tmp_path, monkeypatch):
    import agseg.inference.predictor as pred_mod

    def boom(*a, **k):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(pred_mod.Predictor, "predict_paths", boom)
    img = _png(tmp_path / "x.png")
    res = agseg_cli("predict", img, "--run", model2d, "--out", tmp_path / "o", category=TRACE,
                    case="an unexpected internal error")  # fmt: skip
    one_error_line(res, "something nobody foresaw", "--debug")
    res = runner.invoke(app, ["--debug", "predict", str(img), "--run", str(model2d), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, RuntimeError)  # the traceback, on request


def _vol_dataset(root: Path, shapes, nan_case: int | None = None, ext: str = ".mha") -> Path:
    for i, shape in enumerate(shapes):
        _volume(root / "images" / f"c{i}{ext}", shape=shape, nan=i == nan_case)
        lab = np.zeros(shape, np.uint8)
        lab[1:3, 2:6, 2:6] = 1
        (root / "labels").mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(lab)
        img.SetSpacing((0.8, 0.8, 2.0))
        sitk.WriteImage(img, str(root / "labels" / f"c{i}{ext}"))
    return root


def _vol_cfg(path: Path, data: Path, extra: str = "") -> Path:
    text = f"data: {{path: {data}{extra}}}\nmodel: {{name: unet, channels: [4, 8]}}\n"
    path.write_text(text + "train: {epochs: 1, batch_size: 2, amp: 'off'}\ncv: {val_fraction: 0.0}\n", encoding="utf-8")
    return path


def test_a_training_volume_with_a_nan_voxel_is_named_before_any_work(tmp_path):
    data = _vol_dataset(tmp_path / "d", [(8, 16, 16)] * 4, nan_case=2)
    res = agseg_cli("train", _vol_cfg(tmp_path / "e.yaml", data), "--out", tmp_path / "run", category=GARBAGE,
                    case="a training volume (.mha) with one NaN voxel")  # fmt: skip
    one_error_line(res, "c2.mha", "nan")
    assert not (tmp_path / "run").exists()


def test_cases_of_different_sizes_in_batches_are_named_before_any_work(tmp_path):
    data = _vol_dataset(tmp_path / "d", [(8, 16, 16), (8, 16, 16), (10, 20, 16), (8, 16, 16)])
    res = agseg_cli("train", _vol_cfg(tmp_path / "e.yaml", data), "--out", tmp_path / "run", category=GARBAGE,
                    case="cases of different sizes, batches of 2, no resizing")  # fmt: skip
    one_error_line(res, "different sizes", "crop_or_pad", "batch_size")
    assert not (tmp_path / "run").exists()
    ok = _vol_cfg(tmp_path / "ok.yaml", data, ", preprocess: {crop_or_pad: [8, 16, 16]}")
    assert runner.invoke(app, ["train", str(ok), "--out", str(tmp_path / "run2")]).exit_code == 0


def test_an_rgb_image_among_grey_ones_is_named_before_any_work(tmp_path):
    root = tmp_path / "d"
    for i in range(4):
        _png(root / "images" / f"c{i}.png", size=16, rgb=i == 1)
        m = np.zeros((16, 16), np.uint8)
        m[4:8, 4:8] = 255
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(root / "masks" / f"c{i}.png")
    cfg = tmp_path / "e.yaml"
    text = f"data: {{path: {root}, preprocess: {{target_size: [16, 16]}}}}\nmodel: {{name: unet, channels: [4, 8]}}\n"
    cfg.write_text(text + "train: {epochs: 1, batch_size: 2, amp: 'off'}\ncv: {val_fraction: 0.0}\n", encoding="utf-8")
    res = agseg_cli("train", cfg, "--out", tmp_path / "run", category=GARBAGE, case="an RGB image among grey ones")
    one_error_line(res, "c1.png", "3 channel(s)", "1")
    assert not (tmp_path / "run").exists()


def test_evaluate_reads_anti_aliased_references_as_one_class(tmp_path):
    yy, xx = np.mgrid[:40, :40]
    d = np.sqrt((yy - 20) ** 2 + (xx - 20) ** 2)
    ref = (np.clip(9.5 - d, 0, 1) * 255).round().astype(np.uint8)  # grey edges, as the cxr_lungs masks
    for name in ("a", "b"):
        (tmp_path / "ref").mkdir(exist_ok=True)
        (tmp_path / "pred").mkdir(exist_ok=True)
        Image.fromarray(ref).save(tmp_path / "ref" / f"{name}.png")
        Image.fromarray(np.where(ref > 127, 255, 0).astype(np.uint8)).save(tmp_path / "pred" / f"{name}.png")
    res = agseg_cli("evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "ev",
                    "-m", "dice", category=GARBAGE, case="evaluate against anti-aliased 8-bit references")  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["metrics"]) == {"dice"} and summary["metrics"]["dice"]["mean"] == 1.0  # was dice_36..dice_255


def test_compare_keeps_an_earlier_comparison(tmp_path):
    for name in ("a", "b"):
        rows = "case_id,dice\n" + "".join(f"c{i},{0.8 + 0.01 * i + (0.02 if name == 'b' else 0)}\n" for i in range(6))
        (tmp_path / f"{name}.csv").write_text(rows, encoding="utf-8")
    first = runner.invoke(
        app, ["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "cmp"), "--no-plots"]
    )
    assert first.exit_code == 0, first.output
    before = (tmp_path / "cmp" / "compare.md").read_bytes()
    res = agseg_cli("compare", tmp_path / "a.csv", tmp_path / "b.csv", "--out", tmp_path / "cmp",
                    category=DATA_LOSS, case="compare into a folder holding a comparison")  # fmt: skip
    one_error_line(res, "compare.md", "exists", "--overwrite")
    assert (tmp_path / "cmp" / "compare.md").read_bytes() == before


def test_a_mistyped_option_gets_the_usage_message(tmp_path):
    res = agseg_cli("predict", tmp_path / "x.png", "--model", "cxr-lungs", "--outt", tmp_path / "o", category=TRACE,
                    case="a mistyped option (--outt)")  # fmt: skip
    assert res.exit_code == 2 and "--outt" in res.output and "Traceback" not in res.output
    assert "--debug" not in res.output  # was exit 1, "NoSuchOption; run with --debug for the traceback"
