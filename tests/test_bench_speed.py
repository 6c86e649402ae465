"""benchmarks/speed.py's ratios and targets: each net is read in its framework's default layout, and the fp32
target holds only when ours is no slower than MONAI's AttentionUnet in either of its layouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(speed, monai_cl_train: float) -> list[dict]:
    cl, contig = speed.CL, speed.CONTIGUOUS

    def row(net, precision, layout, infer, train, params=1.0):
        return {"net": net, "precision": precision, "layout": layout, "params": params, "gflops": 1.0,
                "infer_s": infer, "train_s": train}  # fmt: skip

    # each net's non-default layout first, so that reading the first matching row would give wrong ratios
    rows = [
        row(speed.DEFAULT, "fp32", contig, 1.2, 1.3, params=1.05),
        row(speed.DEFAULT, "fp32", cl, 0.8, 1.0, params=1.05),
        row(speed.DEFAULT, "bf16", cl, 0.25, 0.4, params=1.05),
        row("agseg unet", "fp32", cl, 0.75, 0.95),
        row("agseg unet", "bf16", cl, 0.24, 0.38),
        row(speed.MONAI, "fp32", cl, 0.9, monai_cl_train),
        row(speed.MONAI, "fp32", contig, 1.0, 1.1),
        row(speed.MONAI, "bf16", cl, 0.5, 0.9),
    ]
    return [r for r in rows if monai_cl_train is not None or r["train_s"] is not None]


def test_ratios_use_each_frameworks_default_layout(speed):
    r = speed.ratios(_rows(speed, monai_cl_train=0.95))
    assert r[f"{speed.DEFAULT} / {speed.MONAI}, fp32, train"] == pytest.approx(1.0 / 1.1)
    assert r[f"{speed.DEFAULT} / {speed.MONAI} {speed.CL}, fp32, train"] == pytest.approx(1.0 / 0.95)
    assert r[f"{speed.DEFAULT} bf16 / {speed.MONAI} fp32, infer"] == pytest.approx(0.25 / 1.0)
    assert r["gate overhead (attention_unet / unet), bf16, train time"] == pytest.approx(0.4 / 0.38)
    assert r[f"layout: {speed.DEFAULT} fp32 {speed.CL} / {speed.CONTIGUOUS}, infer"] == pytest.approx(0.8 / 1.2)


@pytest.mark.parametrize(("monai_cl_train", "met"), [(0.95, False), (1.2, True), (None, None)])
def test_fp32_target_needs_both_monai_layouts_beaten(speed, monai_cl_train, met):
    result = {"shapes": {"2d": {"ratios": speed.ratios(_rows(speed, monai_cl_train))}}}
    got = {t: ok for t, _, ok in speed.targets(result)}
    key = next(t for t in got if "fp32, train <= 1" in t)
    assert got[key] is met  # None: MONAI channels-last was not measured, so the target is unknown, not met
    infer = next(t for t in got if "fp32, infer <= 1" in t)
    assert got[infer] is (True if monai_cl_train is not None else None)  # 0.8 against 1.0 and 0.9
    assert got["2d: default (bf16) / MONAI fp32, infer <= 0.3"] is True


def test_rows_without_a_layout_read_as_the_layout_they_were_measured_in(speed):
    """JSON written before layouts were recorded: fp32 rows were contiguous, bf16 rows channels-last."""
    rows = [{k: v for k, v in r.items() if k != "layout"} for r in _rows(speed, 0.95) if r["layout"] != speed.CL
            or r["precision"] == "bf16" or r["net"] == "agseg unet"]  # fmt: skip
    r = speed.ratios(rows)
    assert r[f"{speed.DEFAULT} / {speed.MONAI}, fp32, infer"] is None  # agseg's default layout was not measured
    assert r[f"{speed.DEFAULT} / {speed.MONAI}, bf16, train"] == pytest.approx(0.4 / 0.9)
    assert r[f"layout: {speed.MONAI} fp32 {speed.CL} / {speed.CONTIGUOUS}, infer"] is None


def test_an_earlier_result_is_kept_unless_overwrite(tmp_path):
    """speed.py refuses an existing --out or --md before any work (here before it builds a net)."""
    import subprocess
    import sys

    out, md = tmp_path / "speed.json", tmp_path / "benchmarks.md"
    md.write_text("mine", encoding="utf-8")
    args = [sys.executable, str(SCRIPT), "--out", str(out), "--md", str(md), "--device", "no-such-device"]
    res = subprocess.run(args, capture_output=True, encoding="utf-8", timeout=300)
    assert res.returncode != 0 and "not overwritten" in res.stderr and str(md) in res.stderr
    assert md.read_text(encoding="utf-8") == "mine" and not out.exists()
    # with --overwrite the refusal goes away (it then stops at the unknown device, writing nothing)
    res = subprocess.run([*args, "--overwrite"], capture_output=True, encoding="utf-8", timeout=300)
    assert res.returncode != 0 and "not overwritten" not in res.stderr
    assert md.read_text(encoding="utf-8") == "mine" and not out.exists()
