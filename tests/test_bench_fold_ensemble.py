"""benchmarks/fold_ensemble_holdout.py never writes over an earlier run's files unless --overwrite, and says so
before any work starts (here before it even looks for the data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fold_ensemble_holdout.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, encoding="utf-8", timeout=300)


def test_pool_and_score_refuse_to_overwrite(tmp_path):
    prefix = tmp_path / "ens"
    (tmp_path / "ens_pool.csv").write_text("mine\n", encoding="utf-8")
    res = _run("pool", str(tmp_path / "no_data"), str(tmp_path / "no_splits.json"), str(prefix))
    assert res.returncode != 0 and "not overwritten" in res.stderr and "ens_pool.csv" in res.stderr
    assert (tmp_path / "ens_pool.csv").read_text(encoding="utf-8") == "mine\n"
    out = tmp_path / "scored"
    out.mkdir()
    (out / "summary.json").write_text("{}", encoding="utf-8")
    res = _run("score", str(tmp_path / "inner"), str(tmp_path / "no_data"), str(tmp_path / "ids.json"), str(out))
    assert res.returncode != 0 and "not overwritten" in res.stderr
    assert (out / "summary.json").read_text(encoding="utf-8") == "{}"
    # with --overwrite the refusal goes away (it then fails on the missing data instead)
    res = _run("pool", str(tmp_path / "no_data"), str(tmp_path / "no_splits.json"), str(prefix), "--overwrite")
    assert res.returncode != 0 and "not overwritten" not in res.stderr
