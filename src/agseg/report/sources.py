"""What a report is made of: the runs, cross-validations, comparisons and metric CSVs given to ``agseg report``.

Nothing here draws or computes a statistic: :func:`discover` reads what each path holds into :class:`ModelSource`
objects (per-case metrics through :func:`agseg.experiments.compare.load_runs`, plus whatever record of the run is
still there: config, versions, label set, splits, logs, predictions, attention snapshots) and
:class:`SavedComparison` objects (an ``agseg compare`` folder whose runs are gone). :mod:`agseg.report.html` lays
them out.

Accepted paths:

* a CV directory (``agseg cv``: ``metrics.csv`` and ``repeat{r}_fold{f}/`` run directories);
* a run directory (``agseg train``, or one fold of a CV: ``metrics.csv`` of its validation or test cases, ``log.csv``);
* a metrics CSV (``metrics.csv`` or any per-case table; one with several models in its ``model`` column gives one
  source per model);
* a folder of metrics CSVs (``*metrics.csv``, e.g. ``docs/results/cxr_lungs/``): one source per file, in name order;
* an ``agseg compare`` folder (``summary.csv``, ``pairwise.csv``, ``compare.md``): its runs are loaded from the sources
  ``compare.md`` lists when they can still be found, else its saved tables are shown as they are.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agseg.experiments.compare import RunMetrics, load_runs
from agseg.metrics.table import read_csv_table

__all__ = ["FoldDir", "ModelSource", "SavedComparison", "discover", "read_log"]

log = logging.getLogger(__name__)

_FOLD_RE = re.compile(r"^repeat(\d+)_fold(\d+)$")


@dataclass
class FoldDir:
    """One training run inside a source: a CV fold (``repeat{r}_fold{f}/``) or the run directory itself.

    Attributes:
        name: ``"repeat0_fold1"``, or ``"run"`` for a training run.
        repeat: Repeat index (``None`` for a training run).
        fold: Fold index (``None`` for a training run).
        path: The run directory.
    """

    name: str
    repeat: int | None
    fold: int | None
    path: Path

    @property
    def label(self) -> str:
        """``"fold 1"`` (``"r1 fold 1"`` beyond the first repeat), or ``"run"``."""
        if self.fold is None:
            return "run"
        return f"fold {self.fold}" if not self.repeat else f"r{self.repeat} fold {self.fold}"

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class ModelSource:
    """One model's results and whatever record of its run is still on disk.

    Attributes:
        given: The path the user gave.
        kind: ``"cv"``, ``"run"`` or ``"csv"`` (per-case metrics only).
        run: Its per-case metrics (``None`` for a run directory without ``metrics.csv``).
        label: Model label (``run.label``; ``--label`` and de-duplication change it).
        root: The run or CV directory, or ``None`` for a CSV.
        folds: Its training runs (CV folds in order, or the run itself).
        header: Columns of its per-case CSV.
        rows: Its per-case rows (floats; ``model`` and ``case_id`` as strings), this model's only.
        config_text: ``config.yaml`` as written (the resolved config), or ``None``.
        config: ``config.yaml`` parsed (plain YAML), or ``None``.
        env: ``env.json`` (versions, machine, start time, command), or ``None``.
        labels: ``labels.json`` (label set, source, cases per value), or ``None``.
        summary: ``summary.json``, or ``None``.
        splits: ``splits.json`` (CV) or ``split.json`` (run), or ``None``.
        postprocessing: ``postprocessing.json``, or ``None``.
        levels: ANU-Net pruning levels: level -> ``metrics_L{l}.csv``.
        notes: What is missing and why (shown in the report).
    """

    given: Path
    kind: str
    run: RunMetrics | None
    label: str
    root: Path | None = None
    folds: list[FoldDir] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    config_text: str | None = None
    config: dict[str, Any] | None = None
    env: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    splits: dict[str, Any] | None = None
    postprocessing: dict[str, Any] | None = None
    levels: dict[int, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        """``"classification"`` when the per-case table has a classifier's columns (target, predicted,
        ``prob_<class>``), else ``"segmentation"``."""
        cols = set(self.header)
        if {"target", "predicted"} <= cols and any(c.startswith("prob_") for c in cols):
            return "classification"
        return "segmentation"

    @property
    def class_names(self) -> dict[int, str]:
        """Label value -> name from ``labels.json`` (``{}`` without it)."""
        labels = (self.labels or {}).get("labels") or {}
        return {int(k): str(v) for k, v in labels.items()}

    def bundle(self, fold: FoldDir) -> dict[str, Any] | None:
        """The fold's ``model/model.json``, or ``None``."""
        return _json(fold.file("model/model.json"))


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: not readable (%s); left out of the report", path, e)
        return None


