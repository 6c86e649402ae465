"""``agseg data ...``: inspect datasets and write synthetic ones."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from agseg.data.datasets import inspect_dataset, list_layouts
from agseg.data.errors import DataError
from agseg.data.synthetic import KINDS, write_dataset

app = typer.Typer(help="Inspect datasets.", no_args_is_help=True, rich_markup_mode=None)
console = Console()
log = logging.getLogger(__name__)


@app.callback()
def _data() -> None:
    """Inspect datasets: layouts, shapes, spacings, labels, problems."""


def _options(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--option expects KEY=VALUE (YAML value), got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "x".join(_fmt(x) for x in v) if all(isinstance(x, int | float) for x in v) else str(v)
    return str(v)


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="Dataset folder, YAML descriptor, or CSV/JSON case list."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="List bad cases as skipped and exit 0."),
    layout: str | None = typer.Option(None, "--layout", help=f"Force a layout: {', '.join(list_layouts())}."),
    limit: int | None = typer.Option(None, "--limit", help="Inspect only the first N cases."),
    option: list[str] | None = typer.Option(None, "--option", "-o", help="Layout option KEY=VALUE, e.g. mask=OT*."),
) -> None:
    """Number of cases, shapes, spacings, intensities, label values and voxel counts, problems found.

    Exit code 1 when a case is bad (unreadable, truncated, mismatched, NaN, labels outside the map, duplicates),
    each named with its file; with --skip-bad they are listed as skipped and the exit code is 0.
    """
    try:
        report = inspect_dataset(path, layout, limit=limit, progress=not as_json, **_options(option))
    except (DataError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    problems = report["problems"]
    if skip_bad:
        report["skipped"] = report.pop("problems")
        report["problems"] = []
        if report["skipped"]:
            log.warning(
                "skipped %d bad case(s):\n  %s",
                len(report["skipped"]),
                "\n  ".join(f"{p['case_id']}: {p['path']}: {p['problem']}" for p in report["skipped"]),
            )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if problems and not skip_bad:
        for p in problems:
            typer.echo(f"error: {p['path']}: {p['problem']}", err=True)
        typer.echo(f"{len(problems)} bad case(s); rerun with --skip-bad to list them as skipped", err=True)
        raise typer.Exit(1)


def _print_report(r: dict[str, Any]) -> None:
    t = Table(title=f"{r['root']} (layout: {r['layout']})", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("cases", f"{r['n_cases']} ({r['n_labelled']} labelled, {r['n_unlabelled']} unlabelled)")
    t.add_row("dims / channels", f"{r['ndim']}D, channels {r['channels']}")
    sh = r["shapes"]
    t.add_row("shapes", f"{_fmt(sh['min'])} .. {_fmt(sh['max'])} ({sh['n_unique']} distinct)")
    sp = r["spacings"]
    t.add_row("spacing (z, y, x)", f"{_fmt(sp['min'])} .. {_fmt(sp['max'])} ({sp['n_unique']} distinct)")
    t.add_row("dtypes", ", ".join(f"{k}: {v}" for k, v in r["dtypes"].items()))
    for c, s in r["intensity"]["per_channel"].items():
        t.add_row(
            f"intensity ch {c}", f"[{_fmt(s['min'])}, {_fmt(s['max'])}], mean {_fmt(s['mean'])} sd {_fmt(s['std'])}"
        )
    t.add_row("label values", str(r["label_values"]))
    total = sum(r["label_counts"].values()) or 1
    counts = ", ".join(
        f"{k}: {v} ({100 * v / total:.2f}%) in {r['label_cases'][k]} cases" for k, v in r["label_counts"].items()
    )
    t.add_row("label voxels", counts)
    console.print(t)
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    for s in r.get("skipped", []):
        console.print(f"[yellow]skipped:[/yellow] {s['case_id']}: {s['path']}: {s['problem']}", highlight=False)


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Folder to write."),
    kind: str = typer.Option("cxr", "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    n: int = typer.Option(8, "-n", help="Number of cases."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    size: str | None = typer.Option(None, "--size", help="2D side (e.g. 256) or 3D shape DxHxW (e.g. 24x40x40)."),
    fmt: str = typer.Option(
        "nii.gz", "--format", help="3D file format for --kind volumes: nii.gz, nii, mha, mhd, nrrd."
    ),
) -> None:
    """Write a synthetic dataset (chest-like phantoms or 3D phantoms with masks) in a real layout and format."""
    if kind not in KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(KINDS)}")
    parsed: Any = None
    if size:
        dims = [int(s) for s in size.lower().split("x")]
        parsed = dims[0] if len(dims) == 1 else tuple(dims)
    root = write_dataset(out, kind, n, seed=seed, size=parsed, fmt=fmt)
    console.print(f"wrote {n} synthetic '{kind}' case(s) to {root}")
