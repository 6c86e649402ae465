"""``agseg data inspect`` / ``agseg data synth``: JSON report, non-zero exit naming the file, --skip-bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agseg.cli import app

runner = CliRunner()


def test_inspect_json(synth_root: Path) -> None:
    r = runner.invoke(app, ["data", "inspect", str(synth_root / "volumes"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_cases"] == 3 and report["label_values"] == [0, 1, 2] and report["layout"] == "folders"
    # written with spacing (x, y, z) = (0.8, 0.9, 2.5) and size (z, y, x) = (12, 20, 24): reported in array order
    for key in ("min", "max"):
        assert report["spacings"][key] == pytest.approx([2.5, 0.9, 0.8], rel=1e-6)
        assert report["shapes"][key] == [12, 20, 24]


def test_inspect_table(synth_root: Path) -> None:
    r = runner.invoke(app, ["data", "inspect", str(synth_root / "brats")])
    assert r.exit_code == 0, r.output
    assert "label values" in r.stdout and "[0, 1, 2, 3, 4]" in r.stdout


def test_inspect_bad_file_exit_code_and_skip_bad(synth_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(synth_root / "cxr", tmp_path / "cxr"))
    bad = root / "masks" / "SYNCXR_0001_1.png"
    bad.write_bytes(bad.read_bytes()[:64])
    r = runner.invoke(app, ["data", "inspect", str(root), "--json"])
    assert r.exit_code == 1
    assert str(bad) in r.stderr and "cannot read" in r.stderr
    r = runner.invoke(app, ["data", "inspect", str(root), "--json", "--skip-bad"])
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["n_cases"] == 3 and report["skipped"][0]["path"] == str(bad) and report["problems"] == []


def test_inspect_missing_and_options(tmp_path: Path, synth_root: Path) -> None:
    r = runner.invoke(app, ["data", "inspect", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "nope" in r.stderr
    r = runner.invoke(app, ["data", "inspect", str(synth_root / "luna16"), "--json", "-o", "label_map={3: 1, 4: 2}"])
    assert r.exit_code == 1 and "not in the label map" in r.stderr


def test_synth(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        ["data", "synth", str(tmp_path / "s"), "--kind", "volumes", "-n", "2", "--size", "8x12x12", "--format", "mha"],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "s" / "images").iterdir()) == ["case_000.mha", "case_001.mha"]
    r = runner.invoke(app, ["data", "inspect", str(tmp_path / "s"), "--json"])
    assert json.loads(r.stdout)["shapes"]["min"] == [8, 12, 12]
