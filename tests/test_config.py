"""Typed configs: YAML round trip, overrides, and errors that list the valid keys."""

from __future__ import annotations

import pytest

from agseg.config import ConfigError, ExperimentConfig, load_config, save_config


def test_round_trip_and_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text(
        "name: demo\nseed: 3\n"
        "data: {path: data, preprocess: {target_size: [64, 64]}}\n"
        "model: {name: attention_unet, channels: [8, 16, 32], gating: single}\n"
        "train: {epochs: 4, lr: 1e-3}\n",
        encoding="utf-8",
    )
    cfg = load_config(p, overrides={"train.epochs": 2, "model.gating": "multi"})
    assert cfg.name == "demo" and cfg.seed == 3
    assert cfg.train.epochs == 2 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.name == "attention_unet" and cfg.model.kwargs == {"channels": [8, 16, 32], "gating": "multi"}
    assert cfg.data.path == str((tmp_path / "data").resolve())
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(out)
    assert again == cfg
    assert cfg.replace(**{"train.batch_size": 7}).train.batch_size == 7


def test_unknown_keys_list_valid_ones(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {epoch: 3}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key.*'epoch'.*valid keys:.*epochs"):
        load_config(p)
    p.write_text("trian: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown section.*valid: cv, data, eval, model, name, seed, train"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p.write_text("train: {lr: fast}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(p)


def test_defaults_are_usable():
    cfg = ExperimentConfig()
    assert cfg.train.optimizer == "adam" and cfg.cv.folds == 5 and "hd95" in cfg.eval.metrics


def test_a_relative_data_path_in_a_dict_means_the_working_directory_wherever_the_config_is_saved(tmp_path, monkeypatch):
    from agseg.config import from_dict

    monkeypatch.chdir(tmp_path)
    cfg = from_dict({"data": {"path": "out/data", "cache_dir": "out/.cache"}, "model": {"name": "unet"}})
    assert cfg.data.path == str(tmp_path.resolve() / "out" / "data")
    assert cfg.data.cache_dir == str(tmp_path.resolve() / "out" / ".cache")
    # a run saves it in its own folder and reads it back from there: the same folder, not out/run/out/data
    back = load_config(save_config(cfg, tmp_path / "out" / "run" / "config.yaml"))
    assert back.data.path == cfg.data.path and back.data.cache_dir == cfg.data.cache_dir


def test_a_data_path_set_on_the_command_line_means_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    cfg_file = tmp_path / "cfgs" / "c.yaml"
    cfg_file.write_text("data: {path: ../data/cxr}\nmodel: {name: unet}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(cfg_file).data.path == str((tmp_path / "data" / "cxr").resolve())  # the file's: its folder
    # --set data.path=other/cxr, typed in tmp_path: was tmp_path/cfgs/other/cxr
    got = load_config(cfg_file, {"data.path": "other/cxr", "data.cache_dir": "c"}).data
    assert got.path == str((tmp_path / "other" / "cxr").resolve()) and got.cache_dir == str((tmp_path / "c").resolve())
