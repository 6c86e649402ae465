"""Compare: loading runs, summaries with undefined values, KW / Wilcoxon against SciPy, Holm, outputs, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from agseg.cli.compare import compare as compare_cmd
from agseg.data.errors import DataError
from agseg.experiments.compare import (
    compare_runs,
    format_p,
    holm,
    load_run,
    load_runs,
    write_comparison,
)

N_CASES, N_REPEATS, N_FOLDS = 20, 2, 5


def _write_run(
    root: Path, name: str, dice: np.ndarray, hd95: np.ndarray | None = None, config: str | None = None
) -> Path:
    """A run dir with metrics.csv; ``dice``/``hd95`` have shape (N_REPEATS, N_CASES)."""
    run = root / name
    run.mkdir(parents=True)
    with (run / "metrics.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "repeat", "fold", "case_id", "dice", "hd95", "image"])
        for r in range(N_REPEATS):
            for i in range(N_CASES):
                h = hd95[r, i] if hd95 is not None else 1.0
                w.writerow(
                    [name, r, (i + r) % N_FOLDS, f"case{i:02d}", repr(float(dice[r, i])), repr(float(h)), "x.png"]
                )
    if config is not None:
        (run / "config.yaml").write_text(config, encoding="utf-8")
    return run


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(0.85, 0.03, (N_REPEATS, N_CASES))
    good = base + 0.05 + rng.normal(0, 0.01, base.shape)
    hd_base = rng.normal(5, 1, base.shape)
    hd_base[0, 3] = np.inf
    hd_base[1, 7] = np.nan
    a = _write_run(tmp_path, "unet", base, hd_base)
    b = _write_run(tmp_path, "attn", good, hd_base - 1, config="name: attention_multi\n")
    return a, b, base, good, hd_base


def test_load_run_label_and_columns(runs):
    a, b, base, *_ = runs
    ra, rb = load_run(a), load_run(b)
    assert ra.label == "unet"  # model column
    assert rb.label == "attention_multi"  # config.yaml name wins
    assert ra.metrics == ["dice", "hd95"]  # non-numeric "image" ignored; repeat/fold are not metrics
    assert len(ra) == N_REPEATS * N_CASES
    np.testing.assert_allclose(ra.values["dice"], base.ravel())
    assert load_run(a / "metrics.csv").label == "unet"  # a CSV path works too


def test_summary_counts_undefined_and_fold_means(runs):
    a, b, base, _, hd = runs
    cmp = compare_runs([a, b])
    s = cmp.summary_row("unet", "hd95")
    assert s["n"] == 40 and s["n_undefined"] == 2 and s["n_inf"] == 1 and s["n_nan"] == 1
    finite = hd[np.isfinite(hd)]
    assert s["mean"] == pytest.approx(finite.mean())
    assert s["std"] == pytest.approx(finite.std(ddof=1))
    assert s["median"] == pytest.approx(np.median(finite))
    d = cmp.summary_row("unet", "dice")
    assert d["n_undefined"] == 0 and d["n_folds"] == N_REPEATS * N_FOLDS
    folds = np.asarray([(i + r) % N_FOLDS for r in range(N_REPEATS) for i in range(N_CASES)])
    reps = np.repeat(np.arange(N_REPEATS), N_CASES)
    means = [base.ravel()[(reps == r) & (folds == k)].mean() for r in range(N_REPEATS) for k in range(N_FOLDS)]
    assert d["fold_mean"] == pytest.approx(np.mean(means))
    assert d["fold_std"] == pytest.approx(np.std(means, ddof=1))


def test_pvalues_match_scipy_and_are_symmetric(runs):
    a, b, base, good, _ = runs
    ab = compare_runs([a, b], labels=["A", "B"]).pair("dice", "A", "B")
    ba = compare_runs([b, a], labels=["B", "A"]).pair("dice", "A", "B")
    ref_kw = stats.kruskal(base.ravel(), good.ravel()).pvalue
    ref_w = stats.wilcoxon(base.ravel() - good.ravel()).pvalue
    assert ab["kw_p"] == pytest.approx(ref_kw, rel=1e-12) and ab["wilcoxon_p"] == pytest.approx(ref_w, rel=1e-12)
    assert ab["kw_p"] < 1e-3 and ab["wilcoxon_p"] < 1e-3
    assert ba["kw_p"] == pytest.approx(ab["kw_p"]) and ba["wilcoxon_p"] == pytest.approx(ab["wilcoxon_p"])
    assert ab["median_diff"] == pytest.approx(-ba["median_diff"]) and ab["median_diff"] < 0
    assert ab["n_pairs"] == N_REPEATS * N_CASES


def test_undefined_values_left_out_of_tests_and_counted(runs):
    a, b, _, _, hd = runs
    row = compare_runs([a, b]).pair("hd95", "unet", "attention_multi")
    ok = np.isfinite(hd).ravel()
    assert row["n_pairs"] == ok.sum() and row["n_pairs_undefined"] == 2 and row["n_a"] == ok.sum()
    ref = stats.wilcoxon(hd.ravel()[ok] - (hd.ravel()[ok] - 1)).pvalue
    assert row["wilcoxon_p"] == pytest.approx(ref)
    assert row["kw_p"] == pytest.approx(stats.kruskal(hd.ravel()[ok], hd.ravel()[ok] - 1).pvalue)


def test_identical_runs_give_p_one(tmp_path):
    x = np.random.default_rng(1).normal(0.9, 0.02, (N_REPEATS, N_CASES))
    a, b = _write_run(tmp_path, "a", x), _write_run(tmp_path, "b", x)
    row = compare_runs([a, b]).pair("dice", "a", "b")
    assert row["kw_p"] == pytest.approx(1.0) and row["wilcoxon_p"] == pytest.approx(1.0)
    assert row["median_diff"] == 0
    const = compare_runs([a, b]).pair("hd95", "a", "b")  # every value 1.0: tests degenerate, p set to 1
    assert const["kw_p"] == 1.0 and const["wilcoxon_p"] == 1.0 and "identical" in const["note"]


def test_no_common_cases_gives_nan_wilcoxon_with_note(tmp_path):
    a = _write_run(tmp_path, "a", np.full((N_REPEATS, N_CASES), 0.8))
    b = _write_run(tmp_path, "b", np.full((N_REPEATS, N_CASES), 0.9))
    header, body = (b / "metrics.csv").read_text(encoding="utf-8").split("\n", 1)
    text = header + "\n" + body.replace(",case", ",other")
    (b / "metrics.csv").write_text(text, encoding="utf-8")
    row = compare_runs([a, b], metrics=["dice"]).pair("dice", "a", "b")
    assert math.isnan(row["wilcoxon_p"]) and row["n_pairs"] == 0 and "no common" in row["note"]
    assert row["kw_p"] < 1e-6


def test_holm_known_answer_and_three_models(runs, tmp_path):
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = holm([0.5, float("nan"), 0.2])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.5) and out[2] == pytest.approx(0.4)
    a, b, base, *_ = runs
    c = _write_run(tmp_path, "third", base + 0.01)
    cmp = compare_runs([a, b, c], metrics=["dice"])
    rows = [r for r in cmp.pairwise if r["metric"] == "dice"]
    assert len(rows) == 3
    np.testing.assert_allclose([r["wilcoxon_p_holm"] for r in rows], holm([r["wilcoxon_p"] for r in rows]))
    assert not math.isnan(cmp.omnibus["dice"][1])


def test_single_run_and_bad_inputs(runs, tmp_path):
    a, *_ = runs
    one = compare_runs([a])
    assert one.pairwise == [] and "at least two" in one.notes[0]
    with pytest.raises(ValueError, match="no metric"):
        compare_runs([a], metrics=["nope"])
    with pytest.raises(ValueError, match="label"):
        compare_runs([a, a], labels=["x"])
    with pytest.raises(FileNotFoundError, match="missing"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        load_run(tmp_path / "empty")
    (tmp_path / "nometric.csv").write_text("model,repeat,fold,case_id,image\nm,0,0,c1,x.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no numeric metric"):
        load_run(tmp_path / "nometric.csv")
    (tmp_path / "dup.csv").write_text("model,repeat,fold,case_id,dice\nm,0,0,c1,0.5\nm,0,1,c1,0.6\n", encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        load_run(tmp_path / "dup.csv")


def test_numeric_looking_case_ids_stay_distinct_strings(tmp_path):
    # "001" and "1" are different cases: read as numbers they would collide (a duplicate) or pair wrongly
    rows_a = [("001", 0.9), ("1", 0.5), ("010", 0.7), ("1e1", 0.6)]
    rows_b = [("1e1", 0.1), ("010", 0.2), ("1", 0.3), ("001", 0.4)]
    for name, rows in (("a", rows_a), ("b", rows_b)):
        text = "model,repeat,fold,case_id,dice\n" + "".join(f"{name},0,0,{c},{v}\n" for c, v in rows)
        (tmp_path / f"{name}.csv").write_text(text, encoding="utf-8")
    ra = load_run(tmp_path / "a.csv")
    assert ra.case_id == ["001", "1", "010", "1e1"]
    row = compare_runs([tmp_path / "a.csv", tmp_path / "b.csv"]).pair("dice", "a", "b")
    diffs = np.array([0.9 - 0.4, 0.5 - 0.3, 0.7 - 0.2, 0.6 - 0.1])  # paired by id string, not by row order
    assert row["n_pairs"] == 4 and row["mean_diff"] == pytest.approx(diffs.mean())
    assert row["median_diff"] == pytest.approx(np.median(diffs))


def test_multi_model_csv_and_duplicate_labels(tmp_path):
    (tmp_path / "all.csv").write_text(
        "model,repeat,fold,case_id,dice\n"
        + "".join(f"{m},0,{i % 2},c{i},{v + i / 100}\n" for m, v in (("u", 0.5), ("g", 0.7)) for i in range(6)),
        encoding="utf-8",
    )
    runs = load_runs(tmp_path / "all.csv")
    assert [r.label for r in runs] == ["u", "g"]
    cmp = compare_runs([tmp_path / "all.csv"])
    assert cmp.pair("dice", "u", "g")["n_pairs"] == 6
    x = np.full((N_REPEATS, N_CASES), 0.5)
    a, b = _write_run(tmp_path / "r1", "same", x), _write_run(tmp_path / "r2", "same", x)
    labels = compare_runs([a, b]).labels
    assert len(set(labels)) == 2


def test_write_comparison_files_and_markdown(runs, tmp_path):
    a, b, *_ = runs
    cmp = compare_runs([a, b])
    paths = write_comparison(cmp, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["boxplot_dice.png", "boxplot_hd95.png", "compare.md", "pairwise.csv", "summary.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "out" / "boxplot_dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob("*.tmp"))
    md = (tmp_path / "out" / "compare.md").read_text(encoding="utf-8")
    row = cmp.pair("dice", "unet", "attention_multi")
    assert format_p(row["kw_p"]) in md and format_p(row["wilcoxon_p"]) in md
    assert "Kruskal-Wallis p" in md and "Wilcoxon p" in md and "[2/40 undefined]" in md
    # sources outside the working directory show as their last two parts, never as a machine path
    assert str(tmp_path) not in md and f"| {a.name}/metrics.csv |" in md
    with (tmp_path / "out" / "pairwise.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[0]["kw_p"]) == pytest.approx(row["kw_p"])
    with (tmp_path / "out" / "summary.csv").open(encoding="utf-8") as fh:
        srows = list(csv.DictReader(fh))
    assert len(srows) == 4 and {r["model"] for r in srows} == {"unet", "attention_multi"}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(compare_cmd)
    return app


def test_cli_writes_outputs_and_fails_on_missing_dir(runs, tmp_path):
    a, b, *_ = runs
    runner = CliRunner()
    out = tmp_path / "cmp"
    res = runner.invoke(
        _app(), [str(a), str(b), "--metric", "dice", "--label", "U", "--label", "AG", "--out", str(out), "--no-plots"]
    )
    assert res.exit_code == 0, res.output
    assert "Kruskal-Wallis" in res.output and "| U | AG |" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["compare.md", "pairwise.csv", "summary.csv"]
    missing = tmp_path / "nope"
    res = runner.invoke(_app(), [str(a), str(missing), "--out", str(tmp_path / "cmp2")])
    assert res.exit_code != 0 and str(missing) in res.output


def test_an_earlier_comparison_is_kept_unless_overwrite_and_then_nothing_stale_stays(runs, tmp_path):
    a, b, *_ = runs
    write_comparison(compare_runs([a, b]), tmp_path / "out")
    before = (tmp_path / "out" / "compare.md").read_bytes()
    only_dice = compare_runs([a, b], metrics=["dice"])
    # was: written over without a word, the hd95 box plot of the earlier comparison left beside the new tables
    with pytest.raises(DataError, match="exists already: not overwritten"):
        write_comparison(only_dice, tmp_path / "out")
    assert (tmp_path / "out" / "compare.md").read_bytes() == before
    from agseg.cli import app as agseg_app

    res = CliRunner().invoke(agseg_app, ["compare", str(a), str(b), "-m", "dice", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "--overwrite" in res.output
    names = sorted(p.name for p in write_comparison(only_dice, tmp_path / "out", overwrite=True))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # boxplot_hd95.png is gone


def test_group_on_segmentation_runs_says_it_does_nothing(runs):
    cmp = compare_runs(list(runs)[:2], group="^(a|b)")
    assert not cmp.classifier_groups and any("--group applies to classifier runs only" in n for n in cmp.notes)
