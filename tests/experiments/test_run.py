"""Experiments end to end on tiny synthetic data: CV, paired splits, single folds, predict geometry, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from typer.testing import CliRunner

import agseg
from agseg.cli import app
from agseg.config import ConfigError, TrainConfig, from_dict
from agseg.data import PreprocessConfig, Preprocessor, SegmentationDataset, load_dataset, write_dataset
from agseg.data.augment import AugmentConfig
from agseg.data.errors import DataError
from agseg.data.io import mask_path_for, read_mask
from agseg.experiments.run import run_cv
from agseg.inference.bundle import ModelBundle
from agseg.inference.predictor import Predictor
from agseg.losses import create_loss
from agseg.metrics import read_csv
from agseg.training.callbacks import Callback
from agseg.training.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "cxr", "cxr", n=9, size=64, seed=1)


def tiny_cfg(data, **over):
    raw = {
        "name": over.pop("name", "tiny"),
        "data": {"path": str(data), "options": {"mask_threshold": 127},
                 "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {"name": over.pop("model", "unet"), "channels": [4, 8, 16]},
        "train": {"epochs": 1, "batch_size": 2, "amp": "off"},
        "cv": {"folds": 3, "val_fraction": 0.1},
        "eval": {"metrics": ["dice", "hd95"]},
    }  # fmt: skip
    cfg = from_dict(raw)
    return cfg.replace(**over) if over else cfg


def test_cv_writes_a_complete_record_and_skips_finished_folds(cxr, tmp_path):
    out = tmp_path / "unet"
    res = run_cv(tiny_cfg(cxr), out, folds=[0])
    assert res.folds_done == 1 and res.folds_total == 3
    for f in ("config.yaml", "env.json", "splits.json", "metrics.csv", "summary.json"):
        assert (out / f).is_file(), f
    fold = out / "repeat0_fold0"
    assert (fold / "model" / "model.safetensors").is_file() and (fold / "checkpoints" / "last.pt").is_file()
    info = json.loads((fold / "model" / "model.json").read_text(encoding="utf-8"))["info"]
    assert info["selected_epoch"] == 1 and info["best_epoch"] in (None, 1)
    assert len(list((fold / "predictions").iterdir())) == 3
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["folds_done"] == 1 and summary["metrics"]["dice"]["n"] == 3
    stamp = (fold / "metrics.csv").stat().st_mtime_ns
    res = run_cv(tiny_cfg(cxr), out)  # fold 0 is done: only folds 1 and 2 run
    assert res.folds_done == 3 and len(res.rows) == 9
    assert (fold / "metrics.csv").stat().st_mtime_ns == stamp
    assert sorted(r["case_id"] for r in res.rows) == sorted(load_dataset(cxr).case_ids)


def test_models_share_splits_for_paired_comparison(cxr, tmp_path):
    shared = tmp_path / "splits.json"
    a = run_cv(tiny_cfg(cxr, name="a"), tmp_path / "a", folds=[1], splits=shared)
    b = run_cv(tiny_cfg(cxr, name="b", model="attention_unet"), tmp_path / "b", folds=[1], splits=shared)
    assert a.plan.folds == b.plan.folds
    assert {r["case_id"] for r in a.rows} == {r["case_id"] for r in b.rows}
    with pytest.raises(ValueError, match="splits.json"):
        run_cv(tiny_cfg(cxr, **{"cv.folds": 2}), tmp_path / "c", splits=shared)


def test_config_errors_name_what_is_valid(cxr, tmp_path):
    with pytest.raises(ConfigError, match="model.name.*registered models: .*attention_unet"):
        tiny_cfg(cxr, model="vnet")
    with pytest.raises(ConfigError, match="train.loss.*dice_ce"):
        tiny_cfg(cxr, **{"train.loss": "dicey"})
    with pytest.raises(DataError, match="nowhere.*dataset path not found"):
        run_cv(tiny_cfg(tmp_path / "nowhere"), tmp_path / "z")
    assert not (tmp_path / "z").exists(), "a failed run left a directory"


def _bundle(spatial_dims: int, preprocess: dict) -> tuple[torch.nn.Module, ModelBundle]:
    kwargs = {"spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16]}
    model = agseg.create_model("attention_unet", **kwargs)
    return model, ModelBundle("attention_unet", kwargs, Preprocessor(PreprocessConfig(**preprocess)).to_dict())


def test_predict_png_keeps_size(tmp_path):
    model, bundle = _bundle(2, {"target_size": (64, 64), "intensity": "minmax01"})
    bundle.save(tmp_path / "model", model)
    img = (np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "xray.png")
    res = runner.invoke(app, ["predict", str(tmp_path / "xray.png"), "--run", str(tmp_path / "model"), "--out",
                              str(tmp_path / "out"), "--attention"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "out" / "xray.png") as m:
        assert m.size == (512, 512)
        assert set(np.unique(np.asarray(m))) <= {0, 255}
    assert (tmp_path / "out" / "xray_attention.png").is_file()
    # refuses to overwrite the input
    res = runner.invoke(app, ["predict", str(tmp_path / "xray.png"), "--run", str(tmp_path / "model"), "--out",
                              str(tmp_path)])  # fmt: skip
    assert res.exit_code != 0 and "overwrite" in res.output
    assert (tmp_path / "xray.png").is_file()


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.mhd"])
def test_predict_volume_keeps_geometry(tmp_path, name):
    model, bundle = _bundle(3, {"target_spacing": (2.5, 1.4, 1.4), "intensity": "zscore_case"})
    bundle.save(tmp_path / "model", model)
    vol = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(12, 40, 36)).astype(np.float32))
    vol.SetSpacing((0.7, 0.7, 2.5))
    vol.SetOrigin((-12.5, 30.0, 4.25))
    sitk.WriteImage(vol, str(tmp_path / name))
    res = runner.invoke(app, ["predict", str(tmp_path / name), "--run", str(tmp_path / "model"), "--out",
                              str(tmp_path / "out"), "--probs"])  # fmt: skip
    assert res.exit_code == 0, res.output
    mask = sitk.ReadImage(str(tmp_path / "out" / name))
    assert mask.GetSize() == vol.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), vol.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), vol.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), vol.GetDirection(), atol=1e-6)
    ext = name.split(".", 1)[1]
    assert (tmp_path / "out" / f"ct_prob.{ext}").is_file()
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "temporary files left"


def test_predictor_from_a_checkpoint_file(cxr, tmp_path):
    run_cv(tiny_cfg(cxr), tmp_path / "cv", folds=[2])
    fold = tmp_path / "cv" / "repeat0_fold2"
    info = json.loads((fold / "model" / "model.json").read_text(encoding="utf-8"))["info"]
    assert info["selected_epoch"] == 1  # one epoch: the exported model holds the weights of last.pt
    pred = Predictor.from_path(fold / "checkpoints" / "last.pt")
    exported = Predictor.from_path(fold / "model")
    index = load_dataset(cxr, mask_threshold=127)
    test_ids = [r["case_id"] for r in read_csv(fold / "metrics.csv", text_columns=("case_id",))]
    assert test_ids
    for case_id in test_ids:
        ref = index.get(case_id)
        case = ref.load()
        out = pred.predict_array(case.image, case.geometry)
        assert out.label.shape == case.label.shape and case.geometry.mismatch(out.geometry) is None
        # the checkpoint's weights and preprocessing: the same probabilities as the fold's exported model, and the
        # mask the CV wrote for this test case
        np.testing.assert_array_equal(out.probs, exported.predict_array(case.image, case.geometry).probs)
        saved = read_mask(mask_path_for(ref.image_paths[0], fold / "predictions"))[0]
        np.testing.assert_array_equal(out.label != 0, saved != 0)


def test_resume_with_seeded_augmentation_gives_identical_weights(cxr, tmp_path):
    """The trainer's exact resume also holds with real files, the cache and seeded augmentation."""
    cases = list(load_dataset(cxr, mask_threshold=127))
    pre = Preprocessor(PreprocessConfig(target_size=(32, 32), intensity="minmax01"))

    class Crash(Callback):
        def on_step_end(self, trainer, epoch, step):
            if epoch == 3 and step == 1:
                raise KeyboardInterrupt

    def trainer(run, crash=False):
        torch.manual_seed(0)
        ds = SegmentationDataset(cases[:6], pre, cache=tmp_path / "cache", augment=AugmentConfig(), seed=5)
        model = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16))
        cfg = TrainConfig(epochs=3, batch_size=2, amp="off", deterministic=True, channels_last=False)
        tr = Trainer(model, create_loss("dice_ce"), ds, None, cfg, tmp_path / run, seed=1)
        if crash:
            tr.callbacks.insert(0, Crash())
        return tr

    ref = trainer("ref")
    ref.fit()
    with pytest.raises(KeyboardInterrupt):
        trainer("run", crash=True).fit()
    resumed = trainer("run")
    resumed.fit(resume=True)
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_cli_train_and_init_from(cxr, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"name: t\ndata: {{path: {cxr}, options: {{mask_threshold: 127}}, preprocess: {{target_size: [32, 32]}}}}\n"
        "model: {name: unet, channels: [4, 8, 16]}\ntrain: {epochs: 1, batch_size: 2, amp: 'off'}\n",
        encoding="utf-8",
    )
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "u")])
    assert res.exit_code == 0, res.output
    for f in ("config.yaml", "env.json", "split.json", "preprocess.json", "log.csv", "metrics.csv", "summary.json"):
        assert (tmp_path / "u" / f).is_file(), f
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "a"), "--set", "model.name=attention_unet",
                              "--init-from", str(tmp_path / "u")])  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "a" / "init_from.json").read_text(encoding="utf-8"))
    assert info["loaded"] and not info["skipped"]
    res = runner.invoke(app, ["train", str(cfg), "--set", "train.epoch=2"])
    assert res.exit_code == 2 and "valid keys" in res.output


