"""benchmarks/predict_layout.py never replaces an earlier result unless --overwrite, and says so before any work
(here before it even looks for the data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_layout.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, encoding="utf-8", timeout=300)


def test_an_earlier_result_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "layout.json"
    out.write_text("mine", encoding="utf-8")
    res = _run("--data", str(tmp_path / "no_data"), "--out", str(out))
    assert res.returncode != 0 and "not overwritten" in res.stderr and str(out) in res.stderr
    assert out.read_text(encoding="utf-8") == "mine"
    # with --overwrite the refusal goes away (it then stops at the missing data, writing nothing)
    res = _run("--data", str(tmp_path / "no_data"), "--out", str(out), "--overwrite")
    assert res.returncode != 0 and "not overwritten" not in res.stderr and "no images" in res.stderr
    assert out.read_text(encoding="utf-8") == "mine"
