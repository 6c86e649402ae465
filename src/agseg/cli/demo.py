"""``agseg demo``: U-Net vs Attention U-Net cross-validation on phantoms it makes, with statistics."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown

console = Console()


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for data, runs and the comparison."),
    fast: bool = typer.Option(False, "--fast", help="The same pipeline, smaller: under a minute (for tests)."),
    seed: int = typer.Option(0, help="Seed for the phantoms, splits and training."),
) -> None:
    """Make chest-X-ray phantoms, cross-validate U-Net vs Attention U-Net(s), print the comparison and write the HTML
    report (report.html)."""
    from agseg.experiments.demo import demo_settings, run_demo

    s = demo_settings(fast)
    console.print(
        f"[bold]agseg demo[/bold]: {s['n']} synthetic chest X-rays at {s['image']}x{s['image']}, "
        f"{s['folds']}-fold CV of {', '.join(s['models'])}, {s['epochs']} epochs each -> {out}"
    )
    res = run_demo(out, fast=fast, seed=seed)
    console.print(Markdown(res.markdown) if console.is_terminal else res.markdown)
    console.print(f"\nfinished in {res.seconds:.0f} s. Explore {out}/:")
    console.print("  compare/            compare.md, summary.csv, pairwise.csv, boxplot_*.png")
    for key, run in res.runs.items():
        console.print(
            f"  {run.name}/{' ' * max(1, 18 - len(run.name))}{key}: splits.json, metrics.csv, summary.json, folds"
        )
    if res.attention_figure is not None:
        console.print(f"  {res.attention_figure.name}  where the multi-gating net looks on a test case")
    if res.report is not None:
        console.print(f"  {res.report.name}         everything above on one page: open it in a browser")
    console.print(
        f"  next: agseg predict {out}/data/cxr --run {out}/attention_multi --out preds --attention"
        "   (the ensemble of the CV's folds)"
    )
    if res.report is not None:
        typer.echo(f"report: {res.report}")