def test_a_run_started_under_the_earlier_decoder_default_resumes_with_its_own_net(cxr, tmp_path, monkeypatch):
    """Runs saved before up_mode's default became "transpose" hold interpolation + conv weights; resuming them (and
    loading their model) rebuilds that decoder instead of failing on mismatched weights."""
    import agseg.experiments.run as run_mod

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"name: t\ndata: {{path: {cxr}, options: {{mask_threshold: 127}}, preprocess: {{target_size: [32, 32]}}}}\n"
        "model: {name: attention_unet, channels: [4, 8, 16]}\ntrain: {epochs: 1, batch_size: 2, amp: 'off'}\n",
        encoding="utf-8",
    )
    real = run_mod.create_model
    with monkeypatch.context() as m:  # the earlier default, for the first epoch only
        m.setattr(run_mod, "create_model", lambda name, **kw: real(name, **{"up_mode": "interp", **kw}))
        res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), "--resume", "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output
    bundle = json.loads((tmp_path / "r" / "model" / "model.json").read_text(encoding="utf-8"))
    assert bundle["model_kwargs"]["up_mode"] == "interp"
    assert len((tmp_path / "r" / "log.csv").read_text(encoding="utf-8").strip().splitlines()) == 3  # header + 2
    net = Predictor.from_path(tmp_path / "r", amp="off").model
    assert net.decoder.up_mode == "interp"


