"""``agseg models``: list the registered nets, or show one net's parameters, FLOPs and output shapes."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from agseg.cli._common import parse_overrides
from agseg.nets.registry import get_model_spec, list_models
from agseg.nets.summary import paper_table1, parse_shape, summarize

console = Console()


def _fmt_count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".strip()


def models(
    name: str | None = typer.Argument(None, help="A registered model; omit to list them all."),
    input: str | None = typer.Option(None, "--input", "-i", help="Input shape B x C x spatial, e.g. 1x1x160x160x96."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a model argument, e.g. channels=16,32,64."),
    info: bool = typer.Option(
        False, "--info", help="Compare our param counts with seed 001 Table 1; with a shipped NAME: its provenance."
    ),
    shipped: bool = typer.Option(False, "--shipped", help="List the trained models shipped with agseg."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered models with parameter counts, or show one model's params, FLOPs and output shapes."""
    from agseg.inference.pretrained import list_pretrained

    if shipped or (name is not None and name in list_pretrained() and (info or name not in list_models())):
        _list_shipped(as_json, only=name)  # `agseg models cxr-lungs` and `--info cxr-lungs` mean the shipped one
        return
    if info and name is not None:
        typer.secho(f"error: --info prints seed 001 Table 1 and takes no net name ({name!r}); `agseg models {name}` "
                    "shows one net, `agseg models --shipped` the trained models", fg="red", err=True)  # fmt: skip
        raise typer.Exit(2)
    if info:
        rows = paper_table1()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="3D CT models (16-32-64-128-256, 1 -> 4 classes) vs seed 001 Table 1; input 1x1x160x160x96")
        for col in ("model", "params", "paper", "ratio to U-Net", "paper ratio", "forward FLOPs"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            table.add_row(
                r["model"],
                _fmt_count(r["params"]),
                _fmt_count(r["paper_params"]),
                f"{r['ratio_to_unet']:.3f}",
                f"{r['paper_ratio_to_unet']:.3f}",
                _fmt_count(r["flops"], "FLOP"),
            )
        console.print(table)
        return
    overrides = parse_overrides(set_)
    if name is None:
        rows = []
        for n in list_models():
            spec = get_model_spec(n)
            rows.append({"name": n, "task": spec.task, "params": summarize(n).params, "description": spec.description})
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="agseg models (parameters at the preset's defaults)")
        table.add_column("name")
        table.add_column("params", justify="right")
        table.add_column("description")
        for r in rows:
            table.add_row(r["name"], _fmt_count(r["params"]), r["description"])
        console.print(table)
        return
    try:
        shape = parse_shape(input) if input else None
        s = summarize(name, shape, **overrides)
    except (KeyError, ValueError, TypeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) else str(err)
        typer.secho(f"error: {msg}", fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2))
        return
    spec = get_model_spec(name)
    console.print(f"[bold]{name}[/bold]: {spec.description}")
    if spec.paper:
        console.print(f"  from: {spec.paper}")
    args = {**spec.defaults, **overrides}
    if args:
        console.print(f"  arguments: {args}")
    console.print(f"  parameters: {s.params:,} ({_fmt_count(s.params)})")
    if s.input_shape is not None:
        console.print(f"  input: {s.input_shape}")
        console.print(f"  forward FLOPs (eval): {s.flops:,} ({_fmt_count(s.flops, 'FLOP')})")
        console.print(f"  output (eval): {', '.join(map(str, s.output_shapes or []))}")
        if s.train_output_shapes != s.output_shapes:
            console.print(f"  output (train): {', '.join(map(str, s.train_output_shapes or []))}")


def _list_shipped(as_json: bool, only: str | None = None) -> None:
    from agseg.inference.pretrained import list_pretrained, pretrained_info

    rows = [{"name": n, **pretrained_info(n)} for n in list_pretrained() if only is None or n == only]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no trained models are shipped with this installation")
        return
    for r in rows:
        console.print(f"[bold]{r['name']}[/bold]: {r.get('task', '')}")
        for key, label in (("model", "net"), ("trained_on", "trained on"), ("cv_performance", "performance"),
                           ("licence", "licence")):  # fmt: skip
            if r.get(key):
                console.print(f"  {label}: {r[key]}")
    console.print("use: agseg predict --model NAME INPUT... --out DIR")
