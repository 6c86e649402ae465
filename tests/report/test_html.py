"""``agseg report``: one self-contained HTML page of runs, CVs, comparisons and per-case CSVs."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agseg.cli import app
from agseg.experiments.compare import compare_runs, write_comparison
from agseg.report import figures as F
from agseg.report.html import build_report, fmt, metric_label, write_report
from agseg.report.tables import format_p

REPO = Path(__file__).resolve().parents[2]
CXR = REPO / "docs" / "results" / "cxr_lungs"
CXR_CSVS = [CXR / f"{m}_metrics.csv" for m in ("unet", "attention_single", "attention_multi")]
CXR_LABELS = ["U-Net", "single-gating AU-Net", "multi-gating AU-Net"]

runner = CliRunner()


def assert_self_contained(page: str) -> None:
    """No reference to anything outside the page: no URL, no protocol-relative source, no linked file, no import,
    no script or style loaded from a file; every image a data URI."""
    low = page.lower()
    for bad in ("http://", "https://", 'src="//', "src='//", "@import", "<link", "url(", "<script src", "file:"):
        assert bad not in low, f"external reference {bad!r} in the report"
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert sources, "the report has no images"
    assert all(s.startswith("data:image/png;base64,") for s in sources)


def decoded_images(page: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        out.append(im)
    return out


def figure(report, prefix: str) -> list[F.FigureFile]:
    return [f for f in report.figures if f.name.startswith(prefix)]


# ------------------------------------------------------------------------------------------------- formatting


def test_fixed_significant_figures_and_metric_labels():
    assert [fmt(x) for x in (0.96049, 13.0, 0.0004442, 24.54, 1234.6, 0.0, math.nan, math.inf, None)] == [
        "0.960", "13.0", "0.000444", "24.5", "1235", "0", "n/a", "inf", "n/a"
    ]  # fmt: skip
    assert fmt(0.96049, 4) == "0.9605" and fmt(1.5e-7) == "1.50e-7"
    assert metric_label("hd95", "px") == "HD95 (px)"
    assert metric_label("hd95_posterior", "mm") == "HD95, posterior (mm)"
    assert metric_label("dice_2", None, {2: "posterior"}) == "Dice, posterior"
    assert metric_label("dice", "mm", per_class=True) == "Dice, mean over classes"  # no unit on an overlap metric
    assert metric_label("correct") == "accuracy"


# ------------------------------------------------------------------------------------------------- from CSVs alone


def test_a_report_from_per_case_csvs_alone(tmp_path):
    rep = build_report(CXR_CSVS, labels=CXR_LABELS, units="px")
    page = rep.html
    assert_self_contained(page)
    assert rep.sections[:4] == ["run", "results", "plots", "statistics"]
    # the statistics are compare_runs' on the same CSVs, shown with compare.md's p-value format
    cmp = compare_runs(CXR_CSVS, labels=CXR_LABELS)
    p = cmp.pair("dice", "U-Net", "multi-gating AU-Net")
    assert p["n_pairs"] == 400 and format_p(p["wilcoxon_p"]) in page and format_p(p["wilcoxon_p_holm"]) in page
    assert f"p = {format_p(cmp.omnibus['dice'][1])}" in page
    assert "HD95 (px)" in page and "Wilcoxon" in page and "Holm" in page
    # the page says what it cannot show, and why
    assert "run directories are gone" in page
    assert "no learning curves for U-Net, single-gating AU-Net, multi-gating AU-Net" in page
    assert not figure(rep, "case_") and not figure(rep, "curves_") and not figure(rep, "attention")
    # one box plot and one paired plot per metric, every one a real image
    for m in cmp.metrics:
        names = {f.name: f for f in rep.figures}
        assert f"box_{m}" in names and names[f"paired_{m}"].meta == {"cases": 400, "models": 3}
    images = decoded_images(page)
    assert len(images) == len(rep.figures) == 2 * len(cmp.metrics)
    assert all(im.width >= 600 for im in images)
    # the per-case tables hold every row (400 per model), collapsed
    assert page.count("<details><summary>") >= 3 and "400 case rows" in page
    assert len(page.encode()) < 2_000_000


def test_a_folder_of_csvs_and_a_compare_folder(tmp_path, monkeypatch):
    rep = build_report([CXR])
    assert [s.label for s in rep.sources] == ["cxr_attention_multi", "cxr_attention_single", "cxr_unet"]
    assert "distance units (px or mm) are not recorded" in rep.html  # units unknown: said, not guessed
    # a compare folder whose runs can be found: the runs are loaded again, with the labels compare.md gave them
    runs = tmp_path / "runs"
    for csv_path, name in zip(CXR_CSVS, ("unet", "single", "multi"), strict=True):
        (runs / name).mkdir(parents=True)
        shutil.copy(csv_path, runs / name / "metrics.csv")
    monkeypatch.chdir(tmp_path)
    cmp = compare_runs([runs / "unet", runs / "multi"], labels=["U-Net", "multi"], metrics=["dice", "hd95"])
    write_comparison(cmp, runs / "compare", plots=False)
    rep = build_report([runs / "compare"])
    assert [s.label for s in rep.sources] == ["U-Net", "multi"] and figure(rep, "paired_dice")
    assert format_p(cmp.pair("dice", "U-Net", "multi")["wilcoxon_p"]) in rep.html
    # the runs are gone: the saved tables are shown, and the page says the plots need the runs
    shutil.rmtree(runs / "unet")
    rep = build_report([runs / "compare"])
    assert not rep.sources and "were not found" in rep.html and "Saved comparison" in rep.html
    assert format_p(cmp.pair("dice", "U-Net", "multi")["wilcoxon_p"]) in rep.html


# ------------------------------------------------------------------------------------------------- from CV directories


@pytest.fixture(scope="module")
def cv_report(seg_cvs):
    return build_report([seg_cvs["unet"], seg_cvs["attention"]], labels=["U-Net", "Attention U-Net"])


def test_a_cv_report_has_what_was_run_curves_tables_statistics_gallery_and_attention(cv_report, seg_cvs):
    rep, page = cv_report, cv_report.html
    assert_self_contained(page)
    assert rep.sections == ["run", "results", "plots", "statistics", "curves", "gallery", "attention", "notes"]
    # what was run: the resolved config, the data, the label set, versions and wall time
    for text in ("resolved config (config.yaml)", "10 labelled cases; png; 2D, size 64×64", "counted over 10 cases",
                 "torch 2.", "s training over 2 run(s)", "2-fold × 1 repeat(s)", "parameters"):  # fmt: skip
        assert text in page, text
    # units from the data (PNG: pixels), per-fold rows, statistics of compare_runs
    assert "HD95 (px)" in page and rep.comparison is not None
    p = rep.comparison.pair("dice", "U-Net", "Attention U-Net")
    assert format_p(p["kw_p"]) in page and format_p(p["wilcoxon_p"]) in page
    assert page.count("<td>U-Net</td><td>0</td><td>") == 2  # two folds of repeat 0
    # learning curves: one figure per model, one line pair per fold
    assert [f.meta["folds"] for f in figure(rep, "curves_")] == [2, 2]
    # gallery: best, median and worst of each model, from the saved predictions, with errors in colour
    cases = figure(rep, "case_")
    assert [re.search(r"_(best|median|worst)_", f.name).group(1) for f in cases] == ["best", "median", "worst"] * 2
    assert all(f.meta["planes"] == 1 for f in cases)
    assert any(f.meta["false_positives"] for f in cases) and any(f.meta["false_negatives"] for f in cases)
    # attention: the recorded snapshots (per gate, and over the epochs) and the median case's maps
    evo = figure(rep, "attention_evolution_")
    assert len(evo) == 1 and evo[0].meta["epochs"][0] == 1 and evo[0].meta["epochs"][-1] == 10
    assert figure(rep, "attention_Attention_U-Net_epoch_10") and figure(rep, "attention_Attention_U-Net_SYNC")
    assert "No attention maps: the net has no gates" in page  # the U-Net's section says why it has none
    assert all(im.width > 100 for im in decoded_images(page))


def test_the_gallery_shows_the_cases_the_metrics_rank(cv_report):
    rep = cv_report
    src = rep.sources[1]
    dice = src.run.values["dice"]
    best, worst = src.run.case_id[int(np.argmax(dice))], src.run.case_id[int(np.argmin(dice))]
    names = [f.name for f in figure(rep, "case_Attention")]
    assert names[0].endswith(best) and names[-1].endswith(worst)


def test_figures_for_a_paper_png_and_svg(seg_cvs, tmp_path):
    rep = build_report([seg_cvs["attention"]], svg=True, gallery=1)
    out = tmp_path / "figs"
    written = write_report(rep, tmp_path / "r.html", figures_dir=out)
    assert written[0] == tmp_path / "r.html"
    pngs, svgs = sorted(out.glob("*.png")), sorted(out.glob("*.svg"))
    assert len(pngs) == len(svgs) == len(rep.figures) > 3
    for svg in svgs:
        root = ElementTree.parse(svg).getroot()
        assert root.tag.endswith("svg")
    with Image.open(pngs[0]) as im:  # 200 dpi at a column (3.5 in) or page (7.16 in) width
        assert im.width in range(600, 1500)
    # nothing is written over: the page and the figure files are both refused without overwrite
    from agseg.data.errors import DataError

    with pytest.raises(DataError, match="exists already"):
        write_report(rep, tmp_path / "r.html", figures_dir=out)
    with pytest.raises(DataError, match="figure file"):
        write_report(rep, tmp_path / "other.html", figures_dir=out)
    assert not (tmp_path / "other.html").exists()
    write_report(rep, tmp_path / "r.html", figures_dir=out, overwrite=True)


def test_a_moved_dataset_leaves_out_the_gallery_and_says_why(seg_cvs, tmp_path):
    cv = tmp_path / "cv"
    shutil.copytree(seg_cvs["attention"], cv)
    data = str(Path(seg_cvs["attention"]).parent / "data")
    for cfg in cv.rglob("config.yaml"):
        cfg.write_text(cfg.read_text(encoding="utf-8").replace(data, str(tmp_path / "gone")), encoding="utf-8")
    rep = build_report([cv])
    assert not figure(rep, "case_") and figure(rep, "curves_") and figure(rep, "attention_evolution")
    assert "3 gallery case(s) left out" in rep.html and "dataset path not found" in rep.html
    assert "HD95 (px)" not in rep.html and "give --units px or --units mm" in rep.html
    assert "HD95 (px)" in build_report([cv], units="px").html


def test_class_names_for_numbered_columns(seg_cv_3d):
    rep = build_report([seg_cv_3d], class_names={1: "anterior", 2: "posterior"}, gallery=0, attention=False)
    assert "Dice, anterior" in rep.html and "HD95, posterior (mm)" in rep.html and "gallery" not in rep.sections


def test_a_3d_cv_gets_three_orthogonal_planes(seg_cv_3d):
    rep = build_report([seg_cv_3d])
    assert_self_contained(rep.html)
    cases = figure(rep, "case_")
    assert len(cases) == 3 and all(f.meta["planes"] == 3 for f in cases)
    assert "three orthogonal mid-planes" in rep.html
    assert "HD95, 1 (mm)" in rep.html  # NIfTI: distances in mm; per-class columns named
    att = figure(rep, "attention_")
    assert att and att[0].meta["planes"] == 3


def test_a_classifier_report_has_a_confusion_matrix_roc_and_per_class_metrics(cls_cv):
    from sklearn.metrics import roc_auc_score

    from agseg.metrics import read_csv

    rep = build_report([cls_cv])
    page = rep.html
    assert_self_contained(page)
    assert "classification" in rep.sections and "gallery" not in rep.sections
    assert figure(rep, "confusion_cls")[0].meta == {"classes": 2}
    assert figure(rep, "roc_cls")[0].meta == {"curves": 1}
    rows = read_csv(cls_cv / "metrics.csv")
    auc = roc_auc_score([r["target"] for r in rows], [r["prob_square"] for r in rows])
    assert f"<td>{fmt(auc)}</td>" in page  # the AUC in the per-class table is scikit-learn's
    acc = np.mean([r["correct"] for r in rows])
    assert f"Accuracy {fmt(acc)}" in page
    assert "1: square" in page and "0: normal" in page


# ------------------------------------------------------------------------------------------------- honest scales


def test_a_flat_attention_map_is_drawn_flat_not_stretched():
    image = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    ramp = np.linspace(0.2, 0.8, 32 * 32, dtype=np.float32).reshape(1, 32, 32)
    fig = F.attention_figure(image, {"open": np.full((1, 32, 32), 0.95, np.float32), "ramp": ramp}, "t", "t")
    assert fig.meta["flat"] == ["open"]
    assert fig.meta["ranges"]["ramp"] == pytest.approx((0.2, 0.8), abs=1e-6)
    evo = F.attention_evolution_figure(image, [(1, {"g": np.full((1, 32, 32), 0.95)}), (2, {"g": ramp})], "t", "e")
    assert evo.meta["flat"] == []  # over its epochs the gate spans 0.2..0.95: one shared scale
    evo = F.attention_evolution_figure(image, [(e, {"g": np.full((1, 32, 32), 0.95)}) for e in (1, 2)], "t", "e")
    assert evo.meta["flat"] == ["g"]


# ------------------------------------------------------------------------------------------------- the command


def test_the_command_writes_once_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "report.html"
    args = ["report", *map(str, CXR_CSVS), "--out", str(out), "--units", "px"]
    for lab in CXR_LABELS:
        args += ["--label", lab]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output and out.is_file()
    first = out.read_bytes()
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "exists already" in res.output and out.read_bytes() == first
    res = runner.invoke(app, [*args, "--overwrite", "--title", "again"])
    assert res.exit_code == 0 and b"<title>again</title>" in out.read_bytes()
    res = runner.invoke(app, ["report", str(CXR_CSVS[0]), "--out", str(CXR_CSVS[0])])
    assert res.exit_code == 1 and "overwrite the input" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 1 and "nothing" in res.output and not (tmp_path / "x.html").exists()
    res = runner.invoke(app, [*args[:4], "--label", "one", "--out", str(tmp_path / "y.html")])
    assert res.exit_code == 1 and "1 label(s) given for 3 model(s)" in res.output
