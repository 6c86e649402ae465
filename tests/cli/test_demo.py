"""``agseg demo --fast``: the README's main job, in small, leaves a run directory to explore."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from agseg.cli import app
from agseg.experiments.compare import format_p


@pytest.mark.slow
def test_demo_fast_leaves_splits_metrics_and_comparison(tmp_path, monkeypatch):
    # a relative --out, as a user types it: each run reads its saved config back from its own folder, where a
    # relative data path once resolved to demo/unet/demo/data and the demo failed after its first CV
    monkeypatch.chdir(tmp_path)
    out = Path("demo")
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
    md = (out / "compare" / "compare.md").read_text(encoding="utf-8")
    # the reported p-values are SciPy's on the demo's own per-case tables: Kruskal-Wallis on each model's defined
    # values, the Wilcoxon signed-rank test on the differences of the same (repeat, case_id) in both models
    per_case = {}
    for model in ("unet", "attention_multi"):
        with (out / model / "metrics.csv").open(encoding="utf-8") as fh:
            per_case[model] = {(float(r["repeat"]), r["case_id"]): r for r in csv.DictReader(fh)}
    assert per_case["unet"].keys() == per_case["attention_multi"].keys()
    keys = sorted(per_case["unet"])
    assert {"dice", "hd95"} <= set(pairs)
    for metric in ("dice", "hd95"):
        a, b = (np.array([float(per_case[m][k][metric]) for k in keys]) for m in ("unet", "attention_multi"))
        row = pairs[metric]
        assert (row["model_a"], row["model_b"]) == ("unet", "attention_multi")
        kw = stats.kruskal(a[np.isfinite(a)], b[np.isfinite(b)]).pvalue
        both = np.isfinite(a) & np.isfinite(b)
        assert np.any(a[both] != b[both]), f"{metric}: the models agree on every case; the check would be vacuous"
        wx = stats.wilcoxon(a[both] - b[both]).pvalue
        assert math.isfinite(kw) and math.isfinite(wx)
        assert float(row["kw_p"]) == pytest.approx(kw, rel=1e-9)
        assert float(row["wilcoxon_p"]) == pytest.approx(wx, rel=1e-9)
        assert int(row["n_pairs"]) == int(both.sum())
        assert f"| unet | attention_multi | {format_p(kw)} | {format_p(kw)} | {format_p(wx)} | {format_p(wx)} |" in md
    assert "Kruskal-Wallis" in md and "unet" in md and "attention_multi" in md
    assert "Kruskal-Wallis" in res.output
    assert (out / "attention_example.png").is_file()
    assert (out / "compare" / "boxplot_dice.png").is_file()
    # the demo ends by writing its report and printing where it is
    report = out / "report.html"
    assert res.output.rstrip().splitlines()[-1] == f"report: {report}"
    page = report.read_text(encoding="utf-8")
    for bad in ("http://", "https://", 'src="//', "@import", "<link", "url(", "<script src", "file:"):
        assert bad not in page.lower(), f"external reference {bad!r} in the demo's report"
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'<img[^>]*\ssrc="([^"]*)"', page))
    for section in ("run", "results", "statistics", "plots", "curves", "gallery", "attention"):
        assert f'<section id="{section}">' in page, section
    # the statistics of the comparison, the per-case and per-fold tables, overlays of cases and the gates' maps
    assert format_p(float(pairs["dice"]["kw_p"])) in page and format_p(float(pairs["dice"]["wilcoxon_p"])) in page
    assert "Kruskal-Wallis" in page and "unet: 24 case rows" in page and "<th>fold</th>" in page
    assert page.count('id="fig-case_') == 6  # best, median, worst per model
    assert 'id="fig-attention_evolution_attention_multi"' in page  # recorded during training (attention_every)
