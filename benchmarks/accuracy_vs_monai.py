"""Same wall-clock budget, same split, same data pipeline: MONAI's AttentionUnet vs agseg's default Attention U-Net.

A user choosing a framework trains the model it offers for the time they have. This script gives both the same
training budget on the same split of ``../shared/data/cxr_lungs`` (seeded, patient-grouped; the test images
choose nothing: last epoch, fixed 0.5 threshold, no post-processing), the same preprocessing (256x256, min-max),
augmentation, loss (Dice + CE), optimiser (Adam 1e-3; the budget, not an epoch count, ends training, and with
``--anneal poly`` (the default) the rate decays with the share of the budget spent, ``--anneal none`` keeps it
constant) and batch size, and reports the Dice and HD95 of both on the test images at their original 512x512 grid.

Peers: agseg ``attention_unet`` (multi-gating, widths 16-256) with its defaults (bf16 autocast + channels_last on
CPUs with AMX/AVX-512 bf16), and MONAI ``AttentionUnet`` (widths 16-256, strides 2) as MONAI users run it (fp32);
``--monai-bf16`` gives MONAI the same bf16 + channels_last too. Each model trains alone (one after the other, the
order alternating with ``--seed``), on ``--threads`` threads.

    python benchmarks/accuracy_vs_monai.py [--minutes 15] [--threads 1] [--anneal poly|cosine|none] [--monai-bf16]
        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cxr_lungs"


class MonaiNet(torch.nn.Module):
    """MONAI's AttentionUnet with the contract agseg's trainer reads (spatial_dims for channels_last)."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        from monai.networks.nets import AttentionUnet

        self.spatial_dims = 2
        self.net = AttentionUnet(
            spatial_dims=2, in_channels=1, out_channels=1, channels=channels, strides=(2,) * (len(channels) - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def run(name: str, model: torch.nn.Module, amp: str, cfg, train, test, pre, budget: float, anneal: str | None) -> dict:
    from agseg.data.torch_dataset import SegmentationDataset
    from agseg.experiments.run import evaluate_cases
    from agseg.inference.bundle import ModelBundle
    from agseg.inference.predictor import Predictor
    from agseg.losses import create_loss
    from agseg.training.callbacks import ProgressPrinter, TimeBudget
    from agseg.training.trainer import Trainer

    tcfg = cfg.train.__class__(**{**cfg.train.__dict__, "amp": amp, "channels_last": amp != "off"})
    ds = SegmentationDataset(train, pre, cache=ROOT.parent / "runs" / ".agseg_cache", augment=cfg.data.augment,
                             seed=cfg.seed)  # fmt: skip
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    trainer = Trainer(model, create_loss("dice_ce"), ds, None, tcfg, None, seed=cfg.seed,
                      callbacks=[ProgressPrinter(), TimeBudget(budget, anneal)])  # fmt: skip
    res = trainer.fit()
    seconds = time.perf_counter() - t0
    bundle = ModelBundle("unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1}, pre.to_dict())
    predictor = Predictor(trainer.model, bundle, amp=amp)
    rows = evaluate_cases(predictor, test, ["dice", "hd95"], progress=False)
    dice = np.array([r["dice"] for r in rows])
    hd95 = np.array([r["hd95"] for r in rows])
    return {
        "model": name,
        "amp": amp,
        "train_seconds": seconds,
        "epochs": res.epochs_run,
        "params": sum(p.numel() for p in model.parameters()),
        "dice_mean": float(dice.mean()),
        "dice_median": float(np.median(dice)),
        "hd95_mean": float(np.mean(hd95[np.isfinite(hd95)])),
        "hd95_median": float(np.median(hd95)),
        "n_test": len(rows),
        "per_case": [{"case_id": r["case_id"], "dice": r["dice"], "hd95": r["hd95"]} for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--anneal",
        choices=["poly", "cosine", "none"],
        default="poly",
        help="learning-rate decay over the budget (the same for both)",
    )
    ap.add_argument("--monai-bf16", action="store_true", help="also run MONAI with bf16 autocast + channels_last")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy_vs_monai.json")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA} (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    from scipy import stats

    from agseg.config import from_dict
    from agseg.data.preprocess import Preprocessor
    from agseg.experiments.run import load_index
    from agseg.experiments.splits import make_splits
    from agseg.nets import create_model

    cfg = from_dict({
        "name": "budget", "seed": args.seed,
        "data": {"path": str(DATA), "options": {"mask_threshold": 127},
                 "preprocess": {"target_size": [256, 256], "intensity": "minmax01"},
                 "augment": {"rotate_deg": 10, "scale": 0.1, "affine_prob": 0.5, "intensity_scale": 0.1,
                             "intensity_shift": 0.1}},
        "model": {"name": "attention_unet"},
        "train": {"epochs": 1000, "batch_size": 8, "lr": 1e-3, "schedule": "constant", "select": "last"},
    })  # fmt: skip
    index = load_index(cfg)
    ids = [c.case_id for c in index]
    fold = make_splits(ids, [c.patient_id for c in index], n_folds=5, seed=args.seed, val_fraction=0.0).folds[0]
    by_id = {c.case_id: c for c in index}
    train, test = [by_id[i] for i in fold.train], [by_id[i] for i in fold.test]
    pre = Preprocessor(cfg.data.preprocess)
    budget = args.minutes * 60
    widths = (16, 32, 64, 128, 256)
    runs = [
        ("agseg attention_unet (default: bf16 + channels_last)", "auto",
         lambda: create_model("attention_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=widths)),
        ("MONAI AttentionUnet (fp32)", "off", lambda: MonaiNet(widths)),
    ]  # fmt: skip
    if args.monai_bf16:
        runs.append(("MONAI AttentionUnet (bf16 + channels_last)", "auto", lambda: MonaiNet(widths)))
    if args.seed % 2:
        runs = runs[::-1]
    results = []
    for name, amp, make in runs:
        print(f"== {name}: {args.minutes:g} min on {len(train)} images")
        anneal = None if args.anneal == "none" else args.anneal
        results.append(run(name, make(), amp, cfg, train, test, pre, budget, anneal))
    ours, monai = (
        results[0] if "agseg" in results[0]["model"] else results[1],
        next(r for r in results if r["model"].startswith("MONAI AttentionUnet (fp32)")),
    )
    a = np.array([c["dice"] for c in ours["per_case"]])
    b = np.array([c["dice"] for c in monai["per_case"]])
    p = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
    print(f"\n{'model':<58} {'epochs':>6} {'train s':>8} {'Dice':>7} {'median':>7} {'HD95 px':>8}")
    for r in results:
        print(f"{r['model']:<58} {r['epochs']:>6} {r['train_seconds']:>8.0f} {r['dice_mean']:>7.4f} "
              f"{r['dice_median']:>7.4f} {r['hd95_mean']:>8.2f}")  # fmt: skip
    gap = 100 * (ours["dice_mean"] - monai["dice_mean"])
    print(f"\nagseg - MONAI: {gap:+.2f} Dice points (paired Wilcoxon p = {p:.3g}, {len(a)} test images)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "minutes": args.minutes,
            "seed": args.seed, "anneal": args.anneal,
            "n_train": len(train), "n_test": len(test), "torch": torch.__version__}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": results, "dice_gap_points": gap, "wilcoxon_p": p},
                                   indent=1) + "\n", encoding="utf-8")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
