"""seed 001 Table 1 on this machine: parameters and forward time of the 3D CT U-Net vs Attention U-Net.

Input 1x1x160x160x96 as in the paper. Times are reported as the Attention U-Net / U-Net ratio measured in the
same run (the paper: 0.179 s / 0.167 s = 1.072 on a GPU), in float32 and in bf16 autocast + channels_last_3d.

    python benchmarks/bench_table1.py [--repeats 3] [--size 160 160 96] [--out benchmarks/results/table1.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import agseg
from agseg.nets.summary import PAPER_TABLE1, count_parameters, summarize

PAPER_TIME = {"unet_ct": 0.167, "attention_unet_ct": 0.179}


def time_forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int) -> float:
    if bf16:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=3, default=[160, 160, 96])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/table1.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 1, *args.size)
    rows = []
    for name in ("unet_ct", "attention_unet_ct"):
        model = agseg.create_model(name).eval()
        row = {
            "model": name,
            "params": count_parameters(model),
            "flops": summarize(name, tuple(x.shape)).flops,
            "paper_time_s": PAPER_TIME[name],
        }
        for mode, bf16 in (("fp32", False), ("bf16_cl", True)):
            row[f"time_{mode}_s"] = time_forward(model, x, bf16, args.repeats)
        rows.append(row)
    base = rows[0]
    for r in rows:
        r["param_ratio"] = r["params"] / base["params"]
        for mode in ("fp32", "bf16_cl"):
            r[f"time_ratio_{mode}"] = r[f"time_{mode}_s"] / base[f"time_{mode}_s"]
        r["paper_time_ratio"] = r["paper_time_s"] / PAPER_TIME["unet_ct"]
    r_att = rows[1]
    print(f"input {tuple(x.shape)}, torch {torch.__version__}, {os.cpu_count()} CPUs, {args.repeats} repeats (median)")
    print(f"{'model':<20}{'params':>10}{'GFLOP':>9}{'fp32 s':>9}{'bf16+CL s':>11}{'ratio fp32':>12}{'ratio bf16':>12}")
    for r in rows:
        print(
            f"{r['model']:<20}{r['params'] / 1e6:>9.2f}M{r['flops'] / 1e9:>9.1f}{r['time_fp32_s']:>9.3f}"
            f"{r['time_bf16_cl_s']:>11.3f}{r['time_ratio_fp32']:>12.3f}{r['time_ratio_bf16_cl']:>12.3f}"
        )
    paper_ratio = PAPER_TABLE1["attention_unet"] / PAPER_TABLE1["unet"]
    print(
        f"paper: params ratio {paper_ratio:.3f}, time ratio {r_att['paper_time_ratio']:.3f} (GPU); "
        f"ours: params ratio {r_att['param_ratio']:.3f}, time ratio {r_att['time_ratio_fp32']:.3f} fp32 / "
        f"{r_att['time_ratio_bf16_cl']:.3f} bf16; bf16+CL speed-up on the U-Net "
        f"{base['time_fp32_s'] / base['time_bf16_cl_s']:.2f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"input": list(x.shape), "rows": rows}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