def _yaml(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    if not path.is_file():
        return None, None
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        log.warning("%s: not readable (%s); left out of the report", path, e)
        return None, None
    return text, data if isinstance(data, dict) else None


def read_log(path: Path) -> dict[str, np.ndarray]:
    """A ``log.csv`` (one row per epoch) as columns of floats (empty cells NaN); ``{}`` when absent or empty."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {k: np.asarray([num(r.get(k)) for r in rows], dtype=float) for k in rows[0] if k}


def _fold_dirs(root: Path) -> list[FoldDir]:
    out = []
    for d in root.iterdir():
        m = _FOLD_RE.match(d.name)
        if m and d.is_dir():
            out.append(FoldDir(d.name, int(m.group(1)), int(m.group(2)), d))
    return sorted(out, key=lambda f: (f.repeat, f.fold))


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    header, rows = read_csv_table(csv_path, text_columns=("model", "case_id", "case", "predicted_class"))
    return header, rows


def _sources_from_csv(
    csv_path: Path, given: Path, kind: str, root: Path | None, folds: list[FoldDir]
) -> list[ModelSource]:
    runs = load_runs(csv_path if root is None else root)
    header, rows = _read_rows(csv_path)
    out = []
    for run in runs:
        mine = [r for r in rows if len(runs) == 1 or (r.get("model") or "(no model)") == run.label]
        out.append(ModelSource(given, kind, run, run.label, root, list(folds), header, mine))
    return out


def _fill_record(src: ModelSource) -> None:
    """Read the run record files of ``src.root`` (whatever is there)."""
    root = src.root
    if root is None:
        return
    src.config_text, src.config = _yaml(root / "config.yaml")
    src.env = _json(root / "env.json")
    src.labels = _json(root / "labels.json")
    src.summary = _json(root / "summary.json")
    src.splits = _json(root / "splits.json") or _json(root / "split.json")
    src.postprocessing = _json(root / "postprocessing.json")
    for f in sorted(root.glob("metrics_L*.csv")):
        m = re.fullmatch(r"metrics_L(\d+)\.csv", f.name)
        if m:
            src.levels[int(m.group(1))] = f


@dataclass
class SavedComparison:
    """An ``agseg compare`` folder whose runs could not be found: its saved tables.

    Attributes:
        path: The folder.
        summary: ``summary.csv`` rows (model, metric, n, mean, ...).
        pairwise: ``pairwise.csv`` rows (metric, model_a, model_b, kw_p, ...).
        markdown: ``compare.md``.
        missing: The sources ``compare.md`` lists that were not found.
    """

    path: Path
    summary: list[dict[str, Any]]
    pairwise: list[dict[str, Any]]
    markdown: str
    missing: list[str]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.summary))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(r["metric"] for r in self.summary))


def _md_run_table(markdown: str) -> list[tuple[str, str]]:
    """``(label, source)`` of the run table at the top of ``compare.md``."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            break
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) >= 2 and cells[:2] != ["Model", "Source"]:
            out.append((cells[0], cells[1]))
    return out


def _compare_dir(path: Path) -> tuple[list[ModelSource], SavedComparison | None]:
    md_path = path / "compare.md"
    markdown = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    runs = _md_run_table(markdown)
    found: list[tuple[str, Path]] = []
    missing = []
    for label, source in runs:
        for base in (Path.cwd(), path.parent, path, path.parent.parent):
            cand = base / source
            if cand.is_file():
                found.append((label, cand))
                break
        else:
            missing.append(source)
    if runs and not missing:
        sources = []
        for label, csv_path in found:
            for s in discover_one(csv_path.parent if csv_path.name == "metrics.csv" else csv_path):
                s.given = path
                s.label = label
                if s.run is not None:
                    s.run.label = label
                sources.append(s)
        return sources, None

    def rows(name: str) -> list[dict[str, Any]]:
        f = path / name
        if not f.is_file():
            return []
        return read_csv_table(f, text_columns=("model", "metric", "model_a", "model_b", "note"))[1]

    saved = SavedComparison(path, rows("summary.csv"), rows("pairwise.csv"), markdown, missing or ["(no run table)"])
    return [], saved


def discover_one(path: Path) -> list[ModelSource]:
    """The sources held by one path (see the module docstring); raises ``FileNotFoundError`` / ``ValueError``
    naming the path when it holds none."""
    path = Path(path)
    if path.is_file():
        if path.name == "metrics.csv" and (path.parent / "config.yaml").is_file():
            return discover_one(path.parent)
        return _sources_from_csv(path, path, "csv", None, [])
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run, CV, comparison folder or metrics CSV")
    folds = _fold_dirs(path)
    has_metrics = (path / "metrics.csv").is_file()
    if folds or (has_metrics and (path / "splits.json").is_file() and not (path / "log.csv").is_file()):
        if not has_metrics:
            raise ValueError(f"{path}: CV directory without metrics.csv (no finished fold?)")
        sources = _sources_from_csv(path / "metrics.csv", path, "cv", path, folds)
    elif (path / "log.csv").is_file() or (path / "model" / "model.json").is_file():
        fd = [FoldDir("run", None, None, path)]
        if has_metrics:
            sources = _sources_from_csv(path / "metrics.csv", path, "run", path, fd)
        else:
            _, cfg = _yaml(path / "config.yaml")
            label = (cfg or {}).get("name") or path.name
            sources = [ModelSource(path, "run", None, str(label), path, fd)]
            sources[0].notes.append("no metrics.csv (the run was not evaluated): learning curves only")
    elif has_metrics:
        sources = _sources_from_csv(path / "metrics.csv", path, "csv", None, [])
    else:
        raise ValueError(f"{path}: not a run, CV or comparison folder (no metrics.csv, log.csv or summary.csv)")
    for s in sources:
        _fill_record(s)
    return sources


def discover(paths: list[Path]) -> tuple[list[ModelSource], list[SavedComparison]]:
    """The model sources and saved comparisons held by ``paths``, in the order given.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A path holds no per-case metrics, run or comparison (the message names it).
    """
    sources: list[ModelSource] = []
    saved: list[SavedComparison] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "metrics.csv").is_file():
            if (p / "summary.csv").is_file() and (p / "pairwise.csv").is_file():
                s, c = _compare_dir(p)
                sources += s
                if c is not None:
                    saved.append(c)
                continue
            csvs = sorted(f for f in p.glob("*metrics.csv") if f.is_file())
            if csvs and not _fold_dirs(p) and not (p / "log.csv").is_file():
                for f in csvs:
                    sources += discover_one(f)
                continue
        sources += discover_one(p)
    return sources, saved
