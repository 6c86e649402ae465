"""Does the data loader keep up with training? cxr_lungs at 256 x 256, cached, augmented.

Measures, in one run:

1. cache fill: raw PNG -> preprocessed arrays on disk (first run only; later runs hit the cache);
2. loader throughput (images/s) over one epoch from the warm cache with augmentation, for each ``--workers`` value;
3. training-step throughput (images/s) of a 2D U-Net (16-32-64-128-256, Adam, BCE-with-logits, bf16 autocast on CPU,
   channels_last, denormals flushed) on batches from that loader;
4. one real epoch per ``--workers`` value with the loader feeding the training step, and the fraction of it spent
   waiting for data.

Prints a table and writes JSON (default ``benchmarks/results/loader.json``).

    python benchmarks/bench_loader.py --limit 64 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

import agseg
from agseg.data import AugmentConfig, PreprocessCache, PreprocessConfig, Preprocessor, SegmentationDataset, load_dataset

REPO = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cxr_lungs"), help="cxr_lungs folder")
    p.add_argument("--size", type=int, default=256, help="resize to SIZE x SIZE")
    p.add_argument("--limit", type=int, default=64, help="number of images (0 = all 400)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers to try")
    p.add_argument("--steps", type=int, default=6, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--cache-dir", default=str(REPO / ".agseg_cache"), help="preprocessing cache folder")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 (no autocast, no channels_last)")
    p.add_argument(
        "--no-flush-denormal",
        action="store_true",
        help="keep denormal floats (without flushing, bf16 training on this CPU was ~10x slower)",
    )
    p.add_argument("--skip-epoch", action="store_true", help="skip the combined loader + training epoch")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "loader.json"))
    return p.parse_args()


def loader_epoch(ds: SegmentationDataset, batch_size: int, workers: int) -> dict[str, float]:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=False)
    t0 = time.perf_counter()
    n, first = 0, None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0
        n += batch["image"].shape[0]
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt, "first_batch_s": first or 0.0}


def combined_epoch(ds: SegmentationDataset, batch_size: int, workers: int, step) -> dict[str, float]:
    """One real epoch: the loader feeds the training step; how long does the step wait for data?"""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    wait = 0.0
    n = 0
    t_epoch = time.perf_counter()
    t = t_epoch
    for batch in loader:
        wait += time.perf_counter() - t
        step(batch)
        t = time.perf_counter()
        n += batch["image"].shape[0]
    total = time.perf_counter() - t_epoch
    return {
        "num_workers": workers,
        "images": n,
        "seconds": total,
        "images_per_s": n / total,
        "data_wait_s": wait,
        "data_wait_fraction": wait / total,
    }


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.no_flush_denormal)
    torch.manual_seed(0)
    index = load_dataset(args.data)
    cases = index.cases[: args.limit] if args.limit else index.cases
    pre = Preprocessor(PreprocessConfig(target_size=(args.size, args.size), intensity="minmax01"))
    aug = AugmentConfig(rotate_deg=15, scale=0.15, affine_prob=0.5, flip_axes=(1,), noise_std=0.02)
    cache = PreprocessCache(args.cache_dir)
    ds = SegmentationDataset(cases, pre, cache=cache, augment=aug)

    t0 = time.perf_counter()
    ds.warm_cache()
    fill = {"images": len(cases), "seconds": time.perf_counter() - t0, "misses": cache.misses, "hits": cache.hits}
    fill["images_per_s"] = fill["images"] / fill["seconds"]

    loaders = {w: loader_epoch(ds, args.batch_size, w) for w in args.workers}

    bf16 = not args.no_bf16
    net = agseg.create_model("unet", spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128, 256))
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()

    def step(batch: dict) -> float:
        x = batch["image"]
        y = batch["label"].unsqueeze(1).float()
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x).float(), y)
        loss.backward()
        opt.step()
        return loss.detach().item()

    batch = next(iter(DataLoader(ds, batch_size=args.batch_size, shuffle=True)))
    for _ in range(3):
        step(batch)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    dt = time.perf_counter() - t0
    train = {"images": args.steps * args.batch_size, "seconds": dt, "images_per_s": args.steps * args.batch_size / dt}

    epochs = {} if args.skip_epoch else {w: combined_epoch(ds, args.batch_size, w, step) for w in args.workers}

    best = max(loaders.values(), key=lambda r: r["images_per_s"])["images_per_s"]
    result = {
        "benchmark": "loader",
        "data": args.data,
        "size": args.size,
        "n_images": len(cases),
        "batch_size": args.batch_size,
        "augment": aug.to_dict(),
        "preprocess": pre.config.to_dict(),
        "bf16_channels_last": bf16,
        "flush_denormal": not args.no_flush_denormal,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "cache_fill": fill,
        "loader": {str(k): v for k, v in loaders.items()},
        "train_step": train,
        "epoch_with_training": {str(k): v for k, v in epochs.items()},
        "loader_over_step": best / train["images_per_s"],
        "loader_faster_than_step": best > train["images_per_s"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")

    table = Table(title=f"cxr_lungs {args.size}x{args.size}, {len(cases)} images, batch {args.batch_size}")
    for col in ("stage", "images/s", "seconds", "note"):
        table.add_column(col, justify="left" if col in ("stage", "note") else "right")
    note = f"{fill['misses']} misses, {fill['hits']} hits"
    table.add_row("cache fill (raw -> cache)", f"{fill['images_per_s']:.1f}", f"{fill['seconds']:.2f}", note)
    for w, r in loaders.items():
        table.add_row(
            f"loader, cached + aug, workers={w}",
            f"{r['images_per_s']:.1f}",
            f"{r['seconds']:.2f}",
            f"first batch {r['first_batch_s']:.2f} s",
        )
    prec = "bf16 autocast + channels_last" if bf16 else "float32"
    table.add_row("train step (U-Net 16..256)", f"{train['images_per_s']:.1f}", f"{train['seconds']:.2f}", prec)
    for epoch in epochs.values():
        table.add_row(
            f"epoch: loader -> train, workers={epoch['num_workers']}",
            f"{epoch['images_per_s']:.1f}",
            f"{epoch['seconds']:.2f}",
            f"waiting for data {100 * epoch['data_wait_fraction']:.1f}%",
        )
    console = Console()
    console.print(table)
    console.print(f"loader / step = {result['loader_over_step']:.1f}x; written {out}")


if __name__ == "__main__":
    main()
