"""torchrun with 2 CPU processes (gloo): each trains on its own shard, both end with the same net; one writer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from agseg.data import write_dataset
from agseg.inference.bundle import load_bundle

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="no gloo backend"
)


def _torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "agseg", *args]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, timeout=600, encoding="utf-8", errors="replace"
    )  # never the locale codec (ASCII in CI)


def _tiny_config(tmp_path, seed: int, rest: str):
    """A config over 8 synthetic chest X-rays (32x32); ``rest`` holds the name, model, train and cv lines."""
    data = write_dataset(tmp_path / "cxr", "cxr", n=8, size=32, seed=seed)
    cfg = tmp_path / "tiny.yaml"
    data_line = f"data: {{path: {data}, options: {{mask_threshold: 127}}, preprocess: {{intensity: minmax01}}}}\n"
    cfg.write_text(data_line + rest, encoding="utf-8")
    return cfg


def test_two_processes_train_on_different_cases_and_end_with_identical_weights(tmp_path):
    cfg = _tiny_config(
        tmp_path,
        3,
        "name: ddp\nmodel: {name: attention_unet, channels: [4, 8, 16]}\n"
        "train: {epochs: 2, batch_size: 2, amp: 'off', threads: 1, select: last}\ncv: {val_fraction: 0.25}\n",
    )
    res = _torchrun(tmp_path, "train", str(cfg), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "run"
    ranks = [json.loads((run / "ddp" / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for epoch in ("1", "2"):
        a, b = (set(r["epochs"][epoch]) for r in ranks)
        assert a and b and not a & b, (epoch, a, b)  # different cases on each process
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
        assert a | b == set(split["train"])  # together: the whole training set
    assert ranks[0]["epochs"]["1"] != ranks[0]["epochs"]["2"] or len(ranks[0]["epochs"]["1"]) == 1  # reshuffled
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # the same net on both
    # one writer: one log row per epoch, one model, which loads and is the net both processes ended with
    log = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(log) == 1 + 2
    net, _ = load_bundle(run)
    assert sum(p.numel() for p in net.parameters()) > 0
    assert res.stdout.count("training attention_unet") == 1  # rank 0 talks
    # resume under torchrun: two more epochs continue from last.pt on both processes
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("epochs: 2", "epochs: 3"), encoding="utf-8")
    res = _torchrun(tmp_path, "train", str(cfg), "--out", str(run), "--resume")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(log) == 1 + 3
    again = [json.loads((run / "ddp" / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert again[0]["weights_sha256"] == again[1]["weights_sha256"] != ranks[0]["weights_sha256"]
    shutil.rmtree(run)


def test_one_cv_fold_under_torchrun(tmp_path):
    cfg = _tiny_config(
        tmp_path,
        5,
        "name: ddpcv\nmodel: {name: unet, channels: [4, 8]}\n"
        "train: {epochs: 1, batch_size: 2, amp: 'off', threads: 1}\ncv: {folds: 2, val_fraction: 0.0}\n"
        "eval: {metrics: [dice], postprocess: false}\n",
    )
    res = _torchrun(tmp_path, "cv", str(cfg), "--fold", "0", "--out", str(tmp_path / "cv"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    fold = tmp_path / "cv" / "repeat0_fold0"
    rows = (fold / "metrics.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 4  # the 4 test cases, scored once (by rank 0)
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text(encoding="utf-8"))
    assert summary["folds_done"] == 1 and summary["folds_total"] == 2
    assert {json.loads((fold / "ddp" / f"rank{r}.json").read_text(encoding="utf-8"))["rank"] for r in (0, 1)} == {0, 1}
