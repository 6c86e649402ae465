"""Does holding the net channels-last speed up ``agseg predict``? The shipped models on real images, both layouts.

For each shipped segmentation model (``cxr-lungs``, ``nuclei``, ``hippocampus``) and a few of its images from
``../shared/data``, one :class:`agseg.Predictor` per (precision, layout): ``amp="off"`` (fp32) and ``amp="auto"``
(bf16 autocast where the CPU has fast bf16, else fp32 again), ``channels_last`` False and True. Each variant
predicts the same image once per round, the variants interleaved round-robin with the order rotated each round, so
machine noise hits all alike. Reported per image: the median seconds of each layout, the speed-up of channels-last
over the contiguous layout at the same precision, and the largest difference of their probabilities.

    python benchmarks/predict_layout.py --rounds 5 --threads 1

Prints a table and writes JSON (default ``benchmarks/results/predict_layout.json``; an earlier one is kept unless
``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from agseg.data.io import read_image
from agseg.fileio import atomic_write_text
from agseg.inference.bundle import load_bundle
from agseg.inference.predictor import Predictor
from agseg.inference.pretrained import pretrained_path
from agseg.runtime import cpu_has_fast_bf16, cpu_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGES = {  # model -> a glob of its kind of image
    "cxr-lungs": ("cxr_lungs/cxr", "*.png"),
    "nuclei": ("dsb2018_nuclei/stage1_train", "*/images/*.png"),
    "hippocampus": ("msd_hippocampus/images", "*.nii.gz"),
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--models", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    p.add_argument("--images", type=int, default=2, help="images per model (the first in name order)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/predict_layout.json"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.out.exists() and not args.overwrite:  # before any work: an earlier result is never replaced unasked
        raise SystemExit(f"{args.out} exists already, not overwritten (use --overwrite)")
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        folder, pattern = IMAGES[name]
        paths = sorted((args.data / folder).glob(pattern))[: args.images]
        if not paths:
            raise SystemExit(f"no images for {name} under {args.data / folder} ({pattern})")
        images = [read_image(p) for p in paths]
        model, bundle = load_bundle(pretrained_path(name))
        variants = {
            (amp, cl): Predictor(model, bundle, device="cpu", amp=amp, mirror_axes=(), channels_last=cl)
            for amp in ("off", "auto")
            for cl in (False, True)
        }
        times = {(k, i): [] for k in variants for i in range(len(images))}
        probs = {}
        keys = list(variants)
        for k, v in variants.items():  # warm-up, and the probabilities compared below
            probs[k] = [v.probabilities(img, geom)[0] for img, geom in images]
        for r in range(args.rounds):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                for i, (img, geom) in enumerate(images):
                    t = time.perf_counter()
                    variants[k].probabilities(img, geom)
                    times[(k, i)].append(time.perf_counter() - t)
        for amp in ("off", "auto"):
            for i, path in enumerate(paths):
                base = statistics.median(times[((amp, False), i)])
                fast = statistics.median(times[((amp, True), i)])
                rows.append(
                    {
                        "model": name,
                        "image": path.name if name != "nuclei" else path.parents[1].name[:12],
                        "amp": amp,
                        "precision": "bf16" if amp == "auto" and cpu_has_fast_bf16() else "fp32",
                        "shape": list(images[i][0].shape),
                        "contiguous_s": base,
                        "channels_last_s": fast,
                        "speedup": base / fast,
                        "max_prob_diff": float(np.abs(probs[(amp, False)][i] - probs[(amp, True)][i]).max()),
                    }
                )
    head = ("model", "image", "shape", "amp", "precision", "contiguous s", "channels-last s", "speed-up", "max |dp|")
    print("{:12} {:24} {:16} {:5} {:9} {:>12} {:>15} {:>8} {:>9}".format(*head))
    for r in rows:
        shape = "x".join(str(n) for n in r["shape"])
        print(
            f"{r['model']:12} {r['image']:24} {shape:16} {r['amp']:5} {r['precision']:9} {r['contiguous_s']:12.3f} "
            f"{r['channels_last_s']:15.3f} {r['speedup']:8.2f} {r['max_prob_diff']:9.1e}"
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": args.threads,
        "fast_bf16": cpu_has_fast_bf16(),
        "load_average_at_end": os.getloadavg(),
        "rounds": args.rounds,
        "images_per_model": args.images,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
