"""Sononet vs AG-Sononet as in seed 003 Table 5: parameters and forward / backward time per pass, on this machine.

Seed 003 Table 5 times one forward and one backward pass (ms, GPU, 224x288 ultrasound frames). Here: every capacity
(8, 16, 32), 1 input channel, 2 classes, a batch of ``--batch`` images of ``--size`` (default 1x1x256x256, the chest
X-ray setting of ``configs/cxr_tb_*``), in fp32 and in agseg's default (bf16 autocast + channels_last). Forward
in training mode (what the backward needs) and the backward of a cross-entropy loss are timed separately; every
(net, precision) runs once per round, round-robin after a warm-up, and the table gives medians.

    python benchmarks/bench_sononet.py [--rounds 15] [--threads 1] [--batch 1] [--size 256 256]
        [--out benchmarks/results/sononet.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import agseg
from agseg.nets.summary import count_parameters

ROOT = Path(__file__).resolve().parents[1]
#: seed 003 Table 5: (forward ms, backward ms, parameters in millions)
TABLE5 = {
    "sononet8": (1.36, 2.60, 0.16),
    "ag_sononet8": (1.92, 3.47, 0.18),
    "sononet16": (1.45, 3.92, 0.65),
    "ag_sononet16": (1.94, 5.13, 0.70),
    "sononet32": (2.40, 6.72, 2.58),
    "ag_sononet32": (2.92, 8.68, 2.79),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sononet.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 1, *args.size)
    y = torch.randint(0, 2, (args.batch,))
    variants = []
    for name in TABLE5:
        torch.manual_seed(0)
        net = agseg.create_model(name, in_channels=1, out_channels=2).train()
        for precision in ("fp32", "bf16"):
            m = copy.deepcopy(net).to(memory_format=torch.channels_last) if precision == "bf16" else net
            xx = x.to(memory_format=torch.channels_last) if precision == "bf16" else x
            variants.append((name, precision, m, xx))
    times: dict[tuple[str, str], dict[str, list[float]]] = {}

    def one(name, precision, m, xx) -> tuple[float, float]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            out = m(xx)
        out = out[0] if isinstance(out, (list, tuple)) else out
        t1 = time.perf_counter()
        F.cross_entropy(out.float(), y).backward()
        t2 = time.perf_counter()
        m.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1

    for v in variants:
        one(*v)  # warm-up
    for r in range(args.rounds):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            fwd, bwd = one(*v)
            rec = times.setdefault((v[0], v[1]), {"fwd": [], "bwd": []})
            rec["fwd"].append(fwd)
            rec["bwd"].append(bwd)
    rows = []
    for (name, precision), rec in times.items():
        net = next(v[2] for v in variants if v[0] == name)
        rows.append({"net": name, "precision": precision, "params": count_parameters(net),
                     "fwd_ms": 1e3 * statistics.median(rec["fwd"]), "bwd_ms": 1e3 * statistics.median(rec["bwd"]),
                     "paper_fwd_ms": TABLE5[name][0], "paper_bwd_ms": TABLE5[name][1],
                     "paper_params_m": TABLE5[name][2]})  # fmt: skip
    print(f"input {args.batch}x1x{args.size[0]}x{args.size[1]}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| net | precision | params (M) | fwd (ms) | bwd (ms) | paper fwd/bwd (ms, GPU) | paper params |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['precision']} | {r['params'] / 1e6:.2f} | {r['fwd_ms']:.1f} | {r['bwd_ms']:.1f} | "
              f"{r['paper_fwd_ms']}/{r['paper_bwd_ms']} | {r['paper_params_m']}M |")  # fmt: skip
    for cap in (8, 16, 32):
        for p in ("fp32", "bf16"):
            a = next(r for r in rows if r["net"] == f"ag_sononet{cap}" and r["precision"] == p)
            b = next(r for r in rows if r["net"] == f"sononet{cap}" and r["precision"] == p)
            pf, pb = TABLE5[f"ag_sononet{cap}"][0] / TABLE5[f"sononet{cap}"][0], TABLE5[f"ag_sononet{cap}"][1] / TABLE5[
                f"sononet{cap}"][1]  # fmt: skip
            print(f"capacity {cap} {p}: AG / plain forward {a['fwd_ms'] / b['fwd_ms']:.2f} (paper {pf:.2f}), "
                  f"backward {a['bwd_ms'] / b['bwd_ms']:.2f} (paper {pb:.2f})")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"input": [args.batch, 1, *args.size], "threads": args.threads, "rows": rows},
                              indent=1), encoding="utf-8")  # fmt: skip
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