def test_naming_the_earlier_decoder_default_is_no_change_for_a_run_saved_without_it(cxr):
    from agseg.experiments.run import config_changes

    old = tiny_cfg(cxr)  # model: unet with no up_mode (a run from before the default changed)
    assert config_changes(old, tiny_cfg(cxr, **{"model.up_mode": "interp"})) == []
    assert config_changes(old, tiny_cfg(cxr, **{"model.up_mode": "transpose"})) == [
        "model.up_mode: None -> 'transpose'"
    ]


def test_cv_init_from_another_cv_maps_fold_to_fold_and_refuses_leaking_splits(cxr, tmp_path):
    """Seed 003's AG-Sononet-from-Sononet, measured by CV: each fold starts from the same fold's model of the source
    CV; a source on other splits (whose models trained on this fold's test cases) is refused before training."""
    shared = tmp_path / "splits.json"
    run_cv(tiny_cfg(cxr, name="u"), tmp_path / "u", folds=[0, 1], splits=shared)
    res = run_cv(tiny_cfg(cxr, name="a", model="attention_unet"), tmp_path / "a", folds=[0, 1], splits=shared,
                 init_from=tmp_path / "u")  # fmt: skip
    assert res.folds_done == 2
    for f in (0, 1):
        info = json.loads((tmp_path / "a" / f"repeat0_fold{f}" / "init_from.json").read_text(encoding="utf-8"))
        assert info["source"] == str(tmp_path / "u" / f"repeat0_fold{f}" / "model" / "model.safetensors")
        assert info["loaded"]
    with pytest.raises(FileNotFoundError, match="repeat0_fold2 has no trained model"):
        run_cv(tiny_cfg(cxr, name="b"), tmp_path / "b", folds=[2], splits=shared, init_from=tmp_path / "u")
    other = tiny_cfg(cxr, name="c", seed=5)  # another seed: other folds over the same 9 cases
    with pytest.raises(ValueError, match="would leak them") as err:
        run_cv(other, tmp_path / "c", init_from=tmp_path / "u")
    assert not (tmp_path / "c").exists()  # refused before anything was written: a retry needs no --overwrite
    assert "--set seed=0" in str(err.value)  # the advice: the source's seed, not only its splits.json
    followed = tiny_cfg(cxr, name="c", seed=0)  # the advice, followed
    assert run_cv(followed, tmp_path / "c", folds=[0], init_from=tmp_path / "u", splits=shared).folds_done == 1
    res = runner.invoke(app, ["cv", str(tmp_path / "u" / "config.yaml"), "--out", str(tmp_path / "d"),
                              "--init-from", str(tmp_path / "nowhere")])  # fmt: skip
    assert res.exit_code == 1 and "no such file or folder" in res.output


