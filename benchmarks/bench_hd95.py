"""HD95 speed and agreement: agseg.metrics.hd95 vs MONAI's compute_hausdorff_distance(percentile=95), one run.

Cases: a 512x512 mask and a 128^3 volume, each as a smooth "organ" (a blob with a smoothly perturbed boundary,
prediction = a perturbed copy) and as a "ragged" worst case (thresholded smoothed noise: a huge surface),
anisotropic spacing. Times are medians over ``--repeats`` calls after a warm-up, reported as ours / MONAI ratios
(< 1: ours faster); values must agree to 1e-3 relative.

    python benchmarks/bench_hd95.py [--repeats 5] [--out benchmarks/results/hd95.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import monai
import numpy as np
import scipy
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from agseg.metrics import hd95, surface


def organ(shape: tuple[int, ...], rng: np.random.Generator, radius_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A blob with a smoothly perturbed boundary, and a prediction that is a shifted, perturbed copy."""
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    r0 = radius_frac * min(shape)

    def wobble(amp: float) -> np.ndarray:  # smooth random field with standard deviation ``amp``
        f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6)
        return f * (amp / f.std())

    ref = r < r0 + wobble(0.04 * r0)
    pred = np.roll(r < r0 + wobble(0.04 * r0), 2, axis=0)
    return pred, ref


def ragged(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Thresholded smoothed noise: most voxels lie on a surface (worst case for surface distances)."""

    def one() -> np.ndarray:
        return ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), 2) > 0.5

    return one(), one()


def median_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    value = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hd95.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    cases = [
        ("512x512 organ", (512, 512), (0.8, 1.2), organ),
        ("512x512 ragged", (512, 512), (0.8, 1.2), ragged),
        ("128^3 organ", (128, 128, 128), (0.8, 0.8, 2.5), organ),
        ("128^3 ragged", (128, 128, 128), (0.8, 0.8, 2.5), ragged),
    ]
    rows = []
    for name, shape, spacing, make in cases:
        pred, ref = make(shape, rng)
        n_surface = int(surface(pred).sum() + surface(ref).sum())
        p_t = torch.from_numpy(pred[None, None]).float()
        r_t = torch.from_numpy(ref[None, None]).float()
        t_ours, v_ours = median_time(lambda p=pred, r=ref, s=spacing: hd95(p, r, s), args.repeats)
        t_monai, v_monai = median_time(
            lambda p=p_t, r=r_t, s=spacing: compute_hausdorff_distance(
                p, r, include_background=True, percentile=95, spacing=list(s)
            ).item(),
            args.repeats,
        )
        rel = abs(v_ours - v_monai) / max(abs(v_monai), 1e-12)
        rows.append(
            {
                "case": name,
                "shape": list(shape),
                "spacing": list(spacing),
                "surface_voxels": n_surface,
                "ours_s": t_ours,
                "monai_s": t_monai,
                "ratio_ours_over_monai": t_ours / t_monai,
                "hd95_ours": v_ours,
                "hd95_monai": v_monai,
                "rel_diff": rel,
                "agree_1e-3": rel <= 1e-3,
            }
        )

    header = (
        f"{'case':<16} {'surface vox':>11} {'ours (s)':>9} {'MONAI (s)':>10} {'ours/MONAI':>10} "
        f"{'HD95 ours':>10} {'HD95 MONAI':>11} {'agree':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<16} {r['surface_voxels']:>11d} {r['ours_s']:>9.4f} {r['monai_s']:>10.4f} "
            f"{r['ratio_ours_over_monai']:>10.2f} {r['hd95_ours']:>10.4f} {r['hd95_monai']:>11.4f} "
            f"{'yes' if r['agree_1e-3'] else 'NO':>6}"
        )
    meta = {
        "benchmark": "hd95",
        "repeats": args.repeats,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out}")
    if not all(r["agree_1e-3"] for r in rows):
        raise SystemExit("HD95 values disagree with MONAI")


if __name__ == "__main__":
    main()
