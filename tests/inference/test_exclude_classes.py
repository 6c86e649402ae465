"""Seed 001's fine-tuning (AFT): classes excluded from the softmax in the loss stay excluded in prediction."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from agseg.cli import app
from agseg.data import write_dataset
from agseg.data.io import Geometry, read_image
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.inference.bundle import ModelBundle
from agseg.inference.predictor import Predictor
from agseg.losses._common import prepare
from agseg.tasks import logits_to_probs


def test_prediction_softmax_is_the_losss_softmax_over_the_kept_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    probs = logits_to_probs(logits, exclude=[2])
    kept = prepare(logits, target, exclude_classes=[2]).prob  # what the loss trains: channels 0, 1, 3
    torch.testing.assert_close(probs[:, [0, 1, 3]], kept)
    assert torch.all(probs[:, 2] == 0)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 5, 5))
    torch.testing.assert_close(logits_to_probs(logits), torch.softmax(logits, 1))  # nothing excluded by default


class _Favours(torch.nn.Module):
    """A 3-class 'net' whose class 2 logit dominates everywhere; class 1 wins where the image is bright."""

    spatial_dims, in_channels, out_channels = 2, 1, 3

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 4 * x, torch.full_like(x, 10.0)], dim=1)


def test_a_bundle_with_excluded_classes_never_predicts_them():
    pre = Preprocessor(PreprocessConfig(intensity="none")).to_dict()
    img = np.zeros((1, 8, 8), np.float32)
    img[0, 2:5, 2:5] = 1.0
    geom = Geometry(spacing=(1, 1), origin=(0, 0), direction=(1, 0, 0, 1), shape=(8, 8), format="png")
    plain = ModelBundle("unet", {}, pre, labels=[0, 1, 2])
    aft = ModelBundle("unet", {}, pre, labels=[0, 1, 2], exclude_classes=[2])
    assert set(np.unique(Predictor(_Favours(), plain, amp="off").predict_array(img, geom).label)) == {2}
    res = Predictor(_Favours(), aft, amp="off").predict_array(img, geom)
    assert set(np.unique(res.label)) == {0, 1} and res.label[2:5, 2:5].min() == 1
    assert np.all(res.probs[2] == 0)


def test_training_with_excluded_classes_records_them_in_the_bundle(tmp_path):
    vols = write_dataset(tmp_path / "vols", "volumes", n=4, size=(12, 16, 16), seed=2)
    cfg = tmp_path / "aft.yaml"
    cfg.write_text(
        f"name: aft\ndata: {{path: {vols}, preprocess: {{crop_or_pad: [12, 16, 16]}}}}\n"
        "model: {name: unet, channels: [4, 8]}\n"
        "train: {epochs: 1, batch_size: 2, amp: 'off', loss: dice_ce, loss_kwargs: {exclude_classes: [2]}}\n"
        "cv: {val_fraction: 0.0}\n",
        encoding="utf-8",
    )
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    bundle = json.loads((tmp_path / "run" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["labels"] == [0, 1, 2] and bundle["exclude_classes"] == [2]
    img, geom = read_image(sorted((vols / "images").iterdir())[0])
    res = Predictor.from_path(tmp_path / "run", amp="off").predict_array(img, geom)
    assert 2 not in np.unique(res.label) and np.all(res.probs[2] == 0)


def test_excluded_classes_outside_the_outputs_are_refused_when_the_model_loads():
    pre = Preprocessor(PreprocessConfig(intensity="none")).to_dict()
    bad = ModelBundle("unet", {"out_channels": 3}, pre, labels=[0, 1, 2], exclude_classes=[3])
    try:
        Predictor(_Favours(), bad, amp="off")
    except ValueError as err:
        assert "exclude_classes [3]" in str(err) and "0..2" in str(err)
    else:
        raise AssertionError("an out-of-range excluded class was accepted")
