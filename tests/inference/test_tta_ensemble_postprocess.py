"""Test-time mirroring, fold ensembles and CV-chosen post-processing (nnU-Net's defaults), against hand-computed
references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import agseg
from agseg.cli import app
from agseg.config import from_dict
from agseg.data import write_dataset
from agseg.data.io import Geometry, read_mask
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.experiments.evaluate import evaluate_run
from agseg.experiments.run import run_cv
from agseg.inference.bundle import ModelBundle
from agseg.inference.postprocess import apply_postprocessing, choose_postprocessing, keep_largest_components
from agseg.inference.predictor import EnsemblePredictor, Predictor
from agseg.metrics import read_csv
from agseg.tasks import logits_to_probs

runner = CliRunner()


# ------------------------------------------------------------------------------------------- post-processing
def _blobs() -> tuple[np.ndarray, np.ndarray]:
    """A reference with two 'lungs' and a prediction with the two plus a detached speck (and a diagonal touch)."""
    ref = np.zeros((20, 20), np.uint8)
    ref[2:10, 2:8] = 1
    ref[2:10, 12:18] = 1
    pred = ref.copy()
    pred[15:17, 9:11] = 1  # a speck
    return pred, ref


def test_keep_largest_components_by_hand():
    pred, _ = _blobs()
    np.testing.assert_array_equal(keep_largest_components(pred, 2), _blobs()[1] > 0)
    one = keep_largest_components(pred, 1)
    assert one.sum() == 48 and one[2:10, 2:8].all()  # the first of two equal lungs
    diag = np.zeros((4, 4), bool)
    diag[0, 0] = diag[1, 1] = True  # touching corners: one component with full connectivity
    assert keep_largest_components(diag, 1).sum() == 2
    with pytest.raises(ValueError, match="k must be"):
        keep_largest_components(pred, 0)


def test_apply_postprocessing_only_touches_the_listed_class():
    pred, _ = _blobs()
    multi = pred.copy()
    multi[0, 0] = 2
    multi[19, 19] = 2
    out = apply_postprocessing(multi, {"keep_largest": {"1": 2}})
    assert out[15, 9] == 0 and out[0, 0] == 2 and out[19, 19] == 2
    assert apply_postprocessing(multi, None) is multi


def test_choose_postprocessing_keeps_two_lungs_and_leaves_what_it_would_hurt():
    pred, ref = _blobs()
    d = choose_postprocessing([(pred, ref)] * 3, [1])
    assert d["keep_largest"] == {"1": 2}
    c = d["classes"]["1"]
    assert c["k2"] == pytest.approx(1.0) and c["none"] < 1.0 and c["k1"] < c["none"]
    # a class whose second component is real: keeping one would hurt, so nothing is chosen
    d = choose_postprocessing([(ref, ref)], [1])
    assert d["keep_largest"] == {} and d["classes"]["1"]["chosen"] is None


# ------------------------------------------------------------------------------------------- mirroring
class LeftHeavy(agseg.nets.base.SegmentationNet):
    """Logits that depend on position (a ramp along x) plus the image: mirroring changes them."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = 2, 1, 1
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        ramp = torch.linspace(-2, 2, x.shape[-1]).view(1, 1, 1, -1)
        return self.w * (x + ramp)


def _predictor(net, **kw) -> Predictor:
    bundle = ModelBundle("unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1},
                         Preprocessor(PreprocessConfig(intensity="none")).to_dict())  # fmt: skip
    return Predictor(net, bundle, amp="off", **kw)


def test_mirroring_averages_the_flipped_predictions():
    x = np.random.default_rng(0).normal(size=(1, 6, 8)).astype(np.float32)
    g = Geometry.identity((6, 8), format="png")
    net = LeftHeavy().eval()
    plain = _predictor(net, mirror_axes=()).probabilities(x, g)[0]
    tta = _predictor(net, mirror_axes=(1,)).probabilities(x, g)[0]
    t = torch.from_numpy(x)[None]
    by_hand = (logits_to_probs(net(t)) + torch.flip(logits_to_probs(net(torch.flip(t, [3]))), [3])) / 2
    np.testing.assert_allclose(tta, by_hand[0].detach().numpy(), atol=1e-6)
    assert not np.allclose(tta, plain)  # the ramp makes them differ: the test can fail
    both = _predictor(net, mirror_axes=(0, 1)).probabilities(x, g)[0]
    assert both.shape == plain.shape
    with pytest.raises(ValueError, match="mirror axes"):
        _predictor(net, mirror_axes=(2,)).probabilities(x, g)


