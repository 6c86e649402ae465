"""``agseg evaluate``: per-case metrics (CSV) and summary (JSON) for a folder of predictions vs references."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agseg.cli._common import parse_axes
from agseg.data.errors import DataError
from agseg.metrics import DEFAULT_METRICS

console = Console()


def evaluate(
    pred: Path | None = typer.Option(None, "--pred", help="Folder of predicted masks."),
    ref: Path | None = typer.Option(None, "--ref", help="Folder of reference masks (paired by file name)."),
    run: Path | None = typer.Option(
        None, "--run", help="Instead of --pred/--ref: re-evaluate the saved test predictions of an `agseg cv` folder."
    ),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Where metrics.csv and summary.json go."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metric to compute (repeatable); default: " + ", ".join(DEFAULT_METRICS) + "."
    ),
    labels: str = typer.Option("auto", help="'auto', 'binary', or comma-separated label values, e.g. 1,2."),
    ref_threshold: str = typer.Option(
        "auto",
        help="Binarise references as value > T; 'auto': 8-bit masks whose maximum is 255 (binary or anti-aliased "
        "PNG) as value > 127, others as labels; 'none': values are labels.",
    ),
    pred_suffix: str = typer.Option("", help="Suffix of prediction file names to ignore when pairing (e.g. _pred)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace metrics.csv / summary.json already in --out."),
    repredict: bool = typer.Option(
        False,
        "--repredict",
        help="With --run: predict the test cases again with each fold's model (see --mirror-axes).",
    ),
    mirror_axes: str | None = typer.Option(
        None, "--mirror-axes", help="With --repredict: test-time mirroring axes, e.g. 1 or 0,1,2; 'none' for none."
    ),
    postprocess: bool = typer.Option(
        False, "--postprocess", help="With --repredict: apply the CV's postprocessing.json decision."
    ),
) -> None:
    """Per-case metrics, their summary (mean, std, median, undefined counts) and the pooled (dataset-level) overlap,
    for masks in two folders or for the saved test predictions of a CV run."""
    from agseg.experiments.evaluate import evaluate_folders, evaluate_run
    from agseg.metrics import DEFAULT_METRICS, list_metrics

    if (run is not None and (pred is not None or ref is not None)) or (run is None and (pred is None or ref is None)):
        typer.secho("error: give either --pred and --ref, or --run", fg="red", err=True)
        raise typer.Exit(2)
    metrics = list(metric or DEFAULT_METRICS)
    bad = [m for m in metrics if m not in list_metrics()]
    if bad:
        typer.secho(f"error: unknown metric(s) {bad}; valid: {', '.join(list_metrics())}", fg="red", err=True)
        raise typer.Exit(2)
    lab: list[int] | str | None = {"auto": "auto", "binary": None}.get(labels, labels)
    if isinstance(lab, str) and lab != "auto":
        try:
            lab = [int(v) for v in lab.split(",")]
        except ValueError:
            typer.secho(
                f"error: --labels must be auto, binary or integers like 1,2; got {labels!r}", fg="red", err=True
            )
            raise typer.Exit(2) from None
    threshold: float | str | None = ref_threshold.strip().lower()
    if threshold == "none":
        threshold = None
    elif threshold != "auto":
        try:
            threshold = float(ref_threshold)
        except ValueError:
            typer.secho(f"error: --ref-threshold must be auto, none or a number; got {ref_threshold!r}", fg="red",
                        err=True)  # fmt: skip
            raise typer.Exit(2) from None
    existing = [p for p in (out / "metrics.csv", out / "summary.json") if p.exists()]
    if existing and not overwrite:
        typer.secho(f"error: {existing[0]}: exists already: not overwritten (pass --overwrite, or another --out)",
                    fg="red", err=True)  # fmt: skip
        raise typer.Exit(1)
    for folder in (pred, ref):
        if folder is not None and out.resolve() == Path(folder).resolve():
            typer.secho(f"error: --out {out} is the --pred/--ref folder; write the evaluation elsewhere", fg="red",
                        err=True)  # fmt: skip
            raise typer.Exit(2)
    try:
        if run is not None:
            decision = None
            if postprocess:
                decision = json.loads((run / "postprocessing.json").read_text(encoding="utf-8"))
            axes = parse_axes(mirror_axes)
            result = evaluate_run(run, out, metrics, repredict=repredict, mirror_axes=axes, postprocess=decision)
            title = f"{len(result.rows)} test cases of {run}"
        else:
            result = evaluate_folders(pred, ref, out, metrics, lab, threshold, pred_suffix)  # type: ignore[arg-type]
            n_ref = len(result.rows)
            title = f"{n_ref - len(result.missing)} of {n_ref} references predicted: {pred} vs {ref}"
    except DataError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1) from None
    summary = result.summary
    table = Table(title=title)
    for col in ("metric", "mean", "std", "median", "n", "missing", "undefined"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for name, s in summary.items():
        n_missing = int(s.get("n_missing", 0))  # no prediction (or no value): apart from NaN/Inf values
        table.add_row(name, fmt(s["mean"]), fmt(s["std"]), fmt(s["median"]), str(s["n"]), str(n_missing),
                      str(s["n_undefined"] - n_missing))  # fmt: skip
    console.print(table)
    pooled = result.pooled if "dice" not in result.pooled else {"": result.pooled}
    ptable = Table(title="pooled over all cases (summed voxel counts)")
    for col in ("label", "dice", "iou", "precision", "recall", "specificity"):
        ptable.add_column(col, justify="left" if col == "label" else "right")
    for label, p in pooled.items():
        ptable.add_row(
            label or "foreground", *(fmt(p[k]) for k in ("dice", "iou", "precision", "recall", "specificity"))
        )
    console.print(ptable)
    console.print(f"wrote {out / 'metrics.csv'} and {out / 'summary.json'}")
    if result.missing:
        typer.secho(
            f"error: {len(result.missing)} reference(s) have no prediction (counted as missing), e.g. "
            f"{result.missing[0]}",
            fg="red",
            err=True,
        )
        raise typer.Exit(3)
