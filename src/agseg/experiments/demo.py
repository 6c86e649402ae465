"""``agseg demo``: the thesis' comparison in miniature, on chest-X-ray-like phantoms the demo makes itself.

It writes a synthetic dataset in the real ``cxr_lungs`` layout (PNG images + anti-aliased PNG masks), runs the
same k-fold cross-validation (shared ``splits.json``, so the statistics are paired) for a U-Net and Attention
U-Nets (recording the gates' maps during training), compares them (Kruskal-Wallis and paired Wilcoxon p-values, box
plots), draws the attention maps of one test case and writes the HTML report of it all (``report.html``, see
:mod:`agseg.report.html`). Everything lands in one folder to explore.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agseg.config import from_dict
from agseg.data.synthetic import write_dataset
from agseg.experiments.compare import Comparison, compare_runs, to_markdown, write_comparison
from agseg.experiments.run import run_cv

__all__ = ["DemoResult", "demo_settings", "run_demo"]

log = logging.getLogger(__name__)


def demo_settings(fast: bool) -> dict[str, Any]:
    """Dataset and training settings of the demo (``fast``: the same pipeline, smaller, for tests)."""
    if fast:
        return {"n": 24, "size": 64, "image": 48, "channels": [8, 16, 32], "epochs": 12, "folds": 3, "batch": 4,
                "models": ["unet", "attention_multi"]}  # fmt: skip
    return {"n": 60, "size": 128, "image": 64, "channels": [8, 16, 32, 64], "epochs": 15, "folds": 5, "batch": 4,
            "models": ["unet", "attention_single", "attention_multi"]}  # fmt: skip


MODELS = {
    "unet": {"name": "unet"},
    "attention_single": {"name": "attention_unet", "gating": "single"},
    "attention_multi": {"name": "attention_unet", "gating": "multi"},
}


@dataclass
class DemoResult:
    """What the demo made."""

    out_dir: Path
    runs: dict[str, Path]
    comparison: Comparison
    markdown: str
    seconds: float
    attention_figure: Path | None = None
    report: Path | None = None


def run_demo(out_dir: str | Path = "demo_out", fast: bool = False, seed: int = 0) -> DemoResult:
    """Make phantoms, cross-validate U-Net vs Attention U-Net(s), compare them; see the module docstring."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    s = demo_settings(fast)
    data = out / "data"
    if not (data / "cxr").is_dir():
        write_dataset(data, "cxr", n=s["n"], size=s["size"], seed=seed)
    runs: dict[str, Path] = {}
    for key in s["models"]:
        raw = {
            "name": key,
            "seed": seed,
            "data": {
                "path": str(data),
                "options": {"mask_threshold": 127},
                "preprocess": {"target_size": [s["image"], s["image"]], "intensity": "minmax01"},
                "augment": {"rotate_deg": 5, "scale": 0.05, "affine_prob": 0.3},
                "cache_dir": str(out / ".cache"),
            },
            "model": {**MODELS[key], "channels": s["channels"]},
            "train": {
                "epochs": s["epochs"],
                "batch_size": s["batch"],
                "lr": 3e-3,
                "loss": "dice_ce",
                "select": "last",
                **({"attention_every": max(1, s["epochs"] // 4)} if key != "unet" else {}),
            },
            "cv": {"folds": s["folds"], "repeats": 1, "val_fraction": 0.1},
            "eval": {"metrics": ["dice", "iou", "sensitivity", "specificity", "hd", "hd95"], "save_predictions": True},
        }
        log.info("demo: cross-validating %s", key)
        runs[key] = run_cv(from_dict(raw), out / key, splits=out / "splits.json").out_dir
    comparison = compare_runs(list(runs.values()), metrics=["dice", "hd", "hd95", "sensitivity", "specificity"])
    write_comparison(comparison, out / "compare", overwrite=True)  # the demo's own, as its report
    figure = _attention_example(out, runs)
    report = _report(out, runs)
    return DemoResult(out, runs, comparison, to_markdown(comparison), time.perf_counter() - t0, figure, report)


def _report(out: Path, runs: dict[str, Path]) -> Path:
    """``out/report.html``: the self-contained report of the demo's CVs (replacing the demo's own earlier one)."""
    from agseg.report.html import build_report, write_report

    log.info("demo: writing the HTML report")
    report = build_report(list(runs.values()), metrics=["dice", "hd", "hd95", "sensitivity", "specificity"],
                          title="agseg demo: U-Net vs Attention U-Net on chest X-ray phantoms")  # fmt: skip
    return write_report(report, out / "report.html", overwrite=True)[0]


def _attention_example(out: Path, runs: dict[str, Path]) -> Path | None:
    """Attention maps of the multi-gating net on the first test case of its first fold."""
    from agseg.data.datasets import load_dataset
    from agseg.experiments.splits import SplitPlan
    from agseg.inference.predictor import Predictor
    from agseg.viz.attention import plot_attention

    run = runs.get("attention_multi")
    if run is None:
        return None
    fold = SplitPlan.from_json(run / "splits.json").folds[0]
    predictor = Predictor.from_path(run / f"repeat{fold.repeat}_fold{fold.fold}")
    case = load_dataset(out / "data", mask_threshold=127).get(fold.test[0]).load()
    pred = predictor.predict_array(case.image, case.geometry, attention=True)
    return plot_attention(
        case.image, pred.attention, out / "attention_example.png", label=case.label, prediction=pred.label,
        title=f"{case.case_id}: where the multi-gating Attention U-Net looks",
    )  # fmt: skip
