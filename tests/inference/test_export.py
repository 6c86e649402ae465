"""ONNX export (agseg export) and prediction through onnxruntime (--engine onnxruntime) against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the ONNX engine needs onnxruntime (pip install 'agseg[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'agseg[onnx]')")

from agseg.cli import app
from agseg.data.io import Geometry, write_image
from agseg.inference.export import export_onnx
from agseg.inference.predictor import Predictor
from tests.inference.bundles import bundle_dir

runner = CliRunner()


def _bundle_dir(tmp_path, name, kwargs, seed=0, **extra):
    return bundle_dir(tmp_path, name, kwargs, seed, **extra)[0]


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("attention_unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16]}, (37, 45)),
        ("unet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8]}, (11, 13, 9)),
    ],
)
def test_onnxruntime_predicts_what_pytorch_predicts(tmp_path, name, kwargs, shape):
    run = _bundle_dir(tmp_path, name, kwargs)
    out = export_onnx(run, tmp_path / "exported")
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert meta["info"]["export"]["format"] == "onnx" and max(meta["info"]["export"]["max_abs_diff"].values()) <= 1e-4
    image = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    geom = Geometry.identity(shape)
    torch_pred = Predictor.from_path(run, amp="off", device="cpu")
    ort_pred = Predictor.from_path(out, engine="onnxruntime")
    p_torch = torch_pred.probabilities(image, geom)[0]
    p_ort = ort_pred.probabilities(image, geom)[0]
    np.testing.assert_allclose(p_ort, p_torch, atol=1e-4)  # fp32, an odd size the export never saw
    # the export folder is a PyTorch bundle as well
    np.testing.assert_allclose(Predictor.from_path(out, amp="off").probabilities(image, geom)[0], p_torch, atol=1e-6)


def test_a_pruned_anunet_exports_its_level(tmp_path):
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16, 32]}
    run = _bundle_dir(tmp_path, "anunet", kwargs)
    out = export_onnx(run, tmp_path / "l2", prune=2)
    image = np.random.default_rng(2).normal(size=(1, 40, 24)).astype(np.float32)
    geom = Geometry.identity((40, 24))
    want = Predictor.from_path(run, amp="off", prune=2).probabilities(image, geom)[0]
    ort = Predictor.from_path(out, engine="onnxruntime")
    np.testing.assert_allclose(ort.probabilities(image, geom)[0], want, atol=1e-4)
    full = Predictor.from_path(run, amp="off").probabilities(image, geom)[0]
    assert np.abs(full - want).max() > 1e-3  # L2 is not the full net
    for other in (3, 0):  # another level, or the full net (0), needs another export
        with pytest.raises(ValueError, match="pruning level 2"):
            Predictor.from_path(out, engine="onnxruntime", prune=other)


def _flat(text: str) -> str:
    """CLI output with whitespace folded: Rich wraps long paths at the console's width."""
    return " ".join(text.split())


def test_export_and_predict_from_the_command_line(tmp_path):
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]}
    run = _bundle_dir(tmp_path, "unet", kwargs)
    out = tmp_path / "exp"
    res = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "max difference" in _flat(res.output)
    again = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in _flat(again.output)  # nothing replaced without asking
    inside = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(run / "model")])
    assert inside.exit_code != 0 and "new folder" in _flat(inside.output)
    other_run = _bundle_dir(tmp_path / "o", "unet", kwargs)  # a run folder (its model in model/) is not empty
    into_run = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(other_run)])
    assert into_run.exit_code != 0 and "not empty" in _flat(into_run.output)
    assert not (other_run / "model.json").exists()
    img = tmp_path / "in" / "case.png"
    img.parent.mkdir()
    write_image(
        img,
        (np.random.default_rng(3).random((1, 30, 34)) * 255).astype(np.uint8),
        Geometry.identity((30, 34), format="png"),
    )
    for engine in ("torch", "onnxruntime"):
        res = runner.invoke(app, ["predict", str(img), "--run", str(out), "--engine", engine, "--amp", "off",
                                  "--out", str(tmp_path / engine)])  # fmt: skip
        assert res.exit_code == 0, res.output
    from agseg.data.io import read_mask

    a, _ = read_mask(tmp_path / "torch" / "case.png")
    b, _ = read_mask(tmp_path / "onnxruntime" / "case.png")
    assert (a != b).mean() < 1e-3  # the same mask (a pixel at 0.5 may fall either way)
    res = runner.invoke(app, ["predict", str(img), "--run", str(run), "--engine", "onnxruntime",
                              "--out", str(tmp_path / "x")])  # fmt: skip
    assert res.exit_code != 0 and "agseg export" in res.output


def test_a_cv_folder_names_its_folds_instead_of_not_a_run(tmp_path):
    from agseg.inference.bundle import load_bundle

    for f in (0, 1):
        (tmp_path / "cv" / f"repeat0_fold{f}" / "model").mkdir(parents=True)
        (tmp_path / "cv" / f"repeat0_fold{f}" / "model" / "model.json").write_text("{}", encoding="utf-8")
    # was: "no model.json in cv or cv/model: not an agseg run or model folder" for an agseg CV
    with pytest.raises(
        FileNotFoundError, match=r"cross-validation folder.*repeat0_fold0; 2 with a model.*predict --run"
    ):
        load_bundle(tmp_path / "cv")


def test_an_export_prints_agsegs_lines_only(tmp_path):
    import subprocess
    import sys

    run = _bundle_dir(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    res = subprocess.run([sys.executable, "-m", "agseg", "export", str(run), "--format", "onnx", "--out",
                          str(tmp_path / "exp")], capture_output=True, encoding="utf-8", errors="replace")  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = _flat(res.stdout + res.stderr)
    # was about 45 lines: "torchvision is not installed. Skipping torchvision::nms", "[torch.onnx] ...", every
    # onnx_ir / onnxscript pass at INFO
    for chatter in ("torchvision", "[torch.onnx]", "onnx_ir", "onnxscript"):
        assert chatter not in text, text
    assert "wrote" in text and "max difference" in text


def test_onnx_for_a_shipped_model_says_how_to_export_it_by_name():
    from agseg.inference.export import find_onnx
    from agseg.inference.pretrained import pretrained_path

    with pytest.raises(FileNotFoundError, match=r"agseg export --model cxr-lungs --format onnx"):
        find_onnx(pretrained_path("cxr-lungs"))
