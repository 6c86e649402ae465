"""Rendering a comparison: p-value and cell formats, Markdown tables, CSV text, box plot PNGs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agseg.experiments.compare import Comparison, RunMetrics, compare_runs
from agseg.report.figures import boxplot_filename, boxplot_png, comparison_boxplot_png
from agseg.report.tables import (
    PAIRWISE_HEADER,
    csv_text,
    display_path,
    format_p,
    format_value,
    md_table,
    pairwise_rows,
    per_case_cell,
    to_markdown,
)


def _run(label: str, values: np.ndarray, source: Path) -> RunMetrics:
    n = values.size
    return RunMetrics(label, source, np.zeros(n, int), np.arange(n) % 3, [f"c{i}" for i in range(n)], {"dice": values})


@pytest.fixture
def three(tmp_path) -> Comparison:
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.05, 12)
    worse = base - 0.1 + rng.normal(0, 0.01, 12)
    worse[2] = math.nan
    runs = [_run("u|net", base, tmp_path / "a" / "metrics.csv"), _run("ag", worse, tmp_path / "b" / "metrics.csv")]
    runs.append(_run("ag2", base + 0.01, tmp_path / "c" / "metrics.csv"))
    return compare_runs(runs)


def test_number_formats():
    assert [format_p(p) for p in (1.234e-5, 0.0123456, 0.5, 1.0, math.nan, None)] == [
        "1.2e-05", "0.0123", "0.5", "1", "n/a", "n/a"
    ]  # fmt: skip
    assert format_p(0.001) == "0.001" and format_p(0.000999) == "1.0e-03"  # the switch to e-notation is below 1e-3
    assert [format_value(x) for x in (0.123456, math.inf, -math.inf, math.nan, 12345.6)] == [
        "0.1235", "inf", "-inf", "n/a", "1.235e+04"
    ]  # fmt: skip
    row = {"mean": 0.5, "std": 0.25, "median": 0.4, "n_undefined": 2, "n": 10}
    assert per_case_cell(row) == "0.5 ± 0.25 (0.4) [2/10 undefined]"
    assert per_case_cell({**row, "n_undefined": 0}) == "0.5 ± 0.25 (0.4)"


def test_md_table_escapes_pipes_and_display_path(tmp_path, monkeypatch):
    assert md_table(["a", "b|c"], [["1", "x|y"]]).splitlines() == ["| a | b\\|c |", "|---|---|", "| 1 | x\\|y |"]
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "runs" / "u" / "metrics.csv") == "runs/u/metrics.csv"
    assert display_path(Path("/elsewhere/deep/u/metrics.csv")) == "u/metrics.csv"


def test_pairwise_rows_and_markdown_sections(three):
    rows = pairwise_rows(three.pairwise, "dice")
    assert len(rows) == 3 and all(len(r) == len(PAIRWISE_HEADER) for r in rows)
    p = three.pair("dice", "u|net", "ag")
    assert rows[0] == [
        "u|net", "ag", format_p(p["kw_p"]), format_p(p["kw_p_holm"]), format_p(p["wilcoxon_p"]),
        format_p(p["wilcoxon_p_holm"]), "11 (+1 undefined)", format_value(p["median_diff"]),
    ]  # fmt: skip
    md = to_markdown(three)
    assert md.index("## Per-model results") < md.index("## Pairwise tests") < md.index("### dice")
    assert f"Kruskal-Wallis over all 3 models: p = {format_p(three.omnibus['dice'][1])}" in md
    assert "| u\\|net | ag |" in md  # the label's pipe does not break the table
    assert "[1/12 undefined]" in md
    one = to_markdown(compare_runs(three.runs[:1]))
    assert "## Pairwise tests" not in one and "at least two runs" in one


def test_csv_text_round_trips_floats_exactly(three):
    from agseg.experiments.compare import PAIRWISE_COLUMNS

    back = list(csv.DictReader(io.StringIO(csv_text(PAIRWISE_COLUMNS, three.pairwise))))
    assert list(back[0]) == list(PAIRWISE_COLUMNS) and len(back) == 3
    for row, want in zip(back, three.pairwise, strict=True):
        assert float(row["kw_p"]) == want["kw_p"] and float(row["wilcoxon_p"]) == want["wilcoxon_p"]


def _png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im


def test_boxplot_png_size_determinism_and_data(three):
    png = comparison_boxplot_png(three, "dice")
    # 100 dpi, 4 inches high, max(4, 1.6 * models + 1) inches wide
    assert _png(png).size == (580, 400)  # 3 models: 5.8 x 4 inches
    assert comparison_boxplot_png(three, "dice") == png  # jitter is seeded: same input, same bytes
    shifted = boxplot_png([(r.label, r.values["dice"] + 0.2) for r in three.runs], "dice")
    assert shifted != png
    two = _png(boxplot_png({"a": np.array([1.0, 2.0]), "b": np.array([math.nan, math.inf])}, "hd95"))
    assert two.size == (420, 400)  # 4.2 inches; a model with no defined value gets an empty slot, not an error
    assert boxplot_filename("dice") == "boxplot_dice.png" and boxplot_filename("hd95 / 2") == "boxplot_hd95_2.png"
