"""``agseg export``: a trained or shipped model as ONNX or a ``torch.export`` program (checked against PyTorch before
it is kept)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agseg.cli._common import fail

console = Console()

FORMATS = ("onnx", "torch-export")


def export(
    source: Path | None = typer.Argument(None, help="A training run, model folder or checkpoint (.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="A new folder for the exported model."),
    format: str = typer.Option(
        "onnx", "--format", "-f", help="onnx, or torch-export (model.pt2: PyTorch's successor to TorchScript)."
    ),
    model: str | None = typer.Option(None, "--model", help="A model shipped with agseg instead of SOURCE."),
    prune: int | None = typer.Option(None, "--prune", help="ANU-Net: export the net pruned to level L (1..4)."),
    atol: float = typer.Option(1e-4, help="Largest accepted difference between the export and PyTorch (float32)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out."),
) -> None:
    """Export a model to ONNX (`agseg predict --run OUT --engine onnxruntime` then predicts with it) or to a
    torch.export program (load it without agseg: torch.export.load("OUT/model.pt2").module()).

    OUT holds model.onnx or model.pt2 beside the model's model.json and model.safetensors, so it is a PyTorch model
    folder as well. The export is kept only when it agrees with PyTorch within --atol on two test inputs."""
    if format not in FORMATS:
        fail(f"--format {format!r}: valid formats: {', '.join(FORMATS)}", 2)
    if (source is None) == (model is None):
        fail("give SOURCE or --model NAME (one of them)", 2)
    from agseg.inference.export import export_onnx, export_program

    try:
        if model is not None:
            from agseg.inference.pretrained import pretrained_path

            source = pretrained_path(model)
        assert source is not None
        what, fn = ("ONNX", export_onnx) if format == "onnx" else ("a torch.export program", export_program)
        with console.status(f"exporting {source} to {what} and checking it against PyTorch"):
            folder = fn(source, out, prune=prune, atol=atol, overwrite=overwrite)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        fail(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err), 1)
    import json

    info = json.loads((folder / "model.json").read_text(encoding="utf-8"))["info"]["export"]
    diffs = ", ".join(f"{k}: {v:.2g}" for k, v in info["max_abs_diff"].items())
    console.print(f"wrote {folder / info['file']} (max difference to PyTorch {diffs})")
    if format == "onnx":
        console.print(f"predict with: agseg predict IMAGES --run {folder} --engine onnxruntime --out OUT")
    else:
        console.print(f"load with: torch.export.load('{folder / info['file']}').module()  (float32 logits)")
