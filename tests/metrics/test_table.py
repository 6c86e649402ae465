"""Aggregation of per-case rows: undefined values are counted, never dropped; CSV/JSON round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agseg.metrics import format_summary, read_csv, read_csv_table, summarize, write_csv, write_summary_json

ROWS = [
    {"case": "a", "dice": 0.9, "hd95": 2.0},
    {"case": "b", "dice": 0.7, "hd95": float("inf")},
    {"case": "c", "dice": 0.0, "hd95": float("nan")},
    {"case": "d", "dice": 0.8},
    {"case": "e", "dice": 1.0, "hd95": 4.0},
]


def test_summary_counts_and_statistics():
    s = summarize(ROWS)
    assert list(s) == ["dice", "hd95"]  # the case id column is skipped
    d = s["dice"]
    vals = np.array([0.9, 0.7, 0.0, 0.8, 1.0])
    assert (d.n, d.n_defined, d.n_undefined) == (5, 5, 0)
    assert d.mean == pytest.approx(vals.mean())
    assert d.std == pytest.approx(vals.std(ddof=1))
    assert d.median == pytest.approx(np.median(vals))
    assert (d.min, d.max) == (0.0, 1.0)
    h = s["hd95"]
    assert (h.n, h.n_defined, h.n_undefined, h.n_inf, h.n_nan, h.n_missing) == (5, 2, 3, 1, 1, 1)
    assert h.mean == pytest.approx(3.0)
    assert h.median == pytest.approx(3.0)


def test_all_undefined_and_requested_missing_metric():
    s = summarize([{"hd": float("inf")}, {"hd": float("nan")}], metrics=["hd", "assd"])
    assert s["hd"].n_defined == 0 and s["hd"].n_undefined == 2 and math.isnan(s["hd"].mean)
    assert s["assd"].n_missing == 2 and s["assd"].n_undefined == 2
    one = summarize([{"dice": 0.5}])["dice"]
    assert one.mean == 0.5 and math.isnan(one.std)


def test_csv_round_trip_keeps_nan_and_inf(tmp_path):
    path = write_csv(ROWS, tmp_path / "sub" / "metrics.csv")
    back = read_csv(path)
    assert [r["case"] for r in back] == ["a", "b", "c", "d", "e"]
    assert back[1]["hd95"] == math.inf and math.isnan(back[2]["hd95"]) and back[3]["hd95"] is None
    s1, s2 = summarize(ROWS), summarize(back)
    for k in s1:
        assert s1[k].n_undefined == s2[k].n_undefined
        assert s1[k].mean == pytest.approx(s2[k].mean)


def test_read_csv_keeps_text_columns_and_strips_header(tmp_path):
    path = tmp_path / "m.csv"
    # a byte-order mark, padded header names, numeric-looking ids, a blank cell and a short row
    path.write_text("\ufeffcase_id , model,dice,hd95\n001,7,0.5,inf\n1e5,u, 0.25 ,  \n1,u,nan\n", encoding="utf-8")
    header, rows = read_csv_table(path, text_columns=("case_id", "model"))
    assert header == ["case_id", "model", "dice", "hd95"]
    assert [r["case_id"] for r in rows] == ["001", "1e5", "1"] and [r["model"] for r in rows] == ["7", "u", "u"]
    assert rows[0]["dice"] == 0.5 and rows[0]["hd95"] == math.inf and rows[1]["dice"] == 0.25
    assert rows[1]["hd95"] is None and math.isnan(rows[2]["dice"]) and rows[2]["hd95"] is None
    ids_only = read_csv(path, text_columns=("case_id",))
    assert [(r["case_id"], r["model"]) for r in ids_only] == [("001", 7.0), ("1e5", "u"), ("1", "u")]
    plain = read_csv(path)  # without text_columns ids that look like numbers become numbers
    assert [r["case_id"] for r in plain] == [1.0, 1e5, 1.0]
    (tmp_path / "head.csv").write_text("case_id,dice\n", encoding="utf-8")
    assert read_csv_table(tmp_path / "head.csv") == (["case_id", "dice"], [])
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    assert read_csv_table(tmp_path / "empty.csv") == ([], [])


def test_json_is_valid_and_text_table(tmp_path):
    s = summarize([*ROWS, {"case": "f", "dice": float("nan")}])
    path = write_summary_json(s, tmp_path / "summary.json", run="demo")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["run"] == "demo"
    assert data["metrics"]["hd95"]["n_undefined"] == 4
    assert data["metrics"]["dice"]["n_nan"] == 1
    text = format_summary(s)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "mean", "+/-", "std", "median", "n", "undefined"] and len(lines) == 3
    for line, name in zip(lines[1:], ["dice", "hd95"], strict=True):  # metric, mean +/- std, median, n, undefined
        m = s[name]
        want = [name, f"{m.mean:.4f}", "+/-", f"{m.std:.4f}", f"{m.median:.4f}", str(m.n), str(m.n_undefined)]
        assert line.split() == want
    assert lines[2].split()[-1] == "4"  # hd95: one inf, one nan and two rows without it are counted
