"""``agseg compare RUN [RUN ...]``: per-model metric tables, Kruskal-Wallis and paired Wilcoxon tests, box plots."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

from agseg.experiments.compare import compare_runs, load_runs, to_markdown, write_comparison

console = Console()


def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with metrics.csv) or metrics CSV files."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric to compare (repeatable); default: every metric common to the runs."
    ),
    label: list[str] | None = typer.Option(
        None, "--label", "-l", help="Model name for each run, in order (repeatable); default: from config/CSV."
    ),
    group: str | None = typer.Option(
        None,
        "--group",
        help="Classifiers: also the metrics per group of cases, the group being what this regex "
        "finds in the case id (its first group), e.g. '^(MCU|CHN)' for the two sources of the chest X-rays.",
    ),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="Folder for the tables and plots."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write one box plot per metric."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier comparison in --out."),
) -> None:
    """Compare runs: mean ± std (median) per model, Kruskal-Wallis and paired Wilcoxon p-values, box plots.

    Writes summary.csv, pairwise.csv, compare.md and boxplot_<metric>.png into --out; an earlier comparison there is
    never replaced unless --overwrite is given.
    """
    from agseg.experiments.compare import comparison_outputs

    earlier = comparison_outputs(out)
    if earlier and not overwrite:  # before any work
        typer.secho(f"error: {earlier[0]}: exists already: not overwritten (pass --overwrite to replace the "
                    f"comparison in {out}, or choose another --out)", fg="red", err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        loaded = [run for path in runs for run in load_runs(path)]
        comparison = compare_runs(loaded, metrics=metric or None, labels=label or None, group=group)
        written = write_comparison(comparison, out, plots=plots, overwrite=overwrite)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    md = to_markdown(comparison)
    if console.is_terminal:
        console.print(Markdown(md))
    else:
        typer.echo(md)
    if len(comparison.runs) < 2:
        typer.echo("note: only one model given; pairwise tests need at least two runs.", err=True)
    typer.echo(f"wrote {len(written)} file(s) to {out}", err=True)