def test_cv_init_from_one_fold_of_another_cv_is_checked_against_every_fold(cxr, tmp_path):
    """A fold folder, its model/ or its weights file, given as --init-from, would start every fold from a model that
    trained on other folds' test cases: refused from the run's split.json, before anything is written. A run whose
    cases are none of a fold's test cases is accepted."""
    shared = tmp_path / "splits.json"
    run_cv(tiny_cfg(cxr, name="u"), tmp_path / "u", folds=[0], splits=shared)
    fold0 = tmp_path / "u" / "repeat0_fold0"
    for src in (fold0, fold0 / "model", fold0 / "model" / "model.safetensors", fold0 / "checkpoints" / "last.pt"):
        with pytest.raises(ValueError, match="repeat0_fold1's test cases"):
            run_cv(tiny_cfg(cxr, name="a"), tmp_path / "a", folds=[1], splits=shared, init_from=src)
        assert not (tmp_path / "a").exists()
    res = run_cv(tiny_cfg(cxr, name="a"), tmp_path / "a", folds=[0], splits=shared, init_from=fold0)  # its own fold
    assert res.folds_done == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights there"):
        run_cv(tiny_cfg(cxr, name="b"), tmp_path / "b", folds=[0], splits=shared, init_from=tmp_path / "empty")
    assert not (tmp_path / "b").exists()


def test_a_cv_keeps_the_starting_weights_it_began_with(cxr, tmp_path):
    """Resuming a CV, or adding folds to it, from other starting weights (or none) would mix them in one table:
    refused; the same source resumes, and the record keeps every fold's source."""
    shared = tmp_path / "splits.json"
    run_cv(tiny_cfg(cxr, name="u"), tmp_path / "u", folds=[0, 1], splits=shared)
    run_cv(tiny_cfg(cxr, name="v", **{"train.lr": 0.01}), tmp_path / "v", folds=[0, 1], splits=shared)
    cfg = tiny_cfg(cxr, name="a")
    run_cv(cfg, tmp_path / "a", folds=[0], splits=shared, init_from=tmp_path / "u")
    with pytest.raises(ValueError, match="pass --init-from"):
        run_cv(cfg, tmp_path / "a", folds=[1], splits=shared)
    with pytest.raises(ValueError, match="not .*v"):
        run_cv(cfg, tmp_path / "a", folds=[1], splits=shared, init_from=tmp_path / "v")
    assert not (tmp_path / "a" / "repeat0_fold1").exists()
    run_cv(cfg, tmp_path / "a", folds=[1], splits=shared, init_from=tmp_path / "u")
    record = json.loads((tmp_path / "a" / "init_from.json").read_text(encoding="utf-8"))
    assert record["resolved"] == str((tmp_path / "u").resolve())
    assert sorted(record["folds"]) == ["repeat0_fold0", "repeat0_fold1"]
    assert run_cv(cfg, tmp_path / "a", folds=[0, 1], splits=shared).folds_done == 2  # gathering trains nothing
    run_cv(cfg, tmp_path / "s", folds=[0], splits=shared)  # from scratch
    with pytest.raises(ValueError, match="started from scratch"):
        run_cv(cfg, tmp_path / "s", folds=[1], splits=shared, init_from=tmp_path / "u")


