"""Pooled ROC AUC of the tuberculosis classifiers' CVs, alone and averaged per image (docs/results.md, issue 12).

Every CV named here ran on ``docs/results/cxr_tb/splits.json``, so an image's probabilities all come from models that
neither trained nor chose an epoch on it, and their mean is a held-out figure for an ensemble of those recipes. No
training: the committed per-case tables are read. Prints a table and writes JSON (``--out``).

    python benchmarks/tb_recipe_ensemble.py --out runs/tb_recipe_ensemble.json   # [--overwrite] to replace it
"""

from __future__ import annotations

import argparse
import csv
import json
from itertools import combinations
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from agseg.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent / "docs" / "results"
RUNS = {
    "sononet8": ROOT / "cxr_tb" / "sononet8_metrics.csv",
    "ag_sononet8": ROOT / "cxr_tb" / "ag_sononet8_metrics.csv",
    "sononet8_rerun": ROOT / "cxr_tb_init" / "sononet8_rerun_metrics.csv",
    "ag_sononet8_from_sononet": ROOT / "cxr_tb_init" / "ag_sononet8_init_metrics.csv",
    "ag_sononet8_balanced": ROOT / "cxr_tb_balance" / "ag_sononet8_balanced_metrics.csv",
}


def read(path: Path) -> dict[str, tuple[float, int, int]]:
    """case id -> (P(tuberculosis), true class, fold)."""
    with path.open(newline="", encoding="utf-8") as f:
        return {
            r["case_id"]: (float(r["prob_tuberculosis"]), int(float(r["target"])), int(r["fold"]))
            for r in csv.DictReader(f)
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.overwrite:  # an earlier result is never replaced unasked
        raise SystemExit(f"exists already, not overwritten (use --overwrite): {args.out}")
    tables = {name: read(path) for name, path in RUNS.items()}
    ids = sorted(tables["sononet8"])
    for name, t in tables.items():  # the same images, each in the same fold: the ensemble is held out
        if sorted(t) != ids or any(t[i][2] != tables["sononet8"][i][2] for i in ids):
            raise SystemExit(f"{RUNS[name]}: not the same images and folds as {RUNS['sononet8']}")
    y = np.array([tables["sononet8"][i][1] for i in ids])
    rows = []
    for k in range(1, len(RUNS) + 1):
        for members in combinations(RUNS, k):
            p = np.mean([[tables[m][i][0] for i in ids] for m in members], axis=0)
            rows.append({"members": list(members), "auc": float(roc_auc_score(y, p))})
    print(f"{'pooled AUC':>10}  members ({len(ids)} images, 5 folds)")
    for r in rows:
        print(f"{r['auc']:10.4f}  {' + '.join(r['members'])}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps({"images": len(ids), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
