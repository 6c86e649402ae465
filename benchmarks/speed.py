"""Speed and memory of agseg's segmentation nets side by side with MONAI's, at equal widths, in fp32 and bf16.

For every net: a training step (forward, backward, SGD step) and an inference pass (eval, no_grad; agseg's nets with
their batch norms folded and, on the CPU, each conv + ReLU fused, as ``agseg predict`` runs them), peak memory of
each (PyTorch's allocations during the pass: the profiler's memory events on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA), parameters, forward FLOPs and the achieved GFLOP/s (a training step
counted as 3x the forward FLOPs). Precisions: ``fp32`` and ``bf16`` (bf16 autocast, agseg's default on CPUs with
AMX/AVX-512 bf16). Layouts: each net runs as its framework runs it by default on a CPU: agseg's channels-last (the
trainer's ``train.channels_last: true``, the Predictor's layout on CPUs; on CUDA the Predictor stays contiguous,
which this script does not follow), MONAI's contiguous in fp32; in bf16 every net is channels-last. Extra rows
measure agseg's default Attention U-Net contiguous and MONAI's ``AttentionUnet`` channels-last in fp32, so equal
layouts are compared too. Peers at the same widths 16-256: MONAI's ``AttentionUnet`` (strides 2) and ``BasicUNet``.
onnxruntime (fp32) runs agseg's default Attention U-Net exported to ONNX in the same rounds.

Every (net, precision, layout, pass) is timed once per round, round-robin, the order rotated each round, after a warm-up
round; the table gives medians, so load from other processes hits every variant alike.

Shapes: ``2d`` 4x1x256x256, ``3d`` 1x1x64^3, ``table1`` seed 001 Table 1's 1x1x160x160x96 (slow on a CPU).

    python benchmarks/speed.py [--shapes 2d 3d] [--rounds 5] [--threads N] [--device cpu]
        [--out benchmarks/results/speed.json] [--md docs/benchmarks.md] [--notes benchmarks/speed_notes.md]
        [--overwrite]   # an existing --out or --md is kept unless --overwrite
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import agseg
from agseg.nets.fuse import fold_batchnorm, fuse_conv_relu
from agseg.nets.summary import count_flops, count_parameters
from agseg.runtime import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (16, 32, 64, 128, 256)
SHAPES = {"2d": (4, 1, 256, 256), "3d": (1, 1, 64, 64, 64), "table1": (1, 1, 160, 160, 96)}
PRECISIONS = ("fp32", "bf16")
CL, CONTIGUOUS = "channels-last", "contiguous"
DEFAULT = "agseg attention_unet"
MONAI = "monai AttentionUnet"


def _agseg(name: str, **kw) -> Callable[[int], nn.Module]:
    return lambda d: agseg.create_model(name, spatial_dims=d, in_channels=1, out_channels=1, **kw)


def _monai_attention(d: int) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(d, 1, 1, WIDTHS, (2,) * (len(WIDTHS) - 1))


def _monai_basic(d: int) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(d, 1, 1, features=(*WIDTHS, WIDTHS[0]))


#: label -> (factory(spatial_dims), shapes it runs on)
NETS: dict[str, tuple[Callable[[int], nn.Module], tuple[str, ...]]] = {
    "agseg unet": (_agseg("unet", channels=WIDTHS), ("2d", "3d", "table1")),
    DEFAULT: (_agseg("attention_unet", channels=WIDTHS), ("2d", "3d", "table1")),
    "agseg attention_unet up=interp": (
        _agseg("attention_unet", channels=WIDTHS, up_mode="interp"),
        ("2d", "3d", "table1"),
    ),
    "agseg attention_unet up=resize": (_agseg("attention_unet", channels=WIDTHS, up_mode="resize"), ("2d", "3d")),
    "agseg anunet": (_agseg("anunet", channels=WIDTHS), ("2d",)),
    "agseg focusnetpp": (_agseg("focusnetpp"), ("2d",)),
    MONAI: (_monai_attention, ("2d", "3d", "table1")),
    "monai BasicUNet": (_monai_basic, ("2d", "3d")),
}


def _main_output(y):
    return y[0] if isinstance(y, (list, tuple)) else y


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call of ``fn`` above what was allocated before it, in MiB.

    CUDA: the caching allocator's peak. CPU: the allocations and frees that PyTorch's profiler records, summed in
    time order (the process' resident set cannot say: freed memory stays resident in the C allocator).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    deltas = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
    )
    run = peak = 0
    for _, d in deltas:
        run += d
        peak = max(peak, run)
    return peak / 2**20


class Variant:
    """One net at one precision: its training copy, its inference copy and one timed call of each."""

    def __init__(
        self, label: str, factory, dims: int, shape, precision: str, device: torch.device, layout: str = CL
    ) -> None:
        torch.manual_seed(0)
        self.label, self.precision, self.device, self.layout = label, precision, device, layout
        self.key = (label, precision, layout)
        fmt = (torch.channels_last if dims == 2 else torch.channels_last_3d) if layout == CL else None
        net = factory(dims).to(device)
        self.params = count_parameters(net)
        self.flops = count_flops(net, shape)
        self.train_net = net.to(memory_format=fmt) if fmt else net
        # agseg's nets as agseg predict runs them: norms folded, each conv + ReLU one oneDNN call on the CPU
        infer = fold_batchnorm(net)[0] if label.startswith("agseg") else copy.deepcopy(net)  # never train_net
        if label.startswith("agseg") and device.type == "cpu":
            infer = fuse_conv_relu(infer, inplace=True)[0]
        self.infer_net = (infer.to(memory_format=fmt) if fmt else infer).eval()
        self.x = torch.randn(shape, device=device)
        self.x = self.x.to(memory_format=fmt) if fmt else self.x
        self.target = (torch.rand(shape, device=device) > 0.5).float()
        self.opt = torch.optim.SGD(self.train_net.parameters(), lr=1e-3, momentum=0.9)
        self.loss = nn.BCEWithLogitsLoss()

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def infer(self) -> float:
        self.infer_net.eval()
        self._sync()
        t = time.perf_counter()
        with torch.no_grad(), self.autocast():
            _main_output(self.infer_net(self.x))
        self._sync()
        return time.perf_counter() - t

    def train(self) -> float:
        self.train_net.train()
        self._sync()
        t = time.perf_counter()
        with self.autocast():
            y = _main_output(self.train_net(self.x))
        self.loss(y.float(), self.target).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._sync()
        return time.perf_counter() - t


class OrtVariant:
    """agseg's default Attention U-Net (batch norms kept: onnxruntime folds them itself) run by onnxruntime."""

    def __init__(self, dims: int, shape) -> None:
        import onnxruntime as ort

        torch.manual_seed(0)
        net = NETS[DEFAULT][0](dims).eval()
        self.label, self.precision, self.layout = "agseg attention_unet (onnxruntime)", "fp32", CONTIGUOUS
        self.key = (self.label, self.precision, self.layout)
        self.params, self.flops = count_parameters(net), count_flops(net, shape)
        self.x = torch.randn(shape).numpy()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            path = str(Path(tmp) / "net.onnx")
            torch.onnx.export(net, (torch.zeros(shape),), path, dynamo=True, external_data=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def infer(self) -> float:
        t = time.perf_counter()
        self.session.run(None, {self.name: self.x})
        return time.perf_counter() - t


def layouts(label: str, precision: str) -> tuple[str, ...]:
    """The layouts a net is timed in: its framework's default first (agseg: channels-last; MONAI: contiguous in
    fp32), bf16 always channels-last; plus the other fp32 layout for the two nets the targets compare."""
    if precision == "bf16":
        return (CL,)
    if label == DEFAULT:
        return (CL, CONTIGUOUS)
    if label == MONAI:
        return (CONTIGUOUS, CL)
    return (CL,) if label.startswith("agseg") else (CONTIGUOUS,)


def default_layout(label: str, precision: str) -> str:
    return layouts(label, precision)[0]


def bench_shape(key: str, rounds: int, device: torch.device, onnx: bool) -> dict:
    shape = SHAPES[key]
    dims = len(shape) - 2
    variants: list = []
    for label, (factory, where) in NETS.items():
        if key not in where:
            continue
        for p in PRECISIONS:
            if p == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
                continue
            for layout in layouts(label, p):
                variants.append(Variant(label, factory, dims, shape, p, device, layout))
    if onnx and device.type == "cpu" and key != "table1":
        try:
            variants.append(OrtVariant(dims, shape))
        except Exception as err:  # an optional peer: say why it is missing
            print(f"onnxruntime skipped: {type(err).__name__}: {err}")
    jobs = [(v, m) for v in variants for m in ("infer", "train") if hasattr(v, m)]
    times: dict[tuple[str, str, str, str], list[float]] = {}
    peaks: dict[tuple[str, str, str, str], float | None] = {}
    for v, m in jobs:  # warm-up round, then the peak memory of each pass (profiled, so not timed)
        getattr(v, m)()
        peaks[(*v.key, m)] = peak_mib(getattr(v, m), device) if isinstance(v, Variant) else None
    for r in range(rounds):
        k = r % len(jobs)
        for v, m in jobs[k:] + jobs[:k]:
            times.setdefault((*v.key, m), []).append(getattr(v, m)())
        print(f"{key}: round {r + 1}/{rounds}", flush=True)
    rows = []
    for v in variants:
        net, precision, layout = v.key
        row = {"net": net, "precision": precision, "layout": layout, "params": v.params, "gflops": v.flops / 1e9}
        for m in ("infer", "train"):
            if (*v.key, m) in times:
                s = statistics.median(times[(*v.key, m)])
                row[f"{m}_s"] = s
                row[f"{m}_gflops_per_s"] = (v.flops if m == "infer" else 3 * v.flops) / s / 1e9
                row[f"{m}_peak_mib"] = peaks[(*v.key, m)]
        rows.append(row)
    return {"shape": list(shape), "rows": rows, "ratios": ratios(rows)}


def _layout_of(row: dict) -> str:
    """A row's layout; rows of JSON written before layouts were recorded: bf16 channels-last, fp32 contiguous."""
    return row.get("layout") or (CL if row["precision"] == "bf16" else CONTIGUOUS)


def _get(rows, net, precision, key, layout: str | None = None):
    """``key`` of ``net``'s row at ``precision`` in ``layout`` (default: the net's default layout)."""
    layout = layout or default_layout(net, precision)
    for r in rows:
        if r["net"] == net and r["precision"] == precision and _layout_of(r) == layout and key in r:
            return r[key]
    return None


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def ratios(rows: list[dict]) -> dict[str, float | None]:
    """The issue's ratios: ours over MONAI's at equal precision (each in its default layout, and both channels-last
    in fp32), our default over MONAI's fp32 default, the gate overhead and the effect of the layout."""
    out: dict[str, float | None] = {}
    ours_default = "bf16" if any(r["precision"] == "bf16" for r in rows) else "fp32"
    for net in [r["net"] for r in rows if r["net"].startswith("agseg attention_unet") and "onnx" not in r["net"]]:
        if f"{net} / {MONAI}, fp32, infer" in out:
            continue
        for m in ("infer", "train"):
            for p in PRECISIONS:
                a, b = _get(rows, net, p, f"{m}_s"), _get(rows, MONAI, p, f"{m}_s")
                out[f"{net} / {MONAI}, {p}, {m}"] = _ratio(a, b)
            if net == DEFAULT:
                a, b = _get(rows, net, "fp32", f"{m}_s"), _get(rows, MONAI, "fp32", f"{m}_s", CL)
                out[f"{net} / {MONAI} {CL}, fp32, {m}"] = _ratio(a, b)
            a, b = _get(rows, net, ours_default, f"{m}_s"), _get(rows, MONAI, "fp32", f"{m}_s")
            out[f"{net} {ours_default} / {MONAI} fp32, {m}"] = _ratio(a, b)
    for m in ("infer", "train"):
        a, b = _get(rows, DEFAULT, ours_default, f"{m}_s"), _get(rows, "agseg unet", ours_default, f"{m}_s")
        out[f"gate overhead (attention_unet / unet), {ours_default}, {m} time"] = _ratio(a, b)
    a, b = _get(rows, DEFAULT, "fp32", "params"), _get(rows, "agseg unet", "fp32", "params")
    out["gate overhead (attention_unet / unet), parameters"] = _ratio(a, b)
    for net in (DEFAULT, MONAI):
        for m in ("infer", "train"):
            a, b = _get(rows, net, "fp32", f"{m}_s", CL), _get(rows, net, "fp32", f"{m}_s", CONTIGUOUS)
            out[f"layout: {net} fp32 {CL} / {CONTIGUOUS}, {m}"] = _ratio(a, b)
    return out


def targets(result: dict) -> list[tuple[str, str, bool | None]]:
    """The acceptance targets of the speed issue, per shape: (target, measured, met). In fp32 ours must be no slower
    than MONAI's in either of its layouts (its default, contiguous, and channels-last; unknown while one is missing).
    "Our default against MONAI's fp32 default" compares with MONAI's default layout, contiguous, as the issue says."""
    out = []
    for key, res in result["shapes"].items():
        r = res["ratios"]
        for p in PRECISIONS:
            for m in ("infer", "train"):
                vals = [r.get(f"{DEFAULT} / {MONAI}, {p}, {m}")]
                if p == "fp32":
                    vals.append(r.get(f"{DEFAULT} / {MONAI} {CL}, fp32, {m}"))
                met = None if any(v is None for v in vals) else max(vals) <= 1
                shown = " / ".join(_f(v) for v in vals)
                what = f"vs MONAI {CONTIGUOUS} / {CL}" if p == "fp32" else "both channels-last"
                out.append((f"{key}: default attention_unet / MONAI, {p}, {m} <= 1 ({what})", shown, met))
        for m, limit in (("train", 0.5), ("infer", 0.3)):
            v = next((x for k, x in r.items() if k.startswith(f"{DEFAULT} bf16 / {MONAI} fp32, {m}")), None)
            met = None if v is None else v <= limit
            out.append((f"{key}: default (bf16) / MONAI fp32, {m} <= {limit}", _f(v), met))
        for k, v in r.items():
            if k.startswith("gate overhead"):
                out.append((f"{key}: {k} <= 1.10", _f(v), None if v is None else v <= 1.10))
    return out


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown(result: dict) -> str:
    env = result["env"]
    lines = [
        "# Speed and memory: agseg vs MONAI",
        "",
        "Generated by `python benchmarks/speed.py --md docs/benchmarks.md` from one run "
        f"({env['date']}, {env['cpu']}, torch {env['torch']}, {env['threads']} thread(s), device {env['device']}, "
        f"load average at start {env['loadavg']}, {result['rounds']} rounds). Medians of interleaved rounds; widths "
        "16-32-64-128-256 for every net (FocusNet++: its own widths). `infer`: one forward in eval mode without "
        "gradients (agseg's nets with batch norms folded and, on the CPU, each conv + ReLU one oneDNN call, as "
        "`agseg predict` runs them); `train`: forward, backward "
        "and an SGD step. `bf16`: bf16 autocast. Layout: each net as its framework runs it by default (agseg "
        "channels-last, as its trainer and its Predictor on CPUs do; MONAI contiguous in fp32; every net "
        "channels-last in bf16), plus agseg's default net contiguous and MONAI's AttentionUnet channels-last in "
        "fp32. Peak: the most memory PyTorch held during one pass "
        "above what it held before (CPU: from the profiler's allocation events; CUDA: the allocator's peak). "
        "GFLOP/s: forward FLOPs (training step: 3x) over the time.",
        "",
    ]
    for key, res in result["shapes"].items():
        lines += [f"## {key}: input {'x'.join(map(str, res['shape']))}", ""]
        lines += [
            "| net | precision | layout | params (M) | GFLOPs | infer (s) | train (s) | infer GFLOP/s | "
            "train GFLOP/s | infer peak (MiB) | train peak (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            cells = [r["net"], r["precision"], r.get("layout", ""), f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.1f}"]
            for k in ("infer_s", "train_s"):
                cells.append(f"{r[k]:.3f}" if k in r else "")
            for k in ("infer_gflops_per_s", "train_gflops_per_s"):
                cells.append(f"{r[k]:.0f}" if k in r else "")
            for k in ("infer_peak_mib", "train_peak_mib"):
                cells.append(f"{r[k]:.0f}" if r.get(k) is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| ratio | value |", "|---|---|"]
        lines += [f"| {k} | {_f(v)} |" for k, v in res["ratios"].items()]
        lines.append("")
    lines += ["## Targets (speed issue)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else ('no' if ok is False else 'n/a')} |" for t, v, ok in targets(result)]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["2d", "3d"], choices=sorted(SHAPES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-onnx", action="store_true", help="leave onnxruntime out")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    ap.add_argument("--md", type=Path, default=None, help="also write the report as Markdown here")
    ap.add_argument("--notes", type=Path, default=ROOT / "benchmarks" / "speed_notes.md",
                    help="hand-written analysis appended to the Markdown report (what explains each miss)")  # fmt: skip
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier --out / --md")
    args = ap.parse_args()
    there = [str(p) for p in (args.out, args.md) if p is not None and p.exists()]
    if there and not args.overwrite:  # before any work: an earlier result is never replaced unasked
        raise SystemExit(f"exists already, not overwritten (use --overwrite): {', '.join(there)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {
        "env": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "rounds": args.rounds,
        "shapes": {},
    }
    for key in args.shapes:
        result["shapes"][key] = bench_shape(key, args.rounds, device, onnx=not args.no_onnx)
    text = markdown(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    tmp.replace(args.out)
    if args.md:
        if args.notes and args.notes.is_file():
            text += "\n" + args.notes.read_text(encoding="utf-8")
        tmp = args.md.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.md)


if __name__ == "__main__":
    main()