def test_init_from_follows_the_models_a_source_was_started_from(cxr, tmp_path):
    """A run that never saw fold 1's test cases, but was started from a model that trained on them, leaks them too:
    refused through its init_from.json."""
    from agseg.experiments.run import train_model
    from agseg.experiments.splits import SplitPlan

    shared = tmp_path / "splits.json"
    run_cv(tiny_cfg(cxr, name="u"), tmp_path / "u", folds=[0], splits=shared)  # trains on folds 1 and 2's cases
    plan = SplitPlan.from_json(shared)
    by_id = {c.case_id: c for c in load_dataset(cxr, mask_threshold=127)}
    f0, f1 = plan.get(0, 0), plan.get(0, 1)
    assert not set(f0.test) & set(f1.test)
    train_model(tiny_cfg(cxr, name="r"), tmp_path / "r", [by_id[c] for c in f0.test], [],
                init_from=tmp_path / "u" / "repeat0_fold0")  # fmt: skip
    with pytest.raises(ValueError, match="through .*u/repeat0_fold0"):
        run_cv(tiny_cfg(cxr, name="a"), tmp_path / "a", folds=[1], splits=shared, init_from=tmp_path / "r")
    assert not (tmp_path / "a").exists()
    import shutil

    shutil.rmtree(tmp_path / "u")  # before r recorded what its source saw, this let the leak through
    with pytest.raises(ValueError, match="through .*u/repeat0_fold0"):
        run_cv(tiny_cfg(cxr, name="a"), tmp_path / "a", folds=[1], splits=shared, init_from=tmp_path / "r")
    assert not (tmp_path / "a").exists()


def test_a_leak_is_a_shared_patient_not_only_a_shared_case_id():
    from agseg.experiments.init_from import _Groups
    from agseg.experiments.splits import make_splits

    ids = ["p1_a", "p1_b", "p2_a", "p3_a", "p4_a", "p5_a"]
    plan = make_splits(ids, ["p1", "p1", "p2", "p3", "p4", "p5"], n_folds=2, seed=0)
    groups = _Groups(plan)
    assert groups.leaked({"p1_a"}, ["p1_b", "p2_a"]) == ["p1_b"]  # the same patient's other image
    assert groups.leaked({"p3_a"}, ["p1_b", "p2_a"]) == []
    assert groups.leaked({"elsewhere"}, ["elsewhere", "p2_a"]) == ["elsewhere"]  # unknown ids: by id


def test_a_record_written_before_resolved_paths_resumes_with_the_same_source(tmp_path, monkeypatch):
    """init_from.json files written by the first version hold the source as typed (relative): resuming with the same
    --init-from used to be refused, with advice that looped."""
    from agseg.experiments.init_from import check_init_record
    from agseg.experiments.splits import make_splits

    monkeypatch.chdir(tmp_path)
    plan = make_splits([f"c{i}" for i in range(6)], n_folds=3, seed=0)
    out = tmp_path / "cv"
    (out / "repeat0_fold0").mkdir(parents=True)
    (out / "init_from.json").write_text(json.dumps({"source": "runs/src", "folds": {"repeat0_fold0": "x"}}))
    pending = [plan.get(0, 1)]
    record = check_init_record(out, "runs/src", {"repeat0_fold1": tmp_path / "y"}, plan, pending)
    assert record["resolved"] == str((tmp_path / "runs" / "src").resolve())
    assert sorted(record["folds"]) == ["repeat0_fold0", "repeat0_fold1"]
    with pytest.raises(ValueError, match="pass --init-from"):
        check_init_record(out, None, {}, plan, pending)


def test_a_stale_record_goes_and_overwrite_keeps_the_old_cv_when_a_check_fails(cxr, tmp_path):
    """A record whose source no fold started from (the first fold failed before its folder) is removed by a run
    without --init-from; an --overwrite with a refused source deletes nothing."""
    shared = tmp_path / "splits.json"
    run_cv(tiny_cfg(cxr, name="u"), tmp_path / "u", folds=[0], splits=shared)
    cfg = tiny_cfg(cxr, name="a")
    out = tmp_path / "a"
    run_cv(cfg, out, folds=[0], splits=shared)
    (out / "init_from.json").write_text(json.dumps({"source": str(tmp_path / "u"), "folds": {}}))
    import shutil

    shutil.rmtree(out / "repeat0_fold0")  # as if the fold had failed before its folder was made
    run_cv(cfg, out, folds=[0], splits=shared)
    assert not (out / "init_from.json").exists()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match="repeat0_fold1's test cases"):
        run_cv(cfg, out, folds=[1], splits=shared, overwrite=True, init_from=tmp_path / "u" / "repeat0_fold0")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old CV is still there


def test_a_cv_refuses_a_balance_its_cases_cannot_have_before_writing(cxr, tmp_path):
    with pytest.raises(ConfigError, match="does not match"):
        run_cv(tiny_cfg(cxr, **{"train.balance": "^(MCU)"}), tmp_path / "b", folds=[0])
    assert not (tmp_path / "b").exists()  # a retry with a fixed regex is no "changed config"
    assert run_cv(tiny_cfg(cxr, **{"train.balance": r"_(\d)$"}), tmp_path / "b", folds=[0]).folds_done == 1


