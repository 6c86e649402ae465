"""The segmentation family on this machine: parameters, forward FLOPs and median CPU latency, next to the papers.

Every net at 1x1x256x256 (FocusNet++ 1x3x256x256: RGB), 2D, one output channel, in fp32 and in agseg's default
(bf16 autocast + channels_last), timed round-robin (one forward of each net and precision per round, after a
warm-up) so that load from other processes hits all of them alike. ANU-Net's levels are the standalone nets
``prune(L)`` returns from one ANU-Net. Ratios are against ANU-Net L4 and U-Net from the same run; the papers' claims
are printed beside them (seed 002: L1 has 98.8 % fewer parameters than L4 and is 17 % faster, L3 75.5 % fewer and
7.7 % faster; seed 004 Table 3: FocusNet++ 1.84 M parameters).

    python benchmarks/bench_models.py [--repeats 15] [--threads 1] [--widths 32 64 128 256 512]
        [--out benchmarks/results/models.json] [--md docs/models_table.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import agseg
from agseg.nets.summary import count_flops, count_parameters

ROOT = Path(__file__).resolve().parents[1]
PAPER = {
    "anunet L1": "98.8 % fewer params than L4, 17 % faster (seed 002)",
    "anunet L3": "75.5 % fewer params than L4, 7.7 % faster (seed 002)",
    "focusnetpp_paper": "1.84 M params (seed 004 Table 3, read as millions)",
}


def build(widths: tuple[int, ...]) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    g = (1, 1, 256, 256)
    nets: dict[str, tuple[torch.nn.Module, tuple[int, ...]]] = {
        "unet": (agseg.create_model("unet", channels=widths), g),
        "attention_unet": (agseg.create_model("attention_unet", channels=widths), g),
    }
    full = agseg.create_model("anunet", spatial_dims=2, in_channels=1, out_channels=1, channels=widths)
    for level in full.pruning_levels:
        nets[f"anunet L{level}"] = (full.prune(level), g)
    nets["focusnetpp_paper"] = (agseg.create_model("focusnetpp_paper"), (1, 3, 256, 256))
    nets["focusnetpp_nuclei"] = (agseg.create_model("focusnetpp_nuclei"), (1, 3, 256, 256))
    return nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    ap.add_argument("--md", type=Path, default=None, help="also write the table as Markdown here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = build(tuple(args.widths))
    rows = {}
    variants = {}
    for name, (net, shape) in nets.items():
        net.eval()
        x = torch.randn(shape)
        cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        variants[name] = (net, x, cl, x.contiguous(memory_format=torch.channels_last))
        rows[name] = {"input": list(shape), "params": count_parameters(net), "flops": count_flops(net, shape),
                      "fp32": [], "bf16": []}  # fmt: skip
    with torch.inference_mode():
        for net, x, cl, xcl in variants.values():  # warm-up
            net(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                cl(xcl)
        for _ in range(args.repeats):
            for name, (net, x, cl, xcl) in variants.items():
                t = time.perf_counter()
                net(x)
                rows[name]["fp32"].append(time.perf_counter() - t)
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    cl(xcl)
                rows[name]["bf16"].append(time.perf_counter() - t)
    load = os.getloadavg()[0]  # other jobs on the machine while this ran (it is named in the caption)
    l4, unet = rows["anunet L4"], rows["unet"]
    med = {n: (statistics.median(r["fp32"]), statistics.median(r["bf16"])) for n, r in rows.items()}
    lines = [
        f"Measured by `python benchmarks/bench_models.py --repeats {args.repeats} --threads {args.threads}` on "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {args.threads} thread(s)), "
        f"torch {torch.__version__}; widths {'-'.join(map(str, args.widths))} for U-Net, Attention U-Net and "
        f"ANU-Net. FLOPs count a multiply-add as 2. Load average at the end of the run: {load:.2f}.",
        "",
        "| net | input | params | FLOPs (G) | fp32 ms | bf16 ms | params vs ANU-Net L4 | fp32 time vs L4 | "
        "bf16 time vs L4 | FLOPs vs U-Net | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        f32, b16 = med[name]
        lines.append(
            f"| {name} | {'x'.join(map(str, r['input']))} | {r['params']:,} | {r['flops'] / 1e9:.2f} | "
            f"{1000 * f32:.0f} | {1000 * b16:.0f} | {r['params'] / l4['params']:.3f} | "
            f"{f32 / med['anunet L4'][0]:.2f} | {b16 / med['anunet L4'][1]:.2f} | {r['flops'] / unet['flops']:.2f} | "
            f"{PAPER.get(name, '')} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for n, r in rows.items():
        out[n] = {k: v for k, v in r.items() if k not in ("fp32", "bf16")}
        out[n].update(fp32_median_s=med[n][0], bf16_median_s=med[n][1], fp32_s=r["fp32"], bf16_s=r["bf16"])
    meta = {"repeats": args.repeats, "threads": args.threads, "widths": args.widths, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "loadavg_1min": load}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "nets": out}, indent=1) + "\n", encoding="utf-8")
    if args.md:
        args.md.write_text(table + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
