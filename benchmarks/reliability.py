"""The reliability table: every bad input of tests/test_reliability.py, what agseg answers, and whether anything
was lost, dropped or shown as a bare traceback.

It runs the reliability tests with ``AGSEG_RELIABILITY_OUT`` set (each test records the exit code and the first
``error:`` line of its command), then writes the table as Markdown (``docs/reliability.md``) and the raw rows as
JSON.

    python benchmarks/reliability.py [--md docs/reliability.md] [--json benchmarks/results/reliability.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEADER = """# Reliability: bad inputs and what they get

Tried as a hostile but realistic user would: broken datasets, config mistakes, outputs pointed at inputs, kills and
divergence, odd images and tampered model files. Every row is a test in `tests/test_reliability.py` (it fails if the
answer changes for the worse); this page is regenerated from those tests with `python benchmarks/reliability.py`.

Exit codes: 0 done; 1 an error (one line naming the file or key, and the fix); 2 a usage or config error, found
before anything is read or written; 3 done, but some results are missing (`agseg evaluate` with references that have
no prediction); 130 interrupted (finished work is kept). `--debug` (or `AGSEG_DEBUG=1`) shows the traceback of an
error instead of the one line.

"""


def _clean(text: str, tmp: str) -> str:
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/ ]+?\d*/", "…/", text)
    text = text.replace(tmp, "…").replace("|", "\\|")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "reliability.md")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "rows.jsonl"
        env = {**os.environ, "AGSEG_RELIABILITY_OUT": str(record)}
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_reliability.py"),
        ]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:])
        rows = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()] if record.exists() else []
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    lines = [HEADER]
    tracebacks = sum(r["traceback"] for r in rows)
    lines.append(
        f"{len(rows)} bad inputs; {tracebacks} bare tracebacks; every test passed: "
        f"{'yes' if proc.returncode == 0 else 'NO'}.\n"
    )
    for cat, items in by_cat.items():
        lines.append(f"\n## {cat[0].upper() + cat[1:]}\n")
        lines.append("| bad input | exit | what agseg says |")
        lines.append("|---|---|---|")
        for r in items:
            says = _clean(r["says"], tmp) or "(works)"
            lines.append(f"| {_clean(r['case'], tmp)} | {r['exit']} | {says} |")
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"rows": rows, "tests_passed": proc.returncode == 0}, indent=1) + "\n", encoding="utf-8"
    )
    print(f"{len(rows)} rows -> {args.md}, {args.json}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
