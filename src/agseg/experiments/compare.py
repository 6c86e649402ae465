"""Compare cross-validation runs: load their per-case metrics, compute the statistics, write tables and plots.

Reproduces the statistics of the thesis (seed 000): the per-model "mean ± std" tables over folds and repeats
(Tables 4.1-4.8) and the pairwise Kruskal-Wallis p-values (Table 4.9), and adds a paired Wilcoxon signed-rank test
on the same cases, which the shared ``splits.json`` makes possible.

Input contract: a run directory ``RUN/`` holds ``RUN/metrics.csv`` with one row per test case per
``(repeat, fold)``: columns ``model``, ``repeat``, ``fold``, ``case_id``, then numeric metric columns (``dice``,
``hd95``, ``dice_1``, ...). Every numeric column other than ``repeat`` and ``fold`` is a metric. Values may be
``nan`` or ``inf`` (undefined, e.g. a Hausdorff distance with an empty prediction): they are counted in
``n_undefined`` and left out of means and tests, never silently dropped. ``RUN/config.yaml`` (optional) names the
model (top-level ``name``, or ``model: {name: ...}``).

Statistics, for each metric and each pair of models ``(a, b)``:

* Kruskal-Wallis (``scipy.stats.kruskal``) on the defined per-case values of ``a`` and of ``b`` (all repeats
  pooled, as in the thesis Table 4.9); unpaired.
* Wilcoxon signed-rank (``scipy.stats.wilcoxon``, two-sided, scipy defaults) on the differences ``a - b`` of the
  cases present in both runs, matched on ``(repeat, case_id)``, where both values are defined.
* Holm's step-down adjustment of each test's p-values across all pairs of that metric.

Classifier runs (per-case ``target``, ``predicted`` and ``prob_<class>`` columns, as ``agseg cv`` writes them for a
net registered with ``task="classification"``) also get, per model, accuracy, macro precision/recall/F1 and ROC AUC
pooled over the cases and as mean ± std over folds (:func:`agseg.metrics.classification_summary`), and per pair of
models McNemar's test on the cases both classified (exact binomial below 25 discordant pairs) and DeLong's test of
the AUC difference (binary; a paired bootstrap of the one-vs-rest macro AUC for more classes), Holm-adjusted across
the pairs (:func:`agseg.experiments.stats.classifier_pair_stats`). They go to ``classifier_summary.csv``,
``classifier_pairwise.csv`` and a "Classifiers" section of ``compare.md``.

This module loads runs (:func:`load_runs`), orchestrates (:func:`compare_runs`, :func:`write_comparison`) and holds
the :class:`Comparison`; the statistics are pure functions in :mod:`agseg.experiments.stats`, the Markdown/CSV
tables and box plots are rendered by :mod:`agseg.report`. ``holm``, ``format_p``, ``to_markdown``,
``SUMMARY_COLUMNS`` and ``PAIRWISE_COLUMNS`` are re-exported here for existing imports.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agseg.data.errors import DataError
from agseg.experiments.stats import (
    CLASSIFIER_PAIRWISE_COLUMNS,
    PAIRWISE_COLUMNS,
    SUMMARY_COLUMNS,
    adjust_pairwise,
    classifier_pair_stats,
    holm,
    kruskal_all,
    pair_stats,
    summary_stats,
)
from agseg.fileio import atomic_write_bytes, atomic_write_text
from agseg.metrics.table import ID_COLUMNS, read_csv_table
from agseg.report.figures import boxplot_filename, comparison_boxplot_png
from agseg.report.tables import csv_text, format_p, format_value, md_table, to_markdown

__all__ = [
    "CLASSIFIER_PAIRWISE_COLUMNS",
    "CLASSIFIER_SUMMARY_COLUMNS",
    "PAIRWISE_COLUMNS",
    "SUMMARY_COLUMNS",
    "Comparison",
    "RunMetrics",
    "compare_runs",
    "format_p",
    "holm",
    "load_run",
    "load_runs",
    "to_markdown",
    "write_comparison",
]

logger = logging.getLogger(__name__)

_ID_COLUMNS = ID_COLUMNS
_TEXT_COLUMNS = ("model", "case_id")  # read as strings: a case id "001" must not become 1.0
_DEFAULT_EXPERIMENT_NAME = "experiment"  # ExperimentConfig.name's default: not a useful label


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class RunMetrics:
    """Per-case metrics of one model (one run).

    Attributes:
        label: Model name used in tables and plots.
        source: The CSV the rows came from.
        repeat: Repeat index of each row, shape ``(N,)``.
        fold: Fold index of each row, shape ``(N,)``.
        case_id: Case id of each row (``N`` entries).
        values: Metric name -> float values, shape ``(N,)``; NaN / inf mark undefined values.
        target, predicted: a classifier's true and predicted class values, shape ``(N,)`` (None otherwise).
        probs: a classifier's class probabilities ``(N, K)`` (the ``prob_<class>`` columns), or None.
        classes: the class values of the ``probs`` columns (from the run's ``labels.json``), or None.
    """

    label: str
    source: Path
    repeat: np.ndarray
    fold: np.ndarray
    case_id: list[str]
    values: dict[str, np.ndarray]
    target: np.ndarray | None = None
    predicted: np.ndarray | None = None
    probs: np.ndarray | None = None
    classes: list[int] | None = None

    @property
    def is_classifier(self) -> bool:
        """True for the per-case table of a classifier (targets and predictions)."""
        return self.target is not None and self.predicted is not None

    @property
    def metrics(self) -> list[str]:
        """Metric names, in CSV column order."""
        return list(self.values)

    def __len__(self) -> int:
        return len(self.case_id)

    def keys(self) -> list[tuple[int, str]]:
        """The pairing key ``(repeat, case_id)`` of each row."""
        return [(int(r), c) for r, c in zip(self.repeat, self.case_id, strict=True)]


def _read_config_label(config_path: Path) -> str | None:
    if not config_path.is_file():
        return None
    try:
        cfg = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError) as e:
        logger.warning("%s: not readable (%s); labelling the run without it", config_path, e)
        return None
    if not isinstance(cfg, dict):
        return None
    name = cfg.get("name")
    if isinstance(name, str) and name.strip() and name != _DEFAULT_EXPERIMENT_NAME:
        return name.strip()
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"].strip():
        return model["name"].strip()
    if isinstance(model, str) and model.strip():
        return model.strip()
    return None


def _resolve_csv(path: Path) -> tuple[Path, Path | None]:
    """``(metrics.csv, config.yaml or None)`` for a run directory or a CSV path."""
    if path.is_dir():
        csv_path = path / "metrics.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{path}: run directory has no metrics.csv")
        return csv_path, path / "config.yaml"
    if path.is_file():
        # A config.yaml next to a file named metrics.csv describes it; next to another CSV it may not.
        return path, (path.parent / "config.yaml" if path.name == "metrics.csv" else None)
    raise FileNotFoundError(f"{path}: no such run directory or metrics CSV")


def load_runs(path: str | os.PathLike[str]) -> list[RunMetrics]:
    """Load a run directory (``RUN/metrics.csv``) or a metrics CSV; one :class:`RunMetrics` per model in it.

    A CSV whose ``model`` column holds several models gives one run per model, labelled by that column.
    Otherwise the label is ``config.yaml``'s ``name`` (or ``model.name``), else the ``model`` column, else the run
    directory's name (the CSV's stem for a CSV not named ``metrics.csv``).

    Raises:
        FileNotFoundError: ``path`` or ``metrics.csv`` is missing (the message names the path).
        ValueError: The CSV is empty, has no ``case_id`` column, has no numeric metric column, has non-integer
            ``repeat``/``fold`` values, or lists a ``(repeat, case_id)`` twice for one model.
    """
    path = Path(path)
    csv_path, config_path = _resolve_csv(path)
    header, rows = read_csv_table(csv_path, text_columns=_TEXT_COLUMNS)
    if not header:
        raise ValueError(f"{csv_path}: empty file (no header row)")
    if "case_id" not in header:
        raise ValueError(f"{csv_path}: no 'case_id' column (columns: {header})")
    if not rows:
        raise ValueError(f"{csv_path}: no rows")

    metric_cols: list[str] = []
    for col in header:
        if col in _ID_COLUMNS or col.startswith("prob_"):  # a classifier's probabilities describe, not score
            continue
        cells = [r.get(col) for r in rows]
        if any(not (v is None or isinstance(v, float)) for v in cells):
            logger.debug("%s: column %r is not numeric; ignored", csv_path, col)
        elif all(v is None for v in cells):
            logger.debug("%s: column %r is empty; ignored", csv_path, col)
        else:
            metric_cols.append(col)
    if not metric_cols:
        raise ValueError(f"{csv_path}: no numeric metric columns (columns: {header})")

    def _int_col(name: str) -> np.ndarray:
        if name not in header:
            logger.warning("%s: no %r column; taking 0 for every row", csv_path, name)
            return np.zeros(len(rows), dtype=int)
        out = []
        for i, r in enumerate(rows):
            v = r.get(name)
            if not isinstance(v, float) or not math.isfinite(v) or v != int(v):
                raise ValueError(f"{csv_path}: row {i + 2}: {name}={v!r} is not an integer")
            out.append(int(v))
        return np.asarray(out, dtype=int)

    repeat = _int_col("repeat")
    fold = _int_col("fold")
    case_id = [r.get("case_id", "") for r in rows]
    model_col = [r.get("model", "") for r in rows]  # "" for every row without a model column
    values = {c: np.asarray([math.nan if r.get(c) is None else r[c] for r in rows], dtype=float) for c in metric_cols}

    models = list(dict.fromkeys(model_col))
    if len(models) > 1:
        labels = [m or "(no model)" for m in models]
        select = [np.asarray([m == want for m in model_col]) for want in models]
    else:
        label = _read_config_label(config_path) if config_path is not None else None
        if label is None:
            label = models[0] if models and models[0] else None
        if label is None:
            label = csv_path.parent.name if csv_path.name == "metrics.csv" else csv_path.stem
        labels = [label or csv_path.stem]
        select = [np.ones(len(rows), dtype=bool)]

    cls = _classifier_columns(csv_path, header, rows)
    runs = []
    for label, mask in zip(labels, select, strict=True):
        idx = np.flatnonzero(mask)
        run = RunMetrics(
            label=label,
            source=csv_path,
            repeat=repeat[idx],
            fold=fold[idx],
            case_id=[case_id[i] for i in idx],
            values={c: v[idx] for c, v in values.items()},
            **(
                {"target": cls["target"][idx], "predicted": cls["predicted"][idx], "classes": cls["classes"],
                 "probs": cls["probs"][idx] if cls["probs"] is not None else None}
                if cls else {}
            ),
        )  # fmt: skip
        seen: dict[tuple[int, str], int] = {}
        for j, key in enumerate(run.keys()):
            if key in seen:
                raise ValueError(
                    f"{csv_path}: model {label!r} lists case {key[1]!r} twice in repeat {key[0]} "
                    f"(rows {idx[seen[key]] + 2} and {idx[j] + 2}); a case must be in one test fold per repeat"
                )
            seen[key] = j
        runs.append(run)
        logger.debug("loaded %s: %s, %d rows, metrics %s", csv_path, label, len(run), run.metrics)
    return runs


def _classifier_columns(csv_path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A classifier's targets, predictions, probabilities and class values from its per-case table; empty for a
    segmentation table. The classes of the ``prob_<class>`` columns (written in label-set order) come from the
    run's ``labels.json``, else from the values seen when they are as many as the columns."""
    if "target" not in header or "predicted" not in header:
        return {}
    try:
        target = np.asarray([int(r["target"]) for r in rows], dtype=np.int64)
        predicted = np.asarray([int(r["predicted"]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError, KeyError):
        logger.warning("%s: target/predicted columns are not class values; not compared as a classifier", csv_path)
        return {}
    prob_cols = [c for c in header if c.startswith("prob_")]
    classes: list[int] | None = None
    labels_json = csv_path.parent / "labels.json"
    if labels_json.is_file():
        import json

        try:
            classes = sorted(int(k) for k in json.loads(labels_json.read_text(encoding="utf-8"))["labels"])
        except (ValueError, KeyError, TypeError):
            classes = None
    if classes is None:
        seen = sorted(set(target.tolist()) | set(predicted.tolist()))
        classes = seen if len(seen) == len(prob_cols) else None
    probs = None
    if prob_cols and classes is not None and len(classes) == len(prob_cols):
        probs = np.asarray(
            [[r[c] if isinstance(r.get(c), float) else math.nan for c in prob_cols] for r in rows], dtype=float
        )
    return {"target": target, "predicted": predicted, "probs": probs, "classes": classes}


def load_run(path: str | os.PathLike[str]) -> RunMetrics:
    """Load one model's run: a run directory (``RUN/metrics.csv``) or a metrics CSV.

    See :func:`load_runs` for labelling; this raises a ``ValueError`` when the CSV holds several models.
    """
    runs = load_runs(path)
    if len(runs) > 1:
        raise ValueError(f"{path}: holds {len(runs)} models ({[r.label for r in runs]}); use load_runs() to split them")
    return runs[0]


# --------------------------------------------------------------------------------------------------- comparing


@dataclass
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes:
        runs: The compared runs (labels unique).
        metrics: The compared metric names.
        summary: One dict per (model, metric) with the keys of :data:`SUMMARY_COLUMNS`.
        pairwise: One dict per (metric, pair of models) with the keys of :data:`PAIRWISE_COLUMNS`; pairs follow
            the order of ``runs`` (``model_a`` before ``model_b``); differences are ``a - b``.
        omnibus: Metric -> Kruskal-Wallis ``(statistic, p)`` over all models (NaN with fewer than 3 models).
        notes: Warnings about the comparison (missing metrics, fewer than two models, ...).
        classifier_summary: for classifier runs, one dict per model with the keys of
            :data:`CLASSIFIER_SUMMARY_COLUMNS` (empty otherwise).
        classifier_pairwise: for classifier runs, one dict per pair with the keys of
            :data:`~agseg.experiments.stats.CLASSIFIER_PAIRWISE_COLUMNS` (McNemar, DeLong / bootstrap).
        classifier_groups: with ``group_pattern``, for classifier runs, one dict per model and group of cases with
            the keys of :data:`CLASSIFIER_GROUP_COLUMNS` (pooled over the group's cases).
        group_pattern: the regex that puts each case in a group (see :func:`case_groups`).
    """

    runs: list[RunMetrics]
    metrics: list[str]
    summary: list[dict[str, Any]] = field(default_factory=list)
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    omnibus: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    classifier_summary: list[dict[str, Any]] = field(default_factory=list)
    classifier_pairwise: list[dict[str, Any]] = field(default_factory=list)
    classifier_groups: list[dict[str, Any]] = field(default_factory=list)
    group_pattern: str | None = None

    @property
    def labels(self) -> list[str]:
        """Model labels, in run order."""
        return [r.label for r in self.runs]

    def summary_row(self, model: str, metric: str) -> dict[str, Any]:
        """The summary row of ``model`` and ``metric``."""
        for row in self.summary:
            if row["model"] == model and row["metric"] == metric:
                return row
        raise KeyError(f"no summary for model {model!r}, metric {metric!r}")

    def pair(self, metric: str, model_a: str, model_b: str) -> dict[str, Any]:
        """The pairwise row of ``metric`` for models ``model_a`` and ``model_b`` (either order as stored)."""
        for row in self.pairwise:
            if row["metric"] == metric and {row["model_a"], row["model_b"]} == {model_a, model_b}:
                return row
        raise KeyError(f"no pairwise row for {metric!r}: {model_a!r} vs {model_b!r}")


def _unique_labels(runs: list[RunMetrics]) -> None:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    seen: dict[str, int] = {}
    for r in runs:
        if counts[r.label] > 1:
            base = r.label
            seen[base] = seen.get(base, 0) + 1
            r.label = f"{base} ({r.source.parent.name})" if r.source.name == "metrics.csv" else f"{base} ({seen[base]})"
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):  # same directory names too: number them
        for i, r in enumerate(runs):
            r.label = f"{r.label} #{i + 1}"
    if any(counts[k] > 1 for k in counts):
        logger.warning("duplicate model labels made unique: %s (use --label to name them)", [r.label for r in runs])


def compare_runs(
    runs: Sequence[RunMetrics | str | os.PathLike[str]],
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    group: str | None = None,
) -> Comparison:
    """Per-model summaries and pairwise tests for every metric.

    Args:
        runs: :class:`RunMetrics`, run directories or metrics CSVs (a CSV with several models gives several runs).
        metrics: Metrics to compare; default: those present in every run, in the first run's column order.
        labels: Model labels overriding the loaded ones, one per run (after expanding multi-model CSVs).
        group: For classifier runs, also the metrics per group of cases, a case's group being what this regex finds
            in its id (its first group, if it has one), e.g. ``'^(MCU|CHN)'`` for the two sources of the chest X-rays.

    Returns:
        The :class:`Comparison`. With one run only the summary is filled and ``notes`` says why no test was run.

    Raises:
        ValueError: No runs, a ``labels`` count that differs from the runs, a requested metric missing from a run,
            or no metric common to all runs, or a ``group`` that is not a valid regex.
        FileNotFoundError: A run path does not exist.
    """
    if group is not None:
        try:
            re.compile(group)
        except re.error as err:
            raise ValueError(f"--group {group!r} is not a valid regular expression: {err}") from None
    loaded: list[RunMetrics] = []
    for r in runs:
        if isinstance(r, RunMetrics):
            loaded.append(
                RunMetrics(r.label, r.source, r.repeat, r.fold, list(r.case_id), dict(r.values), r.target, r.predicted,
                           r.probs, r.classes)
            )  # fmt: skip
        else:
            loaded.extend(load_runs(r))
    if not loaded:
        raise ValueError("no runs to compare")
    if labels:
        if len(labels) != len(loaded):
            raise ValueError(f"{len(labels)} label(s) given for {len(loaded)} run(s) ({[r.label for r in loaded]})")
        for r, lab in zip(loaded, labels, strict=True):
            r.label = str(lab)
    _unique_labels(loaded)

    notes: list[str] = []
    if metrics:
        metric_list = list(dict.fromkeys(metrics))
        for r in loaded:
            missing = [m for m in metric_list if m not in r.values]
            if missing:
                raise ValueError(f"{r.source}: run {r.label!r} has no metric(s) {missing} (it has {r.metrics})")
    else:
        metric_list = [m for m in loaded[0].metrics if all(m in r.values for r in loaded[1:])]
        left_out = sorted({m for r in loaded for m in r.metrics} - set(metric_list))
        if left_out:
            notes.append(f"metrics not in every run, not compared: {left_out}")
        if not metric_list:
            raise ValueError(f"no metric is common to all runs: {[(r.label, r.metrics) for r in loaded]}")

    cmp = Comparison(runs=loaded, metrics=metric_list, notes=notes, group_pattern=group)
    for r in loaded:
        for m in metric_list:
            cmp.summary.append({"model": r.label, "metric": m, **summary_stats(r.values[m], r.repeat, r.fold)})

    _compare_classifiers(cmp)
    if len(loaded) < 2:
        cmp.notes.append(f"only one model ({loaded[0].label!r}): pairwise tests need at least two runs; summary only")
        return cmp

    for m in metric_list:
        rows = [
            {
                "metric": m,
                "model_a": a.label,
                "model_b": b.label,
                **pair_stats(a.values[m], b.values[m], a.keys(), b.keys(), a.fold, b.fold),
            }
            for a, b in combinations(loaded, 2)
        ]
        adjust_pairwise(rows)
        cmp.pairwise.extend(rows)
        cmp.omnibus[m] = kruskal_all([r.values[m][np.isfinite(r.values[m])] for r in loaded])
    if any(row["n_pairs"] == 0 for row in cmp.pairwise):
        cmp.notes.append("some pairs of runs share no defined (repeat, case_id): their Wilcoxon p is n/a")
    if any(row["n_pairs_other_fold"] for row in cmp.pairwise):
        cmp.notes.append("some runs put the same case in different folds: they did not share one splits.json")
    return cmp


CLASSIFIER_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")
CLASSIFIER_SUMMARY_COLUMNS = (
    "model",
    "n",
    "n_folds",
    *(f"{m}{part}" for m in CLASSIFIER_METRICS for part in ("", "_fold_mean", "_fold_std")),
)
"""Columns of a classifier summary row: per metric the value over all cases, and mean/std over the folds."""


GROUP_METRICS = ("accuracy", "f1_macro", "roc_auc")
CLASSIFIER_GROUP_COLUMNS = ("model", "group", "n", *GROUP_METRICS)
"""Columns of a classifier's per-group row (``agseg compare --group``)."""


def case_groups(case_ids: Sequence[str], pattern: str) -> list[str]:
    """Each case's group: the first group of ``pattern`` searched in its id (the whole match if the regex has no
    group), ``"other"`` where it does not match.

    >>> case_groups(["CHNCXR_0001_0", "MCUCXR_0104_1", "x"], "^(MCU|CHN)")
    ['CHN', 'MCU', 'other']
    """
    rx = re.compile(pattern)
    out = []
    for cid in case_ids:
        m = rx.search(cid)
        out.append("other" if m is None else (m.group(1) if rx.groups else m.group(0)))
    return out


def _classifier_rows(run: RunMetrics) -> list[dict[str, Any]]:
    assert run.target is not None and run.predicted is not None
    rows = []
    for i in range(len(run)):
        row = {"repeat": int(run.repeat[i]), "fold": int(run.fold[i]), "target": int(run.target[i]),
               "predicted": int(run.predicted[i])}  # fmt: skip
        if run.probs is not None:
            row.update({f"prob_{k}": float(run.probs[i, k]) for k in range(run.probs.shape[1])})
        rows.append(row)
    return rows


def _compare_classifiers(cmp: Comparison) -> None:
    """Fill :attr:`Comparison.classifier_summary` and ``classifier_pairwise`` when every run is a classifier."""
    from agseg.metrics.classification import classification_summary

    kinds = [r.is_classifier for r in cmp.runs]
    if not any(kinds):
        if cmp.group_pattern is not None:
            cmp.notes.append("--group applies to classifier runs only: no per-group table")
        return
    if not all(kinds):
        cmp.notes.append("classifier and segmentation runs mixed: no classifier tests")
        return
    for r in cmp.runs:
        classes = r.classes or sorted(set(r.target.tolist()) | set(r.predicted.tolist()))  # type: ignore[union-attr]
        rows = _classifier_rows(r)
        s = classification_summary(rows, classes)
        row: dict[str, Any] = {"model": r.label, "n": len(r), "n_folds": s["n_folds"]}
        for m in CLASSIFIER_METRICS:
            row[m] = s["pooled"].get(m, math.nan)
            row[f"{m}_fold_mean"] = s["fold_mean"].get(m, math.nan)
            row[f"{m}_fold_std"] = s["fold_std"].get(m, math.nan)
        cmp.classifier_summary.append(row)
        if cmp.group_pattern is not None:
            groups = case_groups(r.case_id, cmp.group_pattern)
            for g in sorted(set(groups)):
                sub = [c for c, gi in zip(rows, groups, strict=True) if gi == g]
                pooled = classification_summary(sub, classes)["pooled"]
                cmp.classifier_groups.append(
                    {"model": r.label, "group": g, "n": len(sub), **{m: pooled.get(m, math.nan) for m in GROUP_METRICS}}
                )
    for a, b in combinations(cmp.runs, 2):
        classes = a.classes if a.classes is not None and a.classes == b.classes else None
        if a.classes != b.classes:
            cmp.notes.append(
                f"{a.label} and {b.label} have different classes ({a.classes} vs {b.classes}): no AUC test"
            )
        stats = classifier_pair_stats(
            a.target, b.target, a.predicted, b.predicted, a.probs, b.probs, a.keys(), b.keys(), a.fold, b.fold, classes
        )
        cmp.classifier_pairwise.append({"model_a": a.label, "model_b": b.label, **stats})
    for test in ("mcnemar", "auc"):
        adjusted = holm([row[f"{test}_p"] for row in cmp.classifier_pairwise])
        for row, p in zip(cmp.classifier_pairwise, adjusted, strict=True):
            row[f"{test}_p_holm"] = p


def classifier_markdown(comparison: Comparison) -> str:
    """The "Classifiers" section of ``compare.md``: per-model metrics and the pairwise McNemar / AUC tests."""
    c = comparison
    if not c.classifier_summary:
        return ""

    def cell(row: dict[str, Any], m: str) -> str:
        fold = (
            f" ({format_value(row[f'{m}_fold_mean'])} ± {format_value(row[f'{m}_fold_std'])})"
            if row["n_folds"] > 1
            else ""
        )
        return format_value(row[m]) + fold

    out = ["## Classifiers", "", "Over all test cases; in brackets mean ± std over the folds.", ""]
    header = ["Model", "Cases", "Accuracy", "Precision (macro)", "Recall (macro)", "F1 (macro)", "ROC AUC"]
    out += [md_table(header, [[r["model"], str(r["n"]), *(cell(r, m) for m in CLASSIFIER_METRICS)]
                              for r in c.classifier_summary]), ""]  # fmt: skip
    if c.classifier_pairwise:
        out += [
            "McNemar's test on the cases both models classified, matched on (repeat, case_id) (exact binomial below "
            "25 discordant pairs); DeLong's test of the ROC AUC difference (a paired bootstrap for more than two "
            "classes); Holm adjustment across the pairs.",
            "",
        ]
        header = ["Model #1", "Model #2", "pairs", "only #1 right", "only #2 right", "McNemar p", "McNemar p (Holm)",
                  "AUC #1", "AUC #2", "AUC test", "AUC p", "AUC p (Holm)"]  # fmt: skip
        rows = [
            [p["model_a"], p["model_b"], str(p["n_pairs"]), str(p["only_a_correct"]), str(p["only_b_correct"]),
             f"{format_p(p['mcnemar_p'])} ({p['mcnemar_method']})", format_p(p["mcnemar_p_holm"]),
             format_value(p["auc_a"]), format_value(p["auc_b"]), p["auc_method"] or "n/a", format_p(p["auc_p"]),
             format_p(p["auc_p_holm"])]
            for p in c.classifier_pairwise
        ]  # fmt: skip
        out += [md_table(header, rows), ""]
        notes = [f"{p['model_a']} vs {p['model_b']}: {p['note']}" for p in c.classifier_pairwise if p["note"]]
        if notes:
            out += [f"- {n}" for n in notes] + [""]
    if c.classifier_groups:
        out += [f"### By group of cases (`--group '{c.group_pattern}'`)", "", "Over each group's test cases.", ""]
        header = ["Model", "Group", "Cases", "Accuracy", "F1 (macro)", "ROC AUC"]
        rows = [[g["model"], g["group"], str(g["n"]), *(format_value(g[m]) for m in GROUP_METRICS)]
                for g in c.classifier_groups]  # fmt: skip
        out += [md_table(header, rows), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------- output


#: the files a comparison writes (and an earlier one may have left)
COMPARISON_FILES = (
    "summary.csv", "pairwise.csv", "compare.md", "classifier_summary.csv", "classifier_pairwise.csv",
    "classifier_groups.csv",
)  # fmt: skip


def comparison_outputs(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The files of an earlier comparison in ``out_dir`` (tables, Markdown, box plots)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted([out / n for n in COMPARISON_FILES if (out / n).is_file()] + list(out.glob("boxplot_*.png")))


def write_comparison(
    comparison: Comparison, out_dir: str | os.PathLike[str], plots: bool = True, overwrite: bool = False
) -> list[Path]:
    """Write ``summary.csv``, ``pairwise.csv``, ``compare.md`` and ``boxplot_<metric>.png`` into ``out_dir`` (and, for
    classifier runs, ``classifier_summary.csv``, ``classifier_pairwise.csv`` and, with a group pattern,
    ``classifier_groups.csv``).

    Every file is written atomically (temporary file in ``out_dir``, then ``os.replace``).

    Args:
        comparison: From :func:`compare_runs`.
        out_dir: Output folder (created).
        plots: Also write one box plot per metric (one box per model, undefined values left out and counted in
            the tick label).
        overwrite: replace an earlier comparison in ``out_dir`` (its files that this one does not write, such as
            the box plot of a metric no longer compared, are removed); without it such a folder is refused.

    Returns:
        The written paths, in that order.

    Raises:
        DataError: ``out_dir`` holds an earlier comparison and ``overwrite`` is false (before anything is written).
    """
    out = Path(out_dir)
    earlier = comparison_outputs(out)
    if earlier and not overwrite:
        raise DataError(earlier[0], "exists already: not overwritten (pass --overwrite to replace the comparison in "
                        f"{out}, or choose another --out)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    markdown = to_markdown(comparison)
    files = [
        ("summary.csv", csv_text(SUMMARY_COLUMNS, comparison.summary)),
        ("pairwise.csv", csv_text(PAIRWISE_COLUMNS, comparison.pairwise)),
    ]
    if comparison.classifier_summary:
        section = classifier_markdown(comparison)
        cut = markdown.find("\n## Notes")  # the classifier section goes before the notes
        markdown = markdown[: cut + 1] + section + "\n" + markdown[cut + 1 :] if cut >= 0 else markdown + "\n" + section
        files += [
            ("classifier_summary.csv", csv_text(CLASSIFIER_SUMMARY_COLUMNS, comparison.classifier_summary)),
            ("classifier_pairwise.csv", csv_text(CLASSIFIER_PAIRWISE_COLUMNS, comparison.classifier_pairwise)),
        ]
        if comparison.classifier_groups:
            files.append(("classifier_groups.csv", csv_text(CLASSIFIER_GROUP_COLUMNS, comparison.classifier_groups)))
    files.append(("compare.md", markdown))
    for name, text in files:
        atomic_write_text(out / name, text)
        written.append(out / name)
    if plots:
        for m in comparison.metrics:
            path = out / boxplot_filename(m)
            atomic_write_bytes(path, comparison_boxplot_png(comparison, m))
            written.append(path)
    for stale in set(earlier) - set(written):  # the earlier comparison's files this one did not replace
        stale.unlink(missing_ok=True)
    logger.debug("wrote %d file(s) to %s", len(written), out)
    return written
