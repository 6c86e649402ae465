"""``agseg train``, ``agseg cv`` and ``agseg predict``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agseg.cli._common import fail, parse_axes, parse_overrides

console = Console()
log = logging.getLogger("agseg")


def _load(config: Path, set_: list[str] | None):
    from agseg.config import ConfigError, load_config

    try:
        return load_config(config, parse_overrides(set_))
    except ConfigError as err:
        fail(str(err), 2)


def _known_errors():
    from agseg.data.errors import DataError
    from agseg.losses.registry import UnknownLossError

    return (DataError, UnknownLossError, KeyError, ValueError, FileNotFoundError)


def _code(err: Exception) -> int:
    """Exit code 2 for a config problem, 1 for anything else (docs/experiments.md lists the codes)."""
    from agseg.config import ConfigError

    return 2 if isinstance(err, ConfigError) else 1


def _join_torchrun(device: str = "auto") -> bool:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group; True then."""
    from agseg.runtime import init_distributed

    return init_distributed(device)


def _is_main() -> bool:
    from agseg.runtime import is_main_process

    return is_main_process()


def _msg(err: Exception) -> str:
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


def train(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/<name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    init_from: Path | None = typer.Option(None, help="Start from another run's (or file's) weights where they fit."),
    init_classes: str | None = typer.Option(None, help="With --init-from: source classes to keep, e.g. 0,1."),
    splits: Path | None = typer.Option(None, help="Train on one fold of this splits.json (with --fold/--repeat)."),
    fold: int = typer.Option(0, help="Fold of --splits to train on."),
    repeat: int = typer.Option(0, help="Repeat of --splits."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a config key, e.g. train.epochs=5."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in --out (it is deleted)."),
) -> None:
    """Train one model on one split; the run directory is the complete record.

    An --out folder that holds a run is refused unless --resume continues it (with the same settings; train.epochs
    may grow) or --overwrite replaces it."""
    cfg = _load(config, set_)
    from agseg.experiments.run import load_index, train_model, train_split
    from agseg.experiments.splits import SplitPlan

    run_dir = out or Path("runs") / cfg.name
    distributed = _join_torchrun(cfg.train.device)
    try:
        index = load_index(cfg)
        if splits is not None:
            f = SplitPlan.from_json(splits).get(repeat, fold)
            by_id = {c.case_id: c for c in index}
            train_cases, val_cases = [by_id[c] for c in f.train], [by_id[c] for c in f.val]
        else:
            train_cases, val_cases = train_split(cfg, index)
        classes = [int(c) for c in init_classes.split(",")] if init_classes else None
        if not distributed or _is_main():
            console.print(f"training [bold]{cfg.model.name}[/bold] on {len(train_cases)} cases "
                          f"(validation {len(val_cases)}) -> {run_dir}")  # fmt: skip
        run = train_model(
            cfg, run_dir, train_cases, val_cases, resume, init_from, classes, evaluate_val=True, index=index,
            overwrite=overwrite,
        )  # fmt: skip
    except _known_errors() as err:
        fail(_msg(err), _code(err))
    if distributed and not _is_main():
        return
    r = run.result
    console.print(
        f"done: {r.epochs_run} epochs in {r.seconds:.0f} s; best epoch {r.best_epoch} "
        f"(val loss {r.best_val_loss:.4f}); model in {run_dir / 'model'}"
    )
    summary = run_dir / "summary.json"
    if summary.is_file():
        import json

        metrics = json.loads(summary.read_text(encoding="utf-8"))["metrics"]
        shown = {k: v["mean"] for k, v in metrics.items() if k in ("dice", "hd95") and v["mean"] is not None}
        console.print("validation cases: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))


def cv(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="CV directory (default runs/<name>_cv)."),
    folds: int | None = typer.Option(None, "--folds", "-k", help="Number of folds (overrides cv.folds)."),
    repeats: int | None = typer.Option(None, "--repeats", "-n", help="Repeats of the k-fold (overrides cv.repeats)."),
    fold: list[int] | None = typer.Option(None, "--fold", help="Run only this fold (repeatable)."),
    repeat: list[int] | None = typer.Option(None, "--repeat", help="Run only this repeat (repeatable)."),
    splits: Path | None = typer.Option(None, help="Reuse this splits.json (paired comparisons across models)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a config key, e.g. train.epochs=5."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier CV in --out (it is deleted)."),
    init_from: Path | None = typer.Option(
        None, help="Start each fold from the same fold's model of this CV folder (same splits), or from one run/file."
    ),
) -> None:
    """k-fold (x repeats) cross-validation: train, predict the test fold, per-case metrics, summary.

    Running it again on the same --out resumes: finished folds are kept, an interrupted fold continues. A CV made
    with other settings is refused unless --overwrite replaces it."""
    extra = list(set_ or [])
    if folds is not None:
        extra.append(f"cv.folds={folds}")
    if repeats is not None:
        extra.append(f"cv.repeats={repeats}")
    cfg = _load(config, extra)
    from agseg.experiments.run import run_cv

    out_dir = out or Path("runs") / f"{cfg.name}_cv"
    distributed = _join_torchrun(cfg.train.device)
    try:
        res = run_cv(cfg, out_dir, folds=fold, repeats=repeat, splits=splits, overwrite=overwrite, init_from=init_from)
    except _known_errors() as err:
        fail(_msg(err), _code(err))
    if distributed and not _is_main():
        return
    table = Table(title=f"{cfg.name}: {res.folds_done}/{res.folds_total} folds, {len(res.rows)} test cases")
    for col in ("metric", "mean ± std (cases)", "median", "undefined"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, s in res.summary.items():
        if s["mean"] is None:
            table.add_row(name, "-", "-", str(s["n_undefined"]))
            continue
        std = f" ± {s['std']:.4f}" if s["std"] is not None else ""
        table.add_row(name, f"{s['mean']:.4f}{std}", f"{s['median']:.4f}", str(s["n_undefined"]))
    console.print(table)
    console.print(f"{res.seconds:.0f} s; per-case metrics in {out_dir / 'metrics.csv'}, summary in "
                  f"{out_dir / 'summary.json'}")  # fmt: skip


def predict(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (PNG, NIfTI, MHD, NRRD, DICOM folder...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (never an input's folder)."),
    run: list[Path] | None = typer.Option(
        None, "--run", help="A training run, model or CV folder (a CV: the ensemble of its folds). Repeat to ensemble."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint file (.pt) written by training."),
    model: str | None = typer.Option(None, "--model", help="A model shipped with agseg (see agseg models --shipped)."),
    probs: bool = typer.Option(False, "--probs", help="Also write probability maps."),
    attention: bool = typer.Option(False, "--attention", help="Also write attention maps and an overlay figure."),
    overlap: float = typer.Option(
        0.5, min=0.0, max=0.99, help="Sliding-window overlap for inputs larger than the training patch, 0 to 0.99."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    amp: str = typer.Option("auto", help="auto (bf16 where it helps; fp16 on CUDA without bf16), bf16, fp16 or off."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that exist already."),
    mirror_axes: str | None = typer.Option(
        None, "--mirror-axes", help="Test-time mirroring axes, e.g. 1 or 0,1,2; 'none' for none (default: the model's)."
    ),
    no_postprocess: bool = typer.Option(False, "--no-postprocess", help="Skip the model's post-processing."),
    prune: int | None = typer.Option(
        None, "--prune", help="ANU-Net: predict with the net pruned to level L (1..4; smaller, faster); 0: full net."
    ),
    engine: str = typer.Option(
        "torch", "--engine", help="torch, or onnxruntime for a folder written by `agseg export` (CPU, float32)."
    ),
) -> None:
    """Predict masks written in each input's format, size and geometry (spacing, origin, direction).

    Inputs are image files, folders of images in any supported format, DICOM series folders, and multi-channel
    cases (nnU-Net CASE_0000/CASE_0001 files; case folders with the training's channel files). Existing files in
    --out are never replaced unless --overwrite is given; all outputs are checked before any work starts."""
    from agseg.inference.predictor import Predictor

    given = [s for s in (run or None, checkpoint, model) if s]
    if len(given) != 1:
        fail("give exactly one of --run (repeatable), --checkpoint or --model", 2)
    try:
        if model is not None:
            from agseg.inference.pretrained import pretrained_path

            sources = [pretrained_path(model)]
        else:
            sources = list(run) if run else [checkpoint]
        opts = {"device": device, "amp": amp, "overlap": overlap, "mirror_axes": parse_axes(mirror_axes),
                "prune": prune}  # fmt: skip
        if no_postprocess:
            opts["postprocess"] = False
        if engine == "onnxruntime" and attention:
            raise ValueError("--attention needs --engine torch (attention maps are not exported)")
        predictor = Predictor.from_paths(sources, engine=engine, **opts)
        results = predictor.predict_paths(inputs, out, probs=probs, attention=attention, overwrite=overwrite)
    except _known_errors() as err:
        fail(_msg(err), _code(err))
    masks = [r["mask"] for r in results if "mask" in r]
    for m in masks:
        console.print(f"wrote {m}")
    table = next((r["predictions"] for r in results if "predictions" in r), None)
    if table is not None:
        console.print(f"{len(results) - 1} prediction(s) in {table}")
    else:
        console.print(f"{len(masks)} mask(s) in {out}")


def postprocess(
    cv_dir: Path = typer.Argument(..., help="A finished `agseg cv` folder (with predictions/ in every fold)."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metrics of the estimate (default: the CV's)."
    ),
) -> None:
    """Choose post-processing on a CV's predictions (keep the largest component(s) per class where that improves the
    mean Dice) and estimate its effect cross-validated; `agseg predict --run CV` then applies it."""
    from agseg.experiments.postprocessing import cv_postprocessing

    try:
        res = cv_postprocessing(cv_dir, metric or None)
    except _known_errors() as err:
        fail(_msg(err), _code(err))
    table = Table(title=f"post-processing of {cv_dir} ({res['n_cases']} CV cases)")
    for col in ("class", "as predicted", "keep 1", "keep 2", "keep 3", "chosen"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for value, row in res["classes"].items():
        table.add_row(value, *(f"{row[k]:.4f}" for k in ("none", "k1", "k2", "k3")), str(row["chosen"] or "-"))
    console.print(table)
    est = res["cv_estimate"]
    for name in [m for m in ("dice", "hd95") if m in est["before"]]:
        b, a = est["before"][name]["mean"], est["after"][name]["mean"]
        if b is not None and a is not None:
            console.print(f"{name}: {b:.4f} -> {a:.4f} (each fold post-processed by the decision of the other folds)")
    console.print(f"wrote {cv_dir / 'postprocessing.json'} and {cv_dir / 'metrics_postprocessed.csv'}")
