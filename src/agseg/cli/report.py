"""``agseg report RUN... --out report.html``: one self-contained HTML page of runs, CVs and comparisons."""

from __future__ import annotations

from pathlib import Path

import typer

from agseg.cli._common import fail


def report(
    runs: list[Path] = typer.Argument(
        ..., help="Run or CV directories, agseg compare folders, metrics CSVs, or folders of *metrics.csv files."
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    label: list[str] | None = typer.Option(
        None, "--label", "-l", help="Model name for each model found, in order (repeatable); default: from config/CSV."
    ),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric to show and test (repeatable); default: every metric common to the runs."
    ),
    units: str = typer.Option(
        "auto", help="Unit of HD/HD95/ASSD: auto (from the data: px for PNG/JPEG/TIFF/BMP, else mm), px, mm or none."
    ),
    title: str | None = typer.Option(None, help="Page title (default: the model names)."),
    figures: Path | None = typer.Option(
        None, "--figures", help="Also write every figure into this folder as PNG and SVG (for a paper)."
    ),
    gallery: int = typer.Option(3, help="Cases per model in the gallery (best, median, worst); 0: no gallery."),
    max_rows: int = typer.Option(1000, help="Most rows shown per per-case table (the rest are counted)."),
    attention: bool = typer.Option(
        True, "--attention/--no-attention", help="Predict the gates' maps of the gallery's median case (gated nets)."
    ),
    class_name: list[str] | None = typer.Option(
        None, "--class-name", help="VALUE=NAME for numbered class columns (dice_2) of CSVs without labels.json."
    ),
    digits: int = typer.Option(3, help="Significant figures in the tables."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and figure files) if they exist."),
) -> None:
    """Write one self-contained HTML report: what was run, learning curves, per-fold and per-case tables, the
    statistics (Kruskal-Wallis, Wilcoxon, Holm), box and paired plots, a gallery of the best, median and worst cases,
    attention maps; for classifiers a confusion matrix and ROC curves.

    The page embeds every image and refers to nothing else: it opens offline. Per-case CSVs alone make a report too
    (without learning curves or gallery). An existing --out is never replaced unless --overwrite is given."""
    from agseg.report.html import build_report, check_outputs, write_report

    names = {}
    for item in class_name or []:
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            fail(f"--class-name expects VALUE=NAME (e.g. 2=posterior), got {item!r}", 2)
        names[int(value)] = name.strip()
    check_outputs(out, runs, overwrite=overwrite)  # before any work
    rep = build_report(
        runs, labels=label or None, metrics=metric or None, units=units, title=title, gallery=gallery,
        max_rows=max_rows, attention=attention, digits=digits, svg=figures is not None, class_names=names,
    )  # fmt: skip
    written = write_report(rep, out, figures_dir=figures, overwrite=overwrite)
    for note in rep.notes:
        typer.echo(f"note: {note}", err=True)
    size = written[0].stat().st_size / 1024
    typer.echo(f"wrote {written[0]} ({size:.0f} kB, {len(rep.figures)} figures)")
    if figures is not None:
        typer.echo(f"wrote {len(written) - 1} figure file(s) (PNG + SVG) to {figures}")
