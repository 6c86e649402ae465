"""``agseg demo --fast``: the README's main job, in small, leaves a run directory to explore."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from agseg.cli import app


@pytest.mark.slow
def test_demo_fast_leaves_splits_metrics_and_comparison(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "splits.json").is_file()
    for model in ("unet", "attention_multi"):
        with (out / model / "metrics.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 24 and {"case_id", "fold", "dice", "hd"} <= set(rows[0])
        assert (out / model / "splits.json").read_bytes() == (out / "splits.json").read_bytes()
    with (out / "compare" / "pairwise.csv").open(encoding="utf-8") as fh:
        pairs = {r["metric"]: r for r in csv.DictReader(fh)}
    assert 0 <= float(pairs["dice"]["kw_p"]) <= 1 and 0 <= float(pairs["dice"]["wilcoxon_p"]) <= 1
    md = (out / "compare" / "compare.md").read_text(encoding="utf-8")
    assert "Kruskal-Wallis" in md and "unet" in md and "attention_multi" in md
    assert "Kruskal-Wallis" in res.output
    assert (out / "attention_example.png").is_file()
    assert (out / "compare" / "boxplot_dice.png").is_file()