def test_overwrite_refuses_to_start_from_weights_inside_the_folder_it_deletes(cxr, tmp_path):
    """Before the fix, --overwrite removed the CV (or run) and then could not find the weights it was told to start
    from: the old models were lost and nothing trained."""
    from agseg.data.datasets import load_dataset
    from agseg.experiments.run import train_model

    cfg = tiny_cfg(cxr)
    out = tmp_path / "cv"
    run_cv(cfg, out, folds=[0])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for source in (out, out / "repeat0_fold0"):
        with pytest.raises(ValueError, match="--overwrite deletes"):
            run_cv(cfg, out, folds=[0], overwrite=True, init_from=source)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    cases = list(load_dataset(cxr, mask_threshold=127))
    run = out / "repeat0_fold0"
    with pytest.raises(ValueError, match="lies inside --out"):
        train_model(cfg, run, cases[:4], cases[4:5], overwrite=True, init_from=run / "model")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_train_overwrite_keeps_the_old_run_when_a_later_check_fails(cxr, tmp_path):
    """Before the fix, train_model's --overwrite deleted the old run first and then refused the --init-from file."""
    from agseg.data.datasets import load_dataset
    from agseg.experiments.run import train_model

    cfg = tiny_cfg(cxr)
    cases = list(load_dataset(cxr, mask_threshold=127))
    run = tmp_path / "run"
    train_model(cfg, run, cases[:4], cases[4:5])
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weights"):
        train_model(cfg, run, cases[:4], cases[4:5], overwrite=True, init_from=tmp_path / "notes.json")
    with pytest.raises(ConfigError, match="does not match"):
        train_model(cfg.replace(**{"train.balance": "^(MCU)"}), run, cases[:4], cases[4:5], overwrite=True)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert train_model(cfg, run, cases[:4], cases[4:5], overwrite=True).result is not None  # a valid one replaces it


def test_seen_is_read_before_overwrite_deletes_an_ancestor_and_a_resume_keeps_its_source(cxr, tmp_path):
    """R2 was started from R1 (a record written before 'seen' existed); train R1 --overwrite --init-from R2 used to
    delete R1 first and then record only R2's cases, so a later leak through the old R1 passed."""
    from agseg.data.datasets import load_dataset
    from agseg.experiments.run import train_model

    cfg = tiny_cfg(cxr)
    cases = list(load_dataset(cxr, mask_threshold=127))
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    train_model(cfg, r1, cases[:3], cases[3:4])
    train_model(cfg, r2, cases[4:6], cases[6:7], init_from=r1)
    record = json.loads((r2 / "init_from.json").read_text(encoding="utf-8"))
    assert record["seen"] == sorted(c.case_id for c in cases[:4])
    del record["seen"]  # as written before this session
    (r2 / "init_from.json").write_text(json.dumps(record), encoding="utf-8")
    train_model(cfg, r1, cases[7:8], cases[8:9], overwrite=True, init_from=r2)
    seen = json.loads((r1 / "init_from.json").read_text(encoding="utf-8"))["seen"]
    assert seen == sorted(c.case_id for c in cases[:7])  # R2's cases and those of the R1 it came from
    other = tmp_path / "other"
    train_model(cfg, other, cases[:2], cases[2:3])
    with pytest.raises(ValueError, match="resume it with --init-from"):  # its record would name the wrong lineage
        train_model(cfg.replace(**{"train.epochs": 2}), r2, cases[4:6], cases[6:7], resume=True, init_from=other)
    assert json.loads((r2 / "init_from.json").read_text(encoding="utf-8"))["source"] == record["source"]


def test_overwrite_keeps_the_old_run_when_the_source_record_cannot_be_read(cxr, tmp_path):
    from agseg.data.datasets import load_dataset
    from agseg.experiments.run import train_model

    cfg = tiny_cfg(cxr)
    cases = list(load_dataset(cxr, mask_threshold=127))
    src, run = tmp_path / "src", tmp_path / "run"
    train_model(cfg, src, cases[:3], cases[3:4])
    train_model(cfg, run, cases[4:6], cases[6:7])
    (src / "split.json").write_text("[1, 2]", encoding="utf-8")  # not a record
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(ValueError, match="split.json is not an agseg record"):
        train_model(cfg, run, cases[4:6], cases[6:7], overwrite=True, init_from=src)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
