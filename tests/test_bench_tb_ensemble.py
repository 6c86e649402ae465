"""benchmarks/tb_recipe_ensemble.py: the committed tables' AUCs against sklearn by hand, and --out never replaced
unasked."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tb_recipe_ensemble.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tb_ensemble", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_two_net_ensemble_is_the_mean_of_their_probabilities_and_out_is_kept(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    bench.main(["--out", str(out)])
    rows = {tuple(r["members"]): r["auc"] for r in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    assert len(rows) == 2 ** len(bench.RUNS) - 1
    tables = [list(csv.DictReader(bench.RUNS[k].open(encoding="utf-8"))) for k in ("sononet8", "ag_sononet8")]
    by_id = [{r["case_id"]: r for r in t} for t in tables]
    ids = sorted(by_id[0])
    y = [int(float(by_id[0][i]["target"])) for i in ids]
    p = np.mean([[float(t[i]["prob_tuberculosis"]) for i in ids] for t in by_id], axis=0)
    assert rows[("sononet8", "ag_sononet8")] == pytest.approx(roc_auc_score(y, p))
    before = out.read_bytes()
    with pytest.raises(SystemExit, match="not overwritten"):
        bench.main(["--out", str(out)])
    assert out.read_bytes() == before
    bench.main(["--out", str(out), "--overwrite"])
