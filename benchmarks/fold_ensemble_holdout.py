"""Fold ensembles measured nnU-Net's way, on a hold-out that chose nothing (issue 16).

An ensemble of a CV's fold models cannot be scored on that CV's own test folds (every other fold trained on them).
So: take the training cases of one fold of an outer CV (``pool``), run an inner k-fold CV on them with ``agseg cv``,
and score on the outer fold's test cases: the inner folds' ensemble, each inner model alone, and any other model
(e.g. the outer CV's own model of that fold, the same recipe on all the pool).

    python benchmarks/fold_ensemble_holdout.py pool DATA OUTER_SPLITS OUT_PREFIX [--fold 0] [--mask-threshold 127]
        # writes OUT_PREFIX_pool.csv (a case list agseg reads) and OUT_PREFIX_ids.json (pool and hold-out ids);
        # like score, it refuses to replace an earlier run's files unless --overwrite
    agseg cv CONFIG --folds 5 --set data.path=OUT_PREFIX_pool.csv --out INNER_CV [--set ...]
    python benchmarks/fold_ensemble_holdout.py score INNER_CV DATA OUT_PREFIX_ids.json OUT_DIR \
        [--metrics dice,hd95] [--mask-threshold 127] [--mirror-axes 1] [--extra RUN ...]
        # per-case CSVs per variant and summary.json (means, medians, paired Wilcoxon tests of the ensemble)
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Nothing is written over an earlier result unless ``--overwrite``: checked before any work starts."""
    there = [str(p) for p in paths if p.exists()]
    if there and not overwrite:
        raise SystemExit(f"exists already, not overwritten (use --overwrite): {', '.join(there)}")


def make_pool(args: argparse.Namespace) -> None:
    from agseg.data.datasets import load_dataset, save_case_list

    _refuse_existing([Path(f"{args.prefix}_pool.csv"), Path(f"{args.prefix}_ids.json")], args.overwrite)

    ds = load_dataset(Path(args.data).resolve(), **_opts(args))
    fold = json.loads(Path(args.splits).read_text(encoding="utf-8"))["folds"][args.fold]
    pool = set(fold["train"]) | set(fold.get("val", []))
    cases = [c for c in ds.cases if c.case_id in pool]
    if len(cases) != len(pool):
        raise SystemExit(f"{args.data}: {len(pool) - len(cases)} of the fold's training cases are missing")
    save_case_list(cases, f"{args.prefix}_pool.csv")
    ids = {"holdout": sorted(fold["test"]), "pool": sorted(pool), "splits": str(args.splits), "fold": args.fold}
    Path(f"{args.prefix}_ids.json").write_text(json.dumps(ids, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} pool cases -> {args.prefix}_pool.csv; {len(fold['test'])} hold-out cases")


def _opts(args: argparse.Namespace) -> dict:
    return {"mask_threshold": args.mask_threshold} if args.mask_threshold is not None else {}


def _name(path: str | Path) -> str:
    p = Path(path)
    return p.parent.name if p.name == "model" else p.name


def _wilcoxon(stats, a: np.ndarray, b: np.ndarray) -> float:
    """Paired Wilcoxon p of ``a`` vs ``b`` (NaNs left out); 1 when they never differ."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(stats.wilcoxon(a[ok], b[ok]).pvalue) if np.any(a[ok] != b[ok]) else 1.0


def score(args: argparse.Namespace) -> None:
    from scipy import stats

    from agseg.data.datasets import load_dataset
    from agseg.experiments.run import evaluate_cases
    from agseg.inference.predictor import EnsemblePredictor, Predictor, cv_fold_runs

    out = Path(args.out)
    _refuse_existing([out / "summary.json"], args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    hold = set(json.loads(Path(args.ids).read_text(encoding="utf-8"))["holdout"])
    cases = [c for c in load_dataset(args.data, **_opts(args)).cases if c.case_id in hold]
    if len(cases) != len(hold):
        raise SystemExit(f"{args.data}: {len(hold) - len(cases)} hold-out case(s) of {args.ids} are missing")
    inner_ids = set(json.loads((Path(args.inner) / "splits.json").read_text(encoding="utf-8"))["case_ids"])
    if inner_ids & hold:
        raise SystemExit(f"{args.inner} trained or tested on {len(inner_ids & hold)} hold-out case(s)")
    axes = tuple(int(a) for a in args.mirror_axes.split(",")) if args.mirror_axes else ()
    # every variant as predicted: the same mirroring, no post-processing (a bundle's own would favour it)
    kw = {"mirror_axes": axes, "postprocess": False}
    variants = {"ensemble": EnsemblePredictor.from_paths([args.inner], **kw)}
    for f in cv_fold_runs(args.inner):
        variants[f"inner_{_name(f)}"] = Predictor.from_path(f, **kw)
    for e in args.extra:
        name = f"extra_{_name(e)}"
        if name in variants:
            raise SystemExit(f"two --extra models are both called {name}: pass folders with different names")
        variants[name] = Predictor.from_path(e, **kw)
    res = {}
    for name, pred in variants.items():
        rows = evaluate_cases(pred, cases, args.metrics.split(","), progress=False)
        res[name] = rows
        with open(out / f"{name}_metrics.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    cols = [k for k in res["ensemble"][0] if k != "case_id"]
    summary: dict = {"n": len(cases), "mirror_axes": list(axes), "variants": {}, "tests": {}}
    for name, rows in res.items():
        summary["variants"][name] = {
            k: {"mean": float(np.nanmean([r[k] for r in rows])), "median": float(np.nanmedian([r[k] for r in rows]))}
            for k in cols
        }
    singles = [n for n in res if n.startswith("inner_")]
    for k in cols:
        ens = np.array([r[k] for r in res["ensemble"]], float)
        members = np.nanmean([[r[k] for r in res[n]] for n in singles], axis=0)
        tests = {"vs_mean_of_inner_singles_p": _wilcoxon(stats, ens, members)}
        for n in singles + [n for n in res if n.startswith("extra_")]:
            other = np.array([r[k] for r in res[n]], float)
            tests[f"vs_{n}_p"] = _wilcoxon(stats, ens, other)
        summary["tests"][k] = tests
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"{'variant':<28}" + "".join(f"{k:>14}" for k in cols))
    for name, v in summary["variants"].items():
        print(f"{name:<28}" + "".join(f"{v[k]['mean']:>14.4f}" for k in cols))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool", help="the outer fold's training cases as a case list, and the hold-out ids")
    p.add_argument("data")
    p.add_argument("splits")
    p.add_argument("prefix")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--mask-threshold", type=int, default=None)
    s = sub.add_parser("score", help="ensemble, members and extra models on the hold-out")
    s.add_argument("inner")
    s.add_argument("data")
    s.add_argument("ids")
    s.add_argument("out")
    s.add_argument("--metrics", default="dice,hd95")
    s.add_argument("--mask-threshold", type=int, default=None)
    s.add_argument("--mirror-axes", default="")
    s.add_argument("--extra", nargs="*", default=[])
    for sp in (p, s):
        sp.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run")
    args = ap.parse_args()
    make_pool(args) if args.cmd == "pool" else score(args)


if __name__ == "__main__":
    main()