def test_mirroring_a_flip_equivariant_net_changes_nothing():
    net = torch.nn.Conv2d(1, 1, 1).eval()  # pointwise: flip-equivariant
    net.spatial_dims = 2
    x = np.random.default_rng(1).normal(size=(1, 5, 7)).astype(np.float32)
    g = Geometry.identity((5, 7), format="png")
    np.testing.assert_allclose(
        _predictor(net, mirror_axes=(0, 1)).probabilities(x, g)[0], _predictor(net).probabilities(x, g)[0], atol=1e-6
    )


# ------------------------------------------------------------------------------------------- ensembles and CV
@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    data = write_dataset(tmp_path_factory.mktemp("d") / "cxr", "cxr", n=9, size=48, seed=4)
    cfg = from_dict({
        "name": "tiny", "data": {"path": str(data), "options": {"mask_threshold": 127},
                                 "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {"name": "unet", "channels": [4, 8, 16]},
        "train": {"epochs": 2, "batch_size": 2, "amp": "off"}, "cv": {"folds": 3, "val_fraction": 0.0},
        "eval": {"metrics": ["dice", "hd95"], "mirror_axes": [1]},
    })  # fmt: skip
    out = tmp_path_factory.mktemp("cv") / "cv"
    run_cv(cfg, out)
    return out, data


def test_a_finished_cv_chooses_postprocessing_and_estimates_it_cross_validated(cv):
    out, _ = cv
    d = json.loads((out / "postprocessing.json").read_text(encoding="utf-8"))
    assert set(d["classes"]) == {"1"} and "cv_estimate" in d and d["n_cases"] == 9
    assert set(d["cv_estimate"]["decision_per_fold"]) == {"repeat0_fold0", "repeat0_fold1", "repeat0_fold2"}
    rows = read_csv(out / "metrics_postprocessed.csv", text_columns=("model", "case_id"))
    before = {r["case_id"]: r for r in read_csv(out / "metrics.csv", text_columns=("model", "case_id"))}
    assert {r["case_id"] for r in rows} == set(before)
    for r in rows:  # a fold whose decision is "none" keeps its scores exactly
        if not d["cv_estimate"]["decision_per_fold"][f"repeat0_fold{int(r['fold'])}"]:
            assert r["dice"] == pytest.approx(before[r["case_id"]]["dice"])
    bundle = json.loads((out / "repeat0_fold0" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["mirror_axes"] == [1]  # eval.mirror_axes travels with the model


def test_predict_with_a_cv_folder_ensembles_its_folds(cv, tmp_path):
    out, data = cv
    ens = Predictor.from_path(out, amp="off")
    assert isinstance(ens, EnsemblePredictor) and len(ens.members) == 3
    case = agseg.data.load_dataset(data, mask_threshold=127)[0].load()
    mean = sum(m.probabilities(case.image, case.geometry)[0] for m in ens.members) / 3
    np.testing.assert_allclose(ens.probabilities(case.image, case.geometry)[0], mean, atol=1e-6)
    img = sorted((data / "cxr").iterdir())[0]
    res = runner.invoke(app, ["predict", str(img), "--run", str(out), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    two = runner.invoke(app, ["predict", str(img), "--run", str(out / "repeat0_fold0"), "--run",
                              str(out / "repeat0_fold1"), "--out", str(tmp_path / "o2")])  # fmt: skip
    assert two.exit_code == 0, two.output
    pair = EnsemblePredictor.from_paths([out / "repeat0_fold0", out / "repeat0_fold1"], amp="off")
    expect = pair.predict_array(case.image, case.geometry).label
    assert set(np.unique(read_mask(tmp_path / "o2" / img.name)[0])) <= {0, 255}
    assert len(pair.members) == 2 and expect.shape == case.label.shape


def test_repredicting_a_cv_measures_inference_settings_on_the_same_folds(cv):
    out, _ = cv
    saved = {r["case_id"]: r["dice"] for r in evaluate_run(out, metrics=["dice"]).rows}
    same = {r["case_id"]: r["dice"] for r in evaluate_run(out, metrics=["dice"], repredict=True).rows}
    assert same == pytest.approx(saved)  # re-predicting with the folds' own settings reproduces the CV
    plain = {r["case_id"]: r["dice"] for r in evaluate_run(out, metrics=["dice"], repredict=True, mirror_axes=()).rows}
    assert set(plain) == set(saved)


def test_scoring_on_the_working_grid(cv):
    # eval.grid=working (the thesis scores at its working resolution): the prediction on the preprocessed grid
    # against the mask preprocessed alike, distances with that grid's spacing; original: the default, unchanged
    from agseg.experiments.run import evaluate_cases
    from agseg.metrics import evaluate_case

    out, data = cv
    pred = Predictor.from_path(out / "repeat0_fold0" / "model", amp="off")
    refs = agseg.data.load_dataset(data, mask_threshold=127)[:2]
    work_rows = evaluate_cases(pred, refs, ["dice", "hd95"], progress=False, grid="working")
    orig_rows = evaluate_cases(pred, refs, ["dice", "hd95"], progress=False)
    for ref, w, o in zip(refs, work_rows, orig_rows, strict=True):
        case = ref.load()
        res = pred.pre.apply(case.image, case.geometry, case.label)
        probs, geom, _ = pred.probabilities(case.image, case.geometry, grid="working")
        assert probs.shape[1:] == (32, 32) and geom.shape == (32, 32)  # 48x48 images resized to 32x32
        np.testing.assert_allclose(geom.array_spacing, np.asarray(case.geometry.array_spacing) * 48 / 32)
        p, g = probs[0] > 0.5, res.label != 0
        assert w["dice"] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
        want = evaluate_case(p, g, spacing=geom.array_spacing, metrics=["hd95"])["hd95"]
        assert w["hd95"] == pytest.approx(want)
        full = pred.predict_array(case.image, case.geometry).label != 0
        ref_mask = case.label != 0
        assert o["dice"] == pytest.approx(2 * (full & ref_mask).sum() / (full.sum() + ref_mask.sum()))
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["grid"] == "original"
    with pytest.raises(ValueError, match="grid"):
        from_dict({"eval": {"grid": "native"}})


def test_an_ensemble_averages_its_members_on_the_working_grid(cv):
    out, data = cv
    ens = Predictor.from_path(out, amp="off")
    case = agseg.data.load_dataset(data, mask_threshold=127)[0].load()
    got, geom, _ = ens.probabilities(case.image, case.geometry, grid="working")
    want = sum(m.probabilities(case.image, case.geometry, grid="working")[0] for m in ens.members) / 3
    assert got.shape[1:] == (32, 32) and geom.shape == (32, 32)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_working_grid_scoring_saves_original_grid_predictions_from_one_pass(cv, tmp_path):
    from agseg.experiments.run import evaluate_cases

    out, data = cv
    pred = Predictor.from_path(out / "repeat0_fold0" / "model", amp="off")
    refs = agseg.data.load_dataset(data, mask_threshold=127)[:2]
    evaluate_cases(pred, refs, ["dice"], pred_dir=tmp_path, progress=False, grid="working")
    for ref in refs:
        case = ref.load()
        saved, _ = read_mask(next(tmp_path.glob(f"{ref.case_id}.*")))
        np.testing.assert_array_equal(saved != 0, pred.predict_array(case.image, case.geometry).label != 0)


def test_postprocessing_of_binary_png_predictions(tmp_path):
    # binary PNG predictions hold 255 for the class: the choice compared them with the value 1 and saw Dice 0
    from agseg.experiments.postprocessing import cv_postprocessing

    data = write_dataset(tmp_path / "cxr", "cxr", n=6, size=48, seed=2, fmt="png")
    cfg = from_dict({
        "name": "png", "data": {"path": str(data), "options": {"mask_threshold": 127},
                                "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {"name": "unet", "channels": [4, 8]},
        "train": {"epochs": 2, "batch_size": 2, "amp": "off"}, "cv": {"folds": 2, "val_fraction": 0.0},
        "eval": {"metrics": ["dice"], "postprocess": False},
    })  # fmt: skip
    run_cv(cfg, tmp_path / "cv")
    from agseg.data.io import mask_path_for, write_image

    index = {c.case_id: c for c in agseg.data.load_dataset(data, mask_threshold=127)}
    for fold in (tmp_path / "cv").glob("repeat*_fold*"):  # perfect predictions, written as agseg writes masks
        for row in read_csv(fold / "metrics.csv", text_columns=("model", "case_id")):
            ref = index[row["case_id"]]
            case = ref.load()
            out = mask_path_for(ref.image_paths[0], fold / "predictions")
            write_image(out, (case.label != 0).astype(np.uint8), case.geometry, mask=True, binary=True)
    assert read_mask(out)[0].max() == 255  # a binary PNG mask holds 255
    d = cv_postprocessing(tmp_path / "cv", progress=False)
    assert d["classes"]["1"]["none"] == pytest.approx(1.0)  # was 0: 255 compared with the value 1
