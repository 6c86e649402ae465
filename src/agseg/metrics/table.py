"""Per-case metric rows, their aggregation (mean +/- std, median) and CSV/JSON output.

Aggregation never drops a case silently (DESIGN convention 6; MONAI issue #9095, where NaN HD95 values of
missed structures vanished from the mean): every metric reports ``n`` (cases), ``n_defined`` (finite values,
over which mean/std/median are computed) and ``n_undefined`` (NaN, +/-inf or missing), split into ``n_nan``,
``n_inf`` and ``n_missing``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agseg.fileio import atomic_write_text
from agseg.metrics.overlap import check_pair

__all__ = [
    "DEFAULT_METRICS",
    "ID_COLUMNS",
    "MetricSummary",
    "evaluate_case",
    "format_summary",
    "read_csv",
    "read_csv_table",
    "summarize",
    "write_csv",
    "write_summary_json",
]

DEFAULT_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "sensitivity", "specificity", "hd", "hd95", "assd")
"""The metrics computed when none are named: by :func:`evaluate_case`, ``agseg evaluate`` and the experiment config
(``sensitivity`` is :func:`~agseg.metrics.recall` under the thesis' name)."""

ID_COLUMNS: tuple[str, ...] = (
    "model",
    "repeat",
    "fold",
    "case_id",
    "case",
    "status",
    "target",
    "predicted",
    "predicted_class",
)
"""Columns of a per-case table that identify or describe a case rather than score it (a classifier's target and
prediction among them): never summarised or compared as metrics."""


@dataclass(frozen=True)
class MetricSummary:
    """Summary of one metric over cases.

    Attributes:
        mean: mean over the defined (finite) values; NaN if none.
        std: sample standard deviation (``ddof=1``) of the defined values; NaN if fewer than two.
        median: median of the defined values; NaN if none.
        min: smallest defined value.
        max: largest defined value.
        n: number of cases (rows).
        n_defined: finite values.
        n_undefined: ``n - n_defined`` = ``n_nan + n_inf + n_missing``.
        n_nan: NaN values.
        n_inf: infinite values (e.g. a distance with one empty mask).
        n_missing: rows without this metric (or with a non-numeric value).
    """

    mean: float
    std: float
    median: float
    min: float
    max: float
    n: int
    n_defined: int
    n_undefined: int
    n_nan: int
    n_inf: int
    n_missing: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict with NaN/inf written as ``None`` (valid JSON)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _to_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("", "none", "null"):
            return None
        try:
            return float(s)  # accepts "nan", "inf", "-inf"
        except ValueError:
            return None
    return None


def _numeric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in cols and not isinstance(v, bool) and _to_float(v) is not None:
                cols.append(k)
    return cols


def summarize(rows: Iterable[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> dict[str, MetricSummary]:
    """Aggregate per-case rows into one :class:`MetricSummary` per metric.

    Args:
        rows: one mapping per case, e.g. ``{"case": "p01", "dice": 0.91, "hd95": 3.2}``. Non-numeric columns
            (case ids) are skipped when ``metrics`` is ``None``.
        metrics: the columns to summarise (default: every column with a numeric value in some row, in order of
            first appearance). A row lacking a requested metric counts as ``n_missing`` (undefined).

    Returns:
        ``{metric: MetricSummary}``; statistics over finite values, with the undefined counted, never dropped.
    """
    rows = list(rows)
    cols = list(metrics) if metrics is not None else _numeric_columns(rows)
    out: dict[str, MetricSummary] = {}
    for col in cols:
        vals: list[float] = []
        n_nan = n_inf = n_missing = 0
        for row in rows:
            v = _to_float(row.get(col))
            if v is None:
                n_missing += 1
            elif math.isnan(v):
                n_nan += 1
            elif math.isinf(v):
                n_inf += 1
            else:
                vals.append(v)
        a = np.asarray(vals, dtype=np.float64)
        nd = int(a.size)
        nan = float("nan")
        out[col] = MetricSummary(
            mean=float(a.mean()) if nd else nan,
            std=float(a.std(ddof=1)) if nd > 1 else nan,
            median=float(np.median(a)) if nd else nan,
            min=float(a.min()) if nd else nan,
            max=float(a.max()) if nd else nan,
            n=len(rows),
            n_defined=nd,
            n_undefined=len(rows) - nd,
            n_nan=n_nan,
            n_inf=n_inf,
            n_missing=n_missing,
        )
    return out


def format_summary(summary: Mapping[str, MetricSummary], digits: int = 4) -> str:
    """A plain-text table: ``metric  mean +/- std  median  n  undefined``."""
    lines = [f"{'metric':<14} {'mean +/- std':>22} {'median':>10} {'n':>5} {'undefined':>10}"]
    for name, s in summary.items():
        ms = f"{s.mean:.{digits}f} +/- {s.std:.{digits}f}"
        lines.append(f"{name:<14} {ms:>22} {s.median:>10.{digits}f} {s.n:>5d} {s.n_undefined:>10d}")
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write per-case rows to CSV (columns in order of first appearance; NaN/inf written as ``nan``/``inf``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="raise")
    w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in cols})
    return atomic_write_text(path, buf.getvalue())  # a crash never leaves a half-written table


def read_csv_table(path: str | Path, text_columns: Collection[str] = ()) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and rows of a CSV written by :func:`write_csv` (or any per-case table).

    Cells become floats where they parse as one (``nan``, ``inf``, ``-inf`` included), ``None`` where empty, blank
    or missing (a short row), and stay strings otherwise. Header names are stripped of surrounding spaces and a
    UTF-8 byte-order mark is skipped.

    Args:
        path: The CSV file.
        text_columns: Columns kept as stripped strings whatever they hold (``""`` when empty or missing), so ids
            such as ``case_id="001"`` or ``"1e5"`` are not turned into numbers.

    Returns:
        ``(header, rows)``: the column names in file order (``[]`` for an empty file) and one dict per data row
        keyed by them (cells beyond the header, if any, under the key ``None``).
    """
    text = set(text_columns)
    rows: list[dict[str, Any]] = []
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if reader.fieldnames is not None:
            reader.fieldnames = header
        for raw in reader:
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in text:
                    row[k] = v.strip() if isinstance(v, str) else ""
                    continue
                if isinstance(v, str) and not v.strip():
                    row[k] = None
                else:
                    f = _to_float(v)
                    row[k] = f if f is not None else v
            rows.append(row)
    return header, rows


def read_csv(path: str | Path, text_columns: Collection[str] = ()) -> list[dict[str, Any]]:
    """Read rows written by :func:`write_csv`; numeric strings (including ``nan``/``inf``) become floats.

    Empty cells become ``None``; ``text_columns`` stay strings (see :func:`read_csv_table`, which also returns
    the header).
    """
    return read_csv_table(path, text_columns)[1]


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_summary_json(summary: Mapping[str, MetricSummary], path: str | Path, **extra: Any) -> Path:
    """Write ``{metric: {mean, std, median, ..., n_undefined}}`` plus ``extra`` keys (NaN/inf anywhere as
    ``null``), atomically."""
    data: dict[str, Any] = _json_safe(dict(extra))
    data["metrics"] = {k: v.as_dict() for k, v in summary.items()}
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def evaluate_case(
    pred: Any,
    ref: Any,
    *,
    spacing: Sequence[float] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[int] | None = None,
    case_id: str | None = None,
) -> dict[str, Any]:
    """One row of metrics for a case.

    Args:
        pred: predicted mask or label map ``(*spatial)``.
        ref: reference, same shape.
        spacing: voxel size per axis.
        metrics: names from :func:`agseg.metrics.list_metrics`.
        labels: ``None``: binary (non-zero is foreground), keys ``"dice"``, ...; a list of labels: multi-class,
            keys ``"dice_<label>"``, ... one per label.
        case_id: stored under ``"case"`` when given.

    Returns:
        ``{"case": ..., metric: value}`` (values may be NaN/inf per the empty-mask convention).
    """
    from agseg.metrics import get_metric

    row: dict[str, Any] = {} if case_id is None else {"case": case_id}
    fns = {m: get_metric(m) for m in metrics}
    if labels is None:
        p, r, sp = check_pair(pred, ref, spacing)
        for m, fn in fns.items():
            row[m] = float(fn(p, r, spacing=sp))
        return row
    if hasattr(pred, "detach"):
        pred = pred.detach().cpu().numpy()
    if hasattr(ref, "detach"):
        ref = ref.detach().cpu().numpy()
    pa, ra = np.asarray(pred), np.asarray(ref)
    check_pair(pa, ra, spacing)
    for lab in labels:
        p, r = pa == lab, ra == lab
        for m, fn in fns.items():
            row[f"{m}_{int(lab)}"] = float(fn(p, r, spacing=spacing))
    return row
