"""``agseg report``: one self-contained HTML page of runs, cross-validations and comparisons.

The page holds what was run (resolved config, data, label set, versions, wall time), learning curves per fold,
per-fold and per-case metric tables with class names and units, the statistics of :mod:`agseg.experiments.compare`
(Kruskal-Wallis, paired Wilcoxon, Holm) with box plots and paired plots, a gallery of the best, median and worst test
cases drawn from the saved predictions (reference, prediction and errors in colour; three mid-planes in 3D), the
attention maps per gate and their evolution over epochs where a run recorded them, and for classifiers a confusion
matrix, ROC curves and per-class metrics.

Every image is a PNG embedded as a ``data:`` URI and the styles are inline: the file opens offline and refers to
nothing outside itself. With ``figures_dir`` each figure is also written as PNG and SVG for a paper.

Statistics are computed by :func:`agseg.experiments.compare.compare_runs` (:mod:`agseg.experiments.stats`); this
module lays them out. Per-fold values are :func:`agseg.experiments.stats.summary_stats` of each fold's cases.

Example::

    from agseg.report.html import build_report, write_report

    report = build_report(["runs/unet", "runs/attention"], labels=["U-Net", "Attention U-Net"])
    write_report(report, "report.html", figures_dir="figures")
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agseg.experiments.compare import Comparison, compare_runs
from agseg.experiments.stats import match_pairs, summary_stats
from agseg.fileio import atomic_write_bytes, atomic_write_text
from agseg.report import figures as F
from agseg.report.sources import FoldDir, ModelSource, SavedComparison, discover, read_log
from agseg.report.tables import display_path, format_p

__all__ = ["Report", "build_report", "check_outputs", "fmt", "metric_label", "write_report"]

log = logging.getLogger(__name__)

_METRIC_NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "hd": "HD",
    "hd95": "HD95",
    "assd": "ASSD",
    "hausdorff": "HD",
    "precision": "precision",
    "recall": "recall",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "correct": "accuracy",
}
_DISTANCES = frozenset({"hd", "hd95", "assd", "hausdorff"})


# ------------------------------------------------------------------------------------------------- formatting


def fmt(x: Any, digits: int = 3) -> str:
    """A value with ``digits`` significant figures, trailing zeros kept (``0.960``, ``13.0``, ``0.000444``);
    ``n/a`` for None/NaN, ``inf``; integers of more than ``digits`` digits are rounded to units (``1235``)."""
    if x is None:
        return "n/a"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "−inf"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits:
        return f"{x:.0f}"
    s = f"{x:#.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return f"{mant.rstrip('.')}e{int(exp)}"
    return s.rstrip(".")


def split_metric(column: str) -> tuple[str, str | None]:
    """``"dice_anterior"`` -> ``("dice", "anterior")``; ``"hd95"`` -> ``("hd95", None)``; unknown names as they are."""
    if column in _METRIC_NAMES:
        return column, None
    for base in sorted(_METRIC_NAMES, key=len, reverse=True):
        if column.startswith(base + "_"):
            return base, column[len(base) + 1 :]
    return column, None


def is_distance(column: str) -> bool:
    """True for a surface-distance metric (HD, HD95, ASSD and their per-class columns): lower is better, in px/mm."""
    return split_metric(column)[0] in _DISTANCES


def metric_label(column: str, unit: str | None = None, class_names: dict[int, str] | None = None,
                 per_class: bool = False) -> str:  # fmt: skip
    """A metric column as a reader's label: ``"HD95, anterior (mm)"``, ``"Dice"``, ``"Dice, mean over classes"``.

    Args:
        column: The CSV column (``dice``, ``hd95_2``, ``dice_posterior``).
        unit: ``"px"`` / ``"mm"`` for distances (None: no unit shown).
        class_names: Label value -> name, for numbered columns (``dice_2``).
        per_class: The table has per-class columns too: the plain name is the mean over classes.
    """
    base, suffix = split_metric(column)
    name = _METRIC_NAMES.get(base, base)
    if suffix is not None:
        cls = class_names.get(int(suffix), suffix) if (class_names and suffix.isdigit()) else suffix.replace("_", " ")
        name = f"{name}, {cls}"
    elif per_class:
        name = f"{name}, mean over classes"
    if base in _DISTANCES and unit:
        name += f" ({unit})"
    return name


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are HTML already)."""
    cell = (lambda c: str(c)) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_e(summary)}</summary>{body}</details>"


def _compact_png(png: bytes) -> bytes:
    """``png`` with its colours reduced to a 256-colour palette when that makes it smaller (plots and overlays
    have few colours; a report of 400 cases per model stays well under 2 MB)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as im:
            q = im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
            buf = io.BytesIO()
            q.save(buf, "PNG", optimize=True)
    except OSError:
        return png
    return buf.getvalue() if buf.tell() < len(png) else png


def _png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    w, h = struct.unpack(">II", png[16:24])
    return int(w), int(h)


# ------------------------------------------------------------------------------------------------- the report


@dataclass
class Report:
    """A built report (:func:`build_report`).

    Attributes:
        html: The page.
        figures: Every figure on it (PNG, and SVG when asked for).
        sources: The models shown.
        comparison: The statistics (``None`` when no source has per-case metrics).
        notes: What the page says is missing or was left out.
        sections: ``id`` of each section on the page, in order.
    """

    html: str
    figures: list[F.FigureFile]
    sources: list[ModelSource]
    comparison: Comparison | None
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


def check_outputs(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = (),
                  overwrite: bool = False) -> None:  # fmt: skip
    """Refuse an output that is one of the inputs (or inside an input's folder as one of its files), or that exists
    already without ``overwrite`` (agseg never writes over a file it did not make unless told to).

    Raises:
        DataError: Naming the output and the fix.
    """
    from agseg.data.errors import DataError

    target = Path(out).resolve()
    for src in inputs:
        s = Path(src).resolve()
        if target == s:
            raise DataError(out, f"output would overwrite the input {src}; choose another --out")
    if target.is_dir():
        raise DataError(out, "is a folder; --out names the HTML file to write (e.g. report.html)")
    if target.exists() and not overwrite:
        raise DataError(
            out, "exists already: not overwritten (pass --overwrite to replace it, or choose another --out)"
        )


@dataclass
class _Ctx:
    """Settings and shared state while a report is built."""

    digits: int
    gallery: int
    max_rows: int
    attention: bool
    svg: bool
    units: str | None
    class_names: dict[int, str] = field(default_factory=dict)
    figures: list[F.FigureFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    datasets: dict[Any, Any] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def f(self, x: Any) -> str:
        return fmt(x, self.digits)

    def add(self, fig: F.FigureFile) -> F.FigureFile:
        base, i = fig.name, 2
        while fig.name in self.names:
            fig.name = f"{base}_{i}"
            i += 1
        self.names.add(fig.name)
        self.figures.append(fig)
        return fig

    def img(self, fig: F.FigureFile, caption: str, cls: str = "") -> str:
        self.add(fig)
        w, _ = _png_size(fig.png)
        width = round(w / 200 * 125) if w else 480  # 200 dpi PNG shown at 125 CSS px per inch
        data = base64.b64encode(_compact_png(fig.png)).decode("ascii")
        alt = _e(fig.name.replace("_", " "))
        img = f'<img alt="{alt}" width="{width}" src="data:image/png;base64,{data}">'
        return (f'<figure class="{cls}" id="fig-{_e(fig.name)}" style="width:{width}px">{img}'
                f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip


def build_report(
    paths: Sequence[str | os.PathLike[str]],
    *,
    labels: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    units: str = "auto",
    title: str | None = None,
    gallery: int = 3,
    max_rows: int = 1000,
    attention: bool = True,
    digits: int = 3,
    svg: bool = False,
    class_names: dict[int, str] | None = None,
) -> Report:
    """Read the runs, CVs, comparison folders or metric CSVs in ``paths`` and lay them out as one HTML page.

    Args:
        paths: Run or CV directories, ``agseg compare`` folders, metrics CSVs, or folders of metrics CSVs.
        labels: Model labels, one per model found (in order), replacing the loaded ones.
        metrics: Metrics to tabulate, test and plot; default: every metric common to the models.
        units: Unit of the distance metrics: ``"px"``, ``"mm"``, ``"none"``, or ``"auto"`` (from the data: px for
            PNG/JPEG/TIFF/BMP, mm otherwise; not shown when the data cannot be found).
        title: Page title (default: the model labels).
        gallery: Cases per model in the gallery (best, median, worst for 3; 0: no gallery).
        max_rows: Most rows of a per-case table (the rest are counted).
        attention: Also predict the attention maps of the gallery's median case with its fold's model (gated nets).
        digits: Significant figures of the values in the tables.
        svg: Render every figure as SVG too (for :func:`write_report`'s ``figures_dir``).
        class_names: Label value -> name for numbered per-class columns (``dice_2`` -> "Dice, posterior") when the
            runs' ``labels.json`` is not there (per-case CSVs); it wins over ``labels.json``.

    Returns:
        The :class:`Report`.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A path holds no results, a label count that does not match the models, or a missing metric.
    """
    if not paths:
        raise ValueError("no runs given: name run or CV directories, compare folders or metrics CSVs")
    sources, saved = discover([Path(p) for p in paths])
    if not sources and not saved:
        raise ValueError(f"no results found in {[str(p) for p in paths]}")
    if labels:
        if len(labels) != len(sources):
            raise ValueError(f"{len(labels)} label(s) given for {len(sources)} model(s) ({[s.label for s in sources]})")
        for s, lab in zip(sources, labels, strict=True):
            s.label = str(lab)
            if s.run is not None:
                s.run.label = str(lab)
    scored = [s for s in sources if s.run is not None]
    comparison = None
    if scored:
        comparison = compare_runs([s.run for s in scored], metrics=metrics or None)  # type: ignore[misc]
        for s, r in zip(scored, comparison.runs, strict=True):
            s.label = r.label
    ctx = _Ctx(digits=digits, gallery=max(0, gallery), max_rows=max(1, max_rows), attention=attention, svg=svg,
               units=None, class_names={int(k): str(v) for k, v in (class_names or {}).items()})  # fmt: skip
    ctx.units = _resolve_units(units, sources, ctx)
    page = _Page(ctx, sources, saved, comparison, title)
    text = page.render()
    return Report(text, ctx.figures, sources, comparison, ctx.notes, page.section_ids)


def write_report(
    report: Report,
    out: str | os.PathLike[str],
    figures_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the page (and, with ``figures_dir``, every figure as ``<name>.png`` and ``<name>.svg``) atomically.

    Every output is checked before anything is written: none may exist unless ``overwrite``.

    Returns:
        The written paths, the page first.

    Raises:
        DataError: An output exists (without ``overwrite``).
    """
    from agseg.data.errors import DataError

    out = Path(out)
    check_outputs(out, overwrite=overwrite)
    files: list[tuple[Path, bytes]] = []
    if figures_dir is not None:
        d = Path(figures_dir)
        if d.exists() and not d.is_dir():
            raise DataError(d, "is a file; --figures names a folder")
        for fig in report.figures:
            files.append((d / f"{fig.name}.png", fig.png))
            if fig.svg is not None:
                files.append((d / f"{fig.name}.svg", fig.svg))
        clash = [p for p, _ in files if p.exists()]
        if clash and not overwrite:
            raise DataError(clash[0], f"exists already ({len(clash)} figure file(s) would be replaced): not "
                            "overwritten (pass --overwrite, or choose another --figures folder)")  # fmt: skip
    written = [atomic_write_text(out, report.html)]
    for p, data in files:
        written.append(atomic_write_bytes(p, data))
    log.debug("wrote %s (%.0f kB) and %d figure file(s)", out, out.stat().st_size / 1024, len(files))
    return written


# ------------------------------------------------------------------------------------------------- data access


def _config(fold: FoldDir) -> Any:
    from agseg.config import load_config

    return load_config(fold.file("config.yaml"))


def _index(ctx: _Ctx, cfg: Any) -> Any:
    """The labelled cases of ``cfg``'s dataset (cached), or the error that prevented reading them."""
    key = (str(cfg.data.path), cfg.data.layout, repr(cfg.data.layout_kwargs()), cfg.task)
    if key not in ctx.datasets:
        from agseg.experiments.run import load_index

        try:
            ctx.datasets[key] = load_index(cfg)
        except Exception as e:  # a dataset that moved must not stop the report
            ctx.datasets[key] = e
    return ctx.datasets[key]


def _source_index(ctx: _Ctx, src: ModelSource) -> tuple[Any, Any] | None:
    """``(config of the first fold, its dataset index or the error)`` of ``src``, or None without folds/config."""
    for fold in src.folds:
        if fold.file("config.yaml").is_file():
            try:
                cfg = _config(fold)
            except Exception as e:
                return None, e
            return cfg, _index(ctx, cfg)
    return None


def _unit_of(ctx: _Ctx, src: ModelSource) -> str | None:
    found = _source_index(ctx, src)
    if not found or isinstance(found[1], Exception) or found[1] is None:
        return None
    from agseg.data.io import RASTER_FORMATS, read_header

    try:
        geom = read_header(found[1].cases[0].image_paths[0])
    except Exception:
        return None
    return "px" if geom.format in RASTER_FORMATS else "mm"


def _resolve_units(units: str, sources: list[ModelSource], ctx: _Ctx) -> str | None:
    units = (units or "auto").lower()
    if units in ("px", "mm"):
        return units
    if units == "none":
        return None
    if units != "auto":
        raise ValueError(f"units must be auto, px, mm or none, got {units!r}")
    if not any(any(is_distance(m) for m in (s.run.metrics if s.run else [])) for s in sources):
        return None
    found = {u for u in (_unit_of(ctx, s) for s in sources) if u}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        ctx.notes.append(f"the models' data differ in units ({sorted(found)}): distances are shown without units")
        return None
    ctx.notes.append(
        "distance units (px or mm) are not recorded in per-case CSVs and the data was not found: distances are "
        "shown without units (give --units px or --units mm)"
    )
    return None


# ------------------------------------------------------------------------------------------------- the page

_CSS = """
:root{--fg:#1d1d1f;--muted:#5f6368;--line:#d9dce1;--bg:#fff;--soft:#f5f7fa;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:40px 0 8px;padding-top:8px;border-top:2px solid var(--line)}
h3{font-size:17px;margin:26px 0 6px}h4{font-size:15px;margin:18px 0 4px}
.sub{color:var(--muted);margin:0 0 14px}
nav{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:8px 14px;margin:14px 0}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;white-space:nowrap}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:3px 9px;text-align:left;vertical-align:top}
thead th{background:var(--soft);border-bottom:2px solid var(--line)}
table.num td:not(:first-child){text-align:right}
table.pairs td:nth-child(n+3){text-align:right}
table.kv th{font-weight:600;color:var(--muted);white-space:nowrap;background:none}
td.sig{font-weight:700}
.scroll{overflow-x:auto;max-width:100%}
details{margin:6px 0 12px}summary{cursor:pointer;color:var(--accent)}
pre{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:8px 10px;font-size:12.5px;
overflow-x:auto}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:6px 0 10px;max-width:100%}figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:13px;color:var(--muted);max-width:560px;margin-top:4px}
.note{background:#fff8e1;border-left:4px solid #f2b600;padding:6px 12px;margin:10px 0;font-size:14px}
.small{font-size:13px;color:var(--muted)}
footer{margin-top:48px;font-size:12.5px;color:var(--muted)}
"""


class _Page:
    """Builds the sections of one report."""

    def __init__(self, ctx: _Ctx, sources: list[ModelSource], saved: list[SavedComparison],
                 comparison: Comparison | None, title: str | None) -> None:  # fmt: skip
        self.ctx = ctx
        self.sources = sources
        self.saved = saved
        self.cmp = comparison
        self.title = title or ("agseg report: " + (", ".join(s.label for s in sources) or "saved comparison"))
        self.section_ids: list[str] = []
        self.gallery_cases: dict[str, list[tuple[str, int]]] = {}
        self.loaded_cases: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def metrics(self) -> list[str]:
        return list(self.cmp.metrics) if self.cmp else []

    def class_names(self) -> dict[int, str]:
        names: dict[int, str] = dict(self.ctx.class_names)
        for s in self.sources:
            for k, v in s.class_names.items():
                names.setdefault(k, v)
        return names

    def label(self, metric: str) -> str:
        per_class = any(split_metric(m)[1] is not None and split_metric(m)[0] == metric for m in self.metrics)
        return metric_label(metric, self.ctx.units, self.class_names(), per_class)

    def note(self, text: str, page: bool = True) -> str:
        if page and text not in self.ctx.notes:
            self.ctx.notes.append(text)
        return f'<p class="note">{_e(text)}</p>'

    def section(self, sid: str, heading: str, body: str) -> str:
        self.section_ids.append(sid)
        return f'<section id="{sid}"><h2>{_e(heading)}</h2>{body}</section>'

    # ------------------------------------------------------------------ page
    def render(self) -> str:
        from agseg import __version__

        parts = []
        parts.append(self.section("run", "What was run", self.what_was_run()))
        if self.cmp is not None or self.saved:
            parts.append(self.section("results", "Results", self.results()))
        if self.cmp is not None and self.plot_metrics():
            parts.append(self.section("plots", "Per-case distributions", self.plots()))
        if (self.cmp is not None and len(self.cmp.runs) > 1) or self.saved:
            parts.append(self.section("statistics", "Statistics", self.statistics()))
        if any(s.task == "classification" for s in self.sources):
            parts.append(self.section("classification", "Classification", self.classification()))
        parts.append(self.section("curves", "Learning curves", self.curves()))
        if any(s.task == "segmentation" for s in self.sources) and self.ctx.gallery:
            parts.append(self.section("gallery", "Gallery: best, median and worst cases", self.gallery()))
        if any(s.task == "segmentation" for s in self.sources):
            parts.append(self.section("attention", "Attention maps", self.attention()))
        notes = self.ctx.notes
        parts.append(self.section("notes", "Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
                                  if notes else "<p>None.</p>"))  # fmt: skip
        nav = "".join(f'<a href="#{sid}">{_e(_SECTION_TITLES.get(sid, sid))}</a>' for sid in self.section_ids)
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        given = ", ".join(dict.fromkeys(display_path(s.given) for s in self.sources)) or ", ".join(
            display_path(c.path) for c in self.saved
        )
        csv_only = [s.label for s in self.sources if s.kind == "csv"]
        banner = ""
        if csv_only and len(csv_only) == len(self.sources):
            banner = self.note(
                "Made from per-case metric CSVs alone: the run directories are gone, so this page has no config, "
                "learning curves, gallery or attention maps; the tables, statistics and plots are complete.",
                page=False,
            )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="agseg {_e(__version__)}">'
            f"<title>{_e(self.title)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>{_e(self.title)}</h1>"
            f'<p class="sub">agseg {_e(__version__)} report of {_e(given)} · {_e(now)}</p>'
            f"{banner}{self.glance()}<nav>{nav}</nav>{''.join(parts)}"
            f"<footer>Generated by <code>agseg report</code> (agseg {_e(__version__)}). Self-contained: every "
            "figure is embedded; nothing is loaded from elsewhere.</footer></main></body></html>\n"
        )

    def glance(self) -> str:
        """One row per model: what it is and its headline number."""
        if not self.sources:
            return ""
        head_metric = next((m for m in ("dice", "correct") if m in self.metrics), self.metrics[0] if self.metrics
                           else None)  # fmt: skip
        rows = []
        for s in self.sources:
            cases = len(s.run) if s.run is not None else 0
            folds = len({(int(r), int(f)) for r, f in zip(s.run.repeat, s.run.fold, strict=True)}) if s.run else 0
            model = ""
            if s.config and isinstance(s.config.get("model"), dict):
                model = str(s.config["model"].get("name", ""))
            cell = "n/a"
            if head_metric and self.cmp and s.run is not None:
                row = self.cmp.summary_row(s.label, head_metric)
                cell = f"{self.ctx.f(row['mean'])} ± {self.ctx.f(row['std'])}"
            rows.append([s.label, model or "—", _KIND.get(s.kind, s.kind), str(cases), str(folds), cell])
        header = ["Model", "Net", "Source", "Case rows", "Folds",
                  f"{self.label(head_metric)}: mean ± std" if head_metric else "headline"]  # fmt: skip
        return _table(header, rows)

    # ------------------------------------------------------------------ what was run
    def what_was_run(self) -> str:
        out = []
        for s in self.sources:
            out.append(f"<h3>{_e(s.label)}</h3>")
            out.extend(self.note(n) for n in s.notes)
            items: list[tuple[str, str]] = [("source", f"<code>{_e(display_path(s.given))}</code> ({_KIND[s.kind]})")]
            if s.kind == "csv":
                items.append(("record", "per-case metrics only: the config, versions, logs and predictions of the run "
                              "are not there"))  # fmt: skip
            cfg = s.config or {}
            model = cfg.get("model") if isinstance(cfg.get("model"), dict) else None
            if model:
                args = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
                items.append(("net", f"<code>{_e(model.get('name'))}</code>" + (f" ({_e(args)})" if args else "")))
            params = self.parameters(s)
            if params:
                items.append(("parameters", f"{params:,}"))
            data = cfg.get("data") if isinstance(cfg.get("data"), dict) else None
            if data:
                items.append(("dataset", f"<code>{_e(data.get('path'))}</code> (layout {_e(data.get('layout'))})"))
                pre = {k: v for k, v in (data.get("preprocess") or {}).items() if v not in (None, False, [], {})}
                if pre:
                    items.append(("preprocessing", _e(", ".join(f"{k}={v}" for k, v in pre.items()))))
            summary = self.data_summary(s)
            if summary:
                items.append(("data", summary))
            if s.labels:
                items.append(("label set", self.label_set(s)))
            elif s.run is not None and s.kind == "csv":
                items.append(("cases", f"{len(set(s.run.case_id))} distinct case ids, {len(s.run)} rows"))
            train = cfg.get("train") if isinstance(cfg.get("train"), dict) else None
            if train:
                keys = ("epochs", "batch_size", "optimizer", "lr", "schedule", "loss", "amp", "select",
                        "attention_every")  # fmt: skip
                items.append(("training", _e(", ".join(f"{k}={train[k]}" for k in keys if k in train))))
            cv = self.cv_facts(s)
            if cv:
                items.append(("splits", cv))
            ev = cfg.get("eval") if isinstance(cfg.get("eval"), dict) else None
            if ev:
                items.append(("evaluation", _e(", ".join(f"{k}={v}" for k, v in ev.items() if v not in (None, [])))))
            if s.postprocessing:
                items.append(("post-processing", self.postprocessing(s)))
            wall = self.wall_time(s)
            if wall:
                items.append(("wall time", wall))
            if s.env:
                keys = ("agseg", "python", "torch", "monai", "numpy", "scipy", "SimpleITK")
                items.append(("versions", _e(", ".join(f"{k} {s.env[k]}" for k in keys if s.env.get(k)))))
                machine = [str(s.env.get(k)) for k in ("platform", "processor") if s.env.get(k)]
                if s.env.get("cuda"):
                    machine.append("CUDA: " + ", ".join(map(str, s.env["cuda"])))
                if s.env.get("cpu_threads"):
                    machine.append(f"{s.env['cpu_threads']} CPU threads")
                items.append(("machine", _e("; ".join(machine))))
                if s.env.get("started"):
                    items.append(("started", _e(s.env["started"])))
                if s.env.get("command"):
                    items.append(("command", f"<code>{_e(s.env['command'])}</code>"))
            out.append(_kv(items))
            per_fold = self.fold_times(s)
            if per_fold:
                out.append(per_fold)
            if s.levels:
                out.append(self.levels(s))
            if s.config_text:
                out.append(_details("resolved config (config.yaml)", f"<pre>{_e(s.config_text)}</pre>"))
        for c in self.saved:
            out.append(f"<h3>Saved comparison <code>{_e(display_path(c.path))}</code></h3>")
            out.append(self.note(
                f"{display_path(c.path)}: the runs it compared were not found ({', '.join(c.missing)}): its saved "
                "tables are shown, without per-case plots"
            ))  # fmt: skip
        return "".join(out)

    def parameters(self, s: ModelSource) -> int | None:
        for fold in s.folds:
            f = fold.file("model/model.safetensors")
            if f.is_file():
                try:
                    from safetensors import safe_open

                    with safe_open(str(f), framework="np") as fh:
                        return int(sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys()))  # noqa: SIM118
                except Exception:
                    return None
        return None

    def data_summary(self, s: ModelSource) -> str:
        found = _source_index(self.ctx, s)
        if not found:
            return ""
        cfg, index = found
        if isinstance(index, Exception) or index is None:
            where = cfg.data.path if cfg is not None else "?"
            return _e(f"not found ({where}): {' '.join(str(index).split())[:200]}")
        key = ("summary", id(index))
        if key not in self.ctx.datasets:
            self.ctx.datasets[key] = self._data_summary(index)
        return self.ctx.datasets[key]

    def _data_summary(self, index: Any) -> str:
        from agseg.data.io import read_header

        geoms = []
        for ref in index.cases[:200]:
            try:
                geoms.append(read_header(ref.image_paths[0]))
            except Exception:
                continue
        if not geoms:
            return _e(f"{len(index.cases)} labelled cases")
        shapes = sorted({g.shape for g in geoms})
        spacings = sorted({tuple(round(v, 3) for v in g.array_spacing) for g in geoms})
        formats = sorted({g.format for g in geoms})
        channels = sorted({g.n_channels for g in geoms})

        def shp(t: tuple[int, ...]) -> str:
            return "×".join(map(str, t))

        shape_text = (
            shp(shapes[0]) if len(shapes) == 1 else f"{shp(shapes[0])} … {shp(shapes[-1])} ({len(shapes)} sizes)"
        )
        sp_text = (
            "×".join(fmt(v) for v in spacings[0])
            if len(spacings) == 1
            else f"{len(spacings)} spacings, e.g. " + "×".join(fmt(v) for v in spacings[0])
        )
        unit = "px" if formats and set(formats) <= {"png", "jpg", "tiff", "bmp"} else "mm"
        checked = f" (of the first {len(geoms)})" if len(index.cases) > len(geoms) else ""
        return _e(
            f"{len(index.cases)} labelled cases; {', '.join(formats)}; {len(geoms[0].shape)}D, size {shape_text}"
            f"{checked}; spacing {sp_text} {unit} (array order); {'/'.join(map(str, channels))} channel(s)"
        )

    def label_set(self, s: ModelSource) -> str:
        lab = s.labels or {}
        names = lab.get("labels") or {}
        counts = lab.get("cases_with_value") or {}
        n = len(lab.get("cases") or {})
        parts = [f"{k}: {_e(v)}" + (f" ({counts[k]} of {n} cases)" if k in counts and n else "")
                 for k, v in names.items()]  # fmt: skip
        kind = "binary" if lab.get("binary") else f"{len(names)} values"
        return "; ".join(parts) + f" <span class='small'>({kind}; {_e(lab.get('source', ''))})</span>"

    def cv_facts(self, s: ModelSource) -> str:
        sp = s.splits or {}
        if "folds" in sp and isinstance(sp["folds"], list):
            sizes = [(len(f.get("train", [])), len(f.get("val", [])), len(f.get("test", []))) for f in sp["folds"]]
            tr = sorted({a for a, _, _ in sizes})
            va = sorted({b for _, b, _ in sizes})
            te = sorted({c for _, _, c in sizes})

            def rng(v: list[int]) -> str:
                return str(v[0]) if len(v) == 1 else f"{v[0]}–{v[-1]}"

            return _e(
                f"{sp.get('n_folds')}-fold × {sp.get('n_repeats')} repeat(s), seed {sp.get('seed')}, "
                f"{len(sp.get('case_ids', []))} cases grouped into {len(set(sp.get('groups', [])))} groups; per fold "
                f"train {rng(tr)}, validation {rng(va)}, test {rng(te)} cases"
            )
        if "train" in sp:
            return _e(f"train {len(sp.get('train', []))}, validation {len(sp.get('val', []))} cases")
        return ""

    def postprocessing(self, s: ModelSource) -> str:
        pp = s.postprocessing or {}
        keep = pp.get("keep_largest") or {}
        if not keep:
            return "none chosen (keeping the largest components did not raise the mean Dice)"
        names = s.class_names
        return _e(", ".join(f"{names.get(int(k), k)}: keep the {v} largest component(s)" for k, v in keep.items()))

    def wall_time(self, s: ModelSource) -> str:
        parts = []
        secs = (s.summary or {}).get("seconds")
        if isinstance(secs, int | float) and secs:
            parts.append(f"{fmt(secs)} s for the last <code>agseg {'cv' if s.kind == 'cv' else 'train'}</code> call")
        train = [b.get("info", {}).get("train_seconds") for f in s.folds if (b := s.bundle(f))]
        train = [t for t in train if isinstance(t, int | float)]
        if train:
            parts.append(f"{fmt(sum(train))} s training over {len(train)} run(s)")
        return "; ".join(parts)

    def fold_times(self, s: ModelSource) -> str:
        if len(s.folds) < 1:
            return ""
        rows = []
        for f in s.folds:
            b = s.bundle(f) or {}
            info = b.get("info", {})
            logc = read_log(f.file("log.csv"))
            n_test = ""
            if s.run is not None and f.fold is not None:
                n_test = str(int(np.sum((s.run.repeat == f.repeat) & (s.run.fold == f.fold))))
            if not info and not logc:
                continue
            rows.append([
                f.label, str(info.get("epochs", len(logc.get("epoch", [])) or "")),
                str(info.get("selected_epoch") or ""), str(info.get("n_train", "")), str(info.get("n_val", "")),
                n_test, fmt(info.get("train_seconds")) if info.get("train_seconds") is not None else "",
            ])  # fmt: skip
        if not rows:
            return ""
        header = ["run", "epochs", "selected epoch", "training cases", "validation cases", "test cases",
                  "training time (s)"]  # fmt: skip
        return _details(f"per-fold training record ({len(rows)} run(s))", _table(header, rows, "num"))

    def levels(self, s: ModelSource) -> str:
        from agseg.experiments.compare import load_run

        runs = []
        for level, path in sorted(s.levels.items()):
            try:
                r = load_run(path)
            except (OSError, ValueError) as e:
                self.note(f"{display_path(path)}: not readable ({e})")
                continue
            r.label = f"L{level}"
            runs.append(r)
        if not runs or s.run is None:
            return ""
        full = s.run
        from agseg.experiments.compare import RunMetrics

        runs.append(RunMetrics("full net", full.source, full.repeat, full.fold, list(full.case_id), dict(full.values)))
        try:
            c = compare_runs(runs, metrics=[m for m in self.metrics if all(m in r.values for r in runs)] or None)
        except ValueError as e:
            return self.note(f"pruning levels of {s.label}: {e}")
        rows = [[r.label, *(self.cell(c.summary_row(r.label, m)) for m in c.metrics)] for r in c.runs]
        return ("<h4>Pruning levels (ANU-Net: each level scored from the same trained nets)</h4>"
                + '<div class="scroll">' + _table(["level", *(self.label(m) for m in c.metrics)], rows, "num")
                + "</div>")  # fmt: skip

    # ------------------------------------------------------------------ results
    def cell(self, row: dict[str, Any]) -> str:
        f = self.ctx.f
        text = f"{f(row['mean'])} ± {f(row['std'])} ({f(row['median'])})"
        if row.get("n_undefined"):
            text += f" [{int(row['n_undefined'])}/{int(row['n'])} undefined]"
        return text

    def results(self) -> str:
        out = []
        if self.cmp is not None:
            c = self.cmp
            labels = [self.label(m) for m in c.metrics]
            out.append("<h3>Per model</h3><p>Per case, over all folds and repeats: mean ± standard deviation "
                       "(median); undefined values (NaN/inf, e.g. a distance to an empty prediction) are left out and "
                       "counted.</p>")  # fmt: skip
            rows = [[r.label, *(self.cell(c.summary_row(r.label, m)) for m in c.metrics)] for r in c.runs]
            out.append('<div class="scroll">' + _table(["Model", *labels], rows, "num") + "</div>")
            out.append("<p>Mean ± standard deviation of the per-fold means (the thesis' fold averages):</p>")
            rows = [
                [r.label, *(f"{self.ctx.f(s['fold_mean'])} ± {self.ctx.f(s['fold_std'])} ({s['n_folds']} folds)"
                            for s in (c.summary_row(r.label, m) for m in c.metrics))]
                for r in c.runs
            ]  # fmt: skip
            out.append('<div class="scroll">' + _table(["Model", *labels], rows, "num") + "</div>")
            out.append("<h3>Per fold</h3><p>Mean over each fold's test cases (undefined values left out and "
                       "counted).</p>")  # fmt: skip
            rows = []
            for r in c.runs:
                for rep, fold in sorted(set(zip(r.repeat.tolist(), r.fold.tolist(), strict=True))):
                    sel = (r.repeat == rep) & (r.fold == fold)
                    cells = []
                    for m in c.metrics:
                        st = summary_stats(r.values[m][sel], r.repeat[sel], r.fold[sel])
                        cells.append(self.ctx.f(st["mean"]) + (f" [{st['n_undefined']} undef.]" if st["n_undefined"]
                                                               else ""))  # fmt: skip
                    rows.append([r.label, str(rep), str(fold), str(int(sel.sum())), *cells])
            out.append('<div class="scroll">' + _table(["Model", "repeat", "fold", "cases", *labels], rows, "num")
                       + "</div>")  # fmt: skip
            out.append("<h3>Per case</h3>")
            for s in self.sources:
                if s.run is not None:
                    out.append(self.case_table(s))
        for sv in self.saved:
            out.append(f"<h3>Saved comparison {_e(display_path(sv.path))}</h3>")
            metrics = sv.metrics
            rows = []
            for model in sv.models:
                cells = []
                for m in metrics:
                    row = next((r for r in sv.summary if r["model"] == model and r["metric"] == m), None)
                    cells.append(self.cell(row) if row else "n/a")
                rows.append([model, *cells])
            out.append('<div class="scroll">' + _table(["Model", *(self.label(m) for m in metrics)], rows, "num")
                       + "</div>")  # fmt: skip
        return "".join(out)

    def case_table(self, s: ModelSource) -> str:
        run = s.run
        assert run is not None
        skip = {"model"}
        header = [h for h in s.header if h not in skip] if s.rows else ["repeat", "fold", "case_id", *run.metrics]
        rows = s.rows or [
            {"repeat": int(run.repeat[i]), "fold": int(run.fold[i]), "case_id": run.case_id[i],
             **{m: run.values[m][i] for m in run.metrics}}
            for i in range(len(run))
        ]  # fmt: skip
        shown = rows[: self.ctx.max_rows]
        names = s.class_names

        def cell(col: str, v: Any) -> str:
            if col in ("repeat", "fold", "target", "predicted") and isinstance(v, float) and math.isfinite(v):
                v = int(v)
                return f"{v} ({names[v]})" if col in ("target", "predicted") and v in names else str(v)
            if isinstance(v, float):
                return self.ctx.f(v)
            return "" if v is None else str(v)

        labels = [self.label(h) if h in run.values else h for h in header]
        body = _table(labels, ([cell(h, r.get(h)) for h in header] for r in shown), "num")
        more = f" (the first {len(shown)} of {len(rows)} rows; all in {display_path(run.source)})" if len(rows) > len(
            shown) else ""  # fmt: skip
        return _details(f"{s.label}: {len(rows)} case rows{more}", f'<div class="scroll">{body}</div>')

    # ------------------------------------------------------------------ statistics
    def statistics(self) -> str:
        out = []
        if self.cmp is not None and len(self.cmp.runs) > 1:
            c = self.cmp
            out.append(
                "<p>Kruskal-Wallis H test on the defined per-case values of each model (unpaired, as thesis Table "
                "4.9); Wilcoxon signed-rank test on the paired differences #1 − #2 of the cases both models were "
                "tested on, matched on (repeat, case id); Holm's step-down adjustment across the pairs of each metric "
                "(<code>agseg.experiments.stats</code>). Bold: adjusted p &lt; 0.05. The effect sizes are the median "
                "and mean paired differences, in the metric's unit.</p>"
            )
            for m in c.metrics:
                out.append(f"<h3>{_e(self.label(m))}</h3>")
                if len(c.runs) > 2:
                    stat, p = c.omnibus.get(m, (math.nan, math.nan))
                    out.append(f"<p>Kruskal-Wallis over all {len(c.runs)} models: H = {_e(self.ctx.f(stat))}, "
                               f"p = {_e(format_p(p))}</p>")  # fmt: skip
                out.append('<div class="scroll">' + self.pairwise_table([p for p in c.pairwise if p["metric"] == m])
                           + "</div>")  # fmt: skip
            notes = [f"{p['metric']}: {p['model_a']} vs {p['model_b']}: {p['note']}" for p in c.pairwise if p["note"]]
            for n in [*c.notes, *notes]:
                self.note(n)
            if notes:
                out.append(_details(f"{len(notes)} note(s) on the tests", "<ul>" + "".join(
                    f"<li>{_e(n)}</li>" for n in notes) + "</ul>"))  # fmt: skip
            if any(np.unique(r.repeat).size > 1 for r in c.runs):
                out.append(self.note("With repeated k-fold a case appears once per repeat: the tests treat those rows "
                                     "as separate observations, so the p-values are optimistic."))  # fmt: skip
        for sv in self.saved:
            out.append(f"<h3>Saved comparison {_e(display_path(sv.path))}</h3>")
            for m in sv.metrics:
                rows = [p for p in sv.pairwise if p["metric"] == m]
                if rows:
                    out.append(f"<h4>{_e(self.label(m))}</h4>" + '<div class="scroll">' + self.pairwise_table(rows)
                               + "</div>")  # fmt: skip
        return "".join(out)

    def pairwise_table(self, rows: list[dict[str, Any]]) -> str:
        f = self.ctx.f

        def p_cell(p: Any, sig: bool = False) -> str:
            text = _e(format_p(None if p is None else float(p)))
            return f'<span class="sig"><b>{text}</b></span>' if sig else text

        def pairs(p: dict[str, Any]) -> str:
            n = int(p["n_pairs"]) if p.get("n_pairs") is not None and math.isfinite(float(p["n_pairs"])) else 0
            u = p.get("n_pairs_undefined") or 0
            return f"{n}" + (f" (+{int(u)} undefined)" if u and math.isfinite(float(u)) else "")

        def sig(p: Any) -> bool:
            return p is not None and math.isfinite(float(p)) and float(p) < 0.05

        body = [
            [_e(p["model_a"]), _e(p["model_b"]), p_cell(p["kw_p"]), p_cell(p["kw_p_holm"], sig(p["kw_p_holm"])),
             p_cell(p["wilcoxon_p"]), p_cell(p["wilcoxon_p_holm"], sig(p["wilcoxon_p_holm"])), pairs(p),
             _e(f(p["median_diff"])), _e(f(p["mean_diff"]))]
            for p in rows
        ]  # fmt: skip
        header = ["Model #1", "Model #2", "Kruskal-Wallis p", "KW p (Holm)", "Wilcoxon p", "Wilcoxon p (Holm)",
                  "pairs", "median diff (#1 − #2)", "mean diff (#1 − #2)"]  # fmt: skip
        return _table(header, body, "pairs", raw=True)

    # ------------------------------------------------------------------ plots
    def plot_metrics(self) -> list[str]:
        return [m for m in self.metrics if m != "correct"]

    def plots(self) -> str:
        c = self.cmp
        assert c is not None
        out = []
        matched = self.matched_rows()
        for m in self.plot_metrics():
            ylabel = self.label(m)
            figs = []
            box = F.boxplot_figure([(r.label, r.values[m]) for r in c.runs], ylabel, F.figure_name("box", m),
                                   self.ctx.svg)  # fmt: skip
            n_undef = sum(int(np.sum(~np.isfinite(r.values[m]))) for r in c.runs)
            figs.append(self.ctx.img(box, f"{_e(ylabel)} per case: box (median, quartiles, whiskers at 1.5 IQR), "
                                     "points (cases) and mean (◇)" + (f"; {n_undef} undefined value(s) left out, "
                                     "counted under each box" if n_undef else "") + "."))  # fmt: skip
            if len(c.runs) > 1 and matched is not None:
                idx = matched
                vals = np.column_stack([r.values[m][i] for r, i in zip(c.runs, idx, strict=True)])
                ok = np.all(np.isfinite(vals), axis=1)
                paired = F.paired_figure(c.labels, vals[ok], ylabel, F.figure_name("paired", m), self.ctx.svg)
                left = int((~ok).sum())
                figs.append(self.ctx.img(
                    paired, f"{_e(ylabel)}: one line per case across the models (matched on repeat and case id; "
                    f"{int(ok.sum())} cases{f', {left} with an undefined value left out' if left else ''}); blue: "
                    f"higher under {_e(c.labels[-1])} than under {_e(c.labels[0])}, orange: lower; black: medians."
                ))  # fmt: skip
            out.append(f"<h3>{_e(ylabel)}</h3><div class='figs'>{''.join(figs)}</div>")
        if len(c.runs) > 1 and matched is None:
            out.insert(0, self.note("the models share no case (repeat, case id): no paired plots"))
        return "".join(out)

    def matched_rows(self) -> list[np.ndarray] | None:
        """Row indices, per run, of the (repeat, case id) keys every run has, in the first run's order."""
        c = self.cmp
        assert c is not None
        keys = c.runs[0].keys()
        common = set(keys)
        for r in c.runs[1:]:
            common &= set(r.keys())
        if not common:
            return None
        first = [k for k in keys if k in common]
        out = []
        for r in c.runs:
            _, ib = match_pairs(first, r.keys())
            out.append(ib)
        return out

    # ------------------------------------------------------------------ learning curves
    def curves(self) -> str:
        out, missing = [], []
        for s in self.sources:
            logs = [(f.label, lg) for f in s.folds if (lg := read_log(f.file("log.csv")))]
            if not logs:
                missing.append((s.label, _why_missing(s, "no log.csv in its run directories")))
                continue
            fig = F.learning_curves_figure(logs, s.label, F.figure_name("curves", s.label), self.ctx.svg)
            quick = [p for p in fig.meta.get("panels", []) if p != "loss"]
            out.append(f"<h3>{_e(s.label)}</h3>" + self.ctx.img(
                fig, f"{_e(s.label)}: loss{' and ' + ', '.join(quick) if quick else ''} per epoch for each of "
                f"{len(logs)} run(s) (log.csv); solid: training, dashed: validation.", "wide"))  # fmt: skip
        return "".join(out) + self.missing_note("no learning curves", missing)

    def missing_note(self, what: str, missing: list[tuple[str, str]]) -> str:
        """One note per reason: ``"no gallery for a, b: only per-case CSVs were given"``."""
        by_why: dict[str, list[str]] = {}
        for label, why in missing:
            by_why.setdefault(why, []).append(label)
        return "".join(self.note(f"{what} for {', '.join(labels)}: {why}") for why, labels in by_why.items())

    # ------------------------------------------------------------------ gallery
    def gallery_metric(self, s: ModelSource) -> str | None:
        if s.run is None:
            return None
        ms = s.run.metrics
        return next((m for m in ("dice", "iou") if m in ms), next((m for m in ms if not is_distance(m)), None))

    def pick(self, s: ModelSource, metric: str) -> list[tuple[str, int]]:
        """``(tag, row)`` of the best, median and worst cases (``gallery`` of them, spread over the ranking)."""
        run = s.run
        assert run is not None
        v = run.values[metric]
        higher = not is_distance(metric)
        finite = np.isfinite(v)
        score = np.where(finite, v if higher else -v, -np.inf)
        order = [int(i) for i in np.argsort(-score, kind="stable")]  # best first; undefined last
        n, k = len(order), min(self.ctx.gallery, len(order))
        if k == 0:
            return []
        if k == 1:
            return [("median", order[n // 2])]
        ranks = sorted({round(x) for x in np.linspace(0, n - 1, k)} | ({n // 2} if k >= 3 else set()))
        while len(ranks) > k:
            ranks.remove(next(r for r in ranks[1:-1] if r != n // 2))
        tags = []
        for r in ranks:
            tag = "best" if r == 0 else "worst" if r == n - 1 else "median" if r == n // 2 else f"rank {r + 1} of {n}"
            tags.append((tag, order[r]))
        return tags

    def load_case(self, ctx_fold: FoldDir, case_id: str) -> tuple[Any, np.ndarray] | str:
        """``(case, predicted labels)`` of a test case from its fold's saved predictions, or why not."""
        from agseg.data.io import mask_path_for, read_mask

        key = (str(ctx_fold.path), case_id)
        if key in self.loaded_cases:
            return self.loaded_cases[key]
        pred_dir = ctx_fold.file("predictions")
        if not pred_dir.is_dir():
            result: Any = f"{ctx_fold.path.name} has no predictions/ (eval.save_predictions was off?)"
        else:
            try:
                cfg = _config(ctx_fold)
                index = _index(self.ctx, cfg)
                if isinstance(index, Exception):
                    raise index
                ref = index.get(case_id)
                pp = mask_path_for(ref.image_paths[0], pred_dir)
                if not pp.exists():
                    raise FileNotFoundError(f"{pp}: no saved prediction")
                case = ref.load()
                pred, _ = read_mask(pp)
                result = (case, pred)
            except KeyError:
                result = f"case {case_id!r} is not in the dataset of {display_path(ctx_fold.path)}"
            except Exception as e:
                result = f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
        self.loaded_cases[key] = result
        return result

    def fold_of(self, s: ModelSource, row: int) -> FoldDir | None:
        run = s.run
        assert run is not None
        if s.kind == "run":
            return s.folds[0] if s.folds else None
        rep, fold = int(run.repeat[row]), int(run.fold[row])
        return next((f for f in s.folds if f.repeat == rep and f.fold == fold), None)

    def binary(self, s: ModelSource, ref: np.ndarray, pred: np.ndarray) -> bool:
        if s.labels and "binary" in s.labels:
            return bool(s.labels["binary"])
        return len(set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) <= 2

    def gallery(self) -> str:
        out, missing = [], []
        for s in self.sources:
            if s.task != "segmentation":
                continue
            metric = self.gallery_metric(s)
            if s.kind == "csv" or not s.folds or metric is None:
                missing.append((s.label, _why_missing(s, "no per-case metrics" if metric is None else
                                                      "no run directories")))  # fmt: skip
                continue
            out.append(f"<h3>{_e(s.label)}</h3>")
            picks = self.pick(s, metric)
            self.gallery_cases[s.label] = picks
            figs, problems = [], []
            for tag, row in picks:
                fold = self.fold_of(s, row)
                cid = s.run.case_id[row]  # type: ignore[union-attr]
                if fold is None:
                    problems.append(f"{cid}: its fold directory is missing")
                    continue
                got = self.load_case(fold, cid)
                if isinstance(got, str):
                    problems.append(got)
                    continue
                case, pred = got
                ref = np.asarray(case.label)
                if self.binary(s, ref, pred):
                    ref, pred = (ref != 0).astype(np.uint8), (np.asarray(pred) != 0).astype(np.uint8)
                if pred.shape != ref.shape:
                    problems.append(f"{cid}: prediction shape {pred.shape} differs from the reference {ref.shape}")
                    continue
                from agseg.data.io import RASTER_FORMATS

                unit = "px" if case.geometry.format in RASTER_FORMATS else "mm"
                vals = self.case_values(s, row, unit)
                fig = F.overlay_figure(case.image, ref, pred, case.geometry.array_spacing, unit,
                                       f"{s.label} · {tag} · {cid}", F.figure_name("case", s.label, tag, cid),
                                       self.ctx.svg)  # fmt: skip
                planes = " three orthogonal mid-planes through the reference's centre of mass;" if fig.meta.get(
                    "planes") == 3 else ""  # fmt: skip
                figs.append(self.ctx.img(fig, f"<b>{_e(tag)}</b> by {_e(self.label(metric))}: <code>{_e(cid)}</code> "
                                         f"({_e(fold.label)}); {_e(vals)}.{planes} reference green, prediction "
                                         "magenta (dashed); errors: false positives orange, false negatives blue.",
                                         "case"))  # fmt: skip
            if figs:
                out.append(f"<div class='figs'>{''.join(figs)}</div>")
            for p in dict.fromkeys(problems):
                n = problems.count(p)
                out.append(self.note(f"{s.label}: {n} gallery case(s) left out: {p}"))
        return "".join(out) + self.missing_note("no gallery", missing)

    def case_values(self, s: ModelSource, row: int, unit: str) -> str:
        run = s.run
        assert run is not None
        keys = [m for m in run.metrics if split_metric(m)[1] is None][:4]
        return ", ".join(f"{metric_label(m, unit)} {self.ctx.f(run.values[m][row])}" for m in keys)

    # ------------------------------------------------------------------ attention
    def attention(self) -> str:
        out = []
        for s in self.sources:
            if s.task != "segmentation":
                continue
            parts = []
            snap = next((f for f in s.folds if sorted(f.file("attention").glob("epoch_*.npz"))), None)
            if snap is not None:
                parts.append(self.snapshots(s, snap))
            if self.ctx.attention:
                parts.append(self.live_attention(s))
            parts = [p for p in parts if p]
            if parts:
                out.append(f"<h3>{_e(s.label)}</h3>" + "".join(parts))
            elif s.kind != "csv":
                out.append(f"<h3>{_e(s.label)}</h3><p class='small'>No attention maps: the net has no gates or "
                           "none were recorded (train.attention_every).</p>")  # fmt: skip
        if not out:
            out.append(self.note("no attention maps: no run directory of a gated net was given", page=False))
        return "".join(out)

    def snapshots(self, s: ModelSource, fold: FoldDir) -> str:
        series = []
        image = None
        for f in sorted(fold.file("attention").glob("epoch_*.npz")):
            try:
                with np.load(f) as z:
                    maps = {k: z[k].astype(np.float32) for k in z.files if k != "_image"}
                    if "_image" in z.files:
                        image = z["_image"].astype(np.float32)
                series.append((int(f.stem.split("_")[1]), maps))
            except (OSError, ValueError) as e:
                self.note(f"{display_path(f)}: not readable ({e})")
        if not series or image is None or not series[-1][1]:
            return ""
        last_epoch, last = series[-1]
        figs = []
        title = f"{s.label} · {fold.label} · epoch {last_epoch}"
        name = F.figure_name("attention", s.label, "epoch", last_epoch)
        fig = F.attention_figure(image, last, title, name, svg=self.ctx.svg)
        what = f"each gate's map at epoch {last_epoch} on the first validation case of {fold.label} (the preprocessed "
        what += "grid the net saw)"
        figs.append(self.ctx.img(fig, self.att_caption(fig, what), "wide"))
        if len(series) > 1:
            title = f"{s.label} · {fold.label}: attention over training"
            evo = F.attention_evolution_figure(
                image, series, title, F.figure_name("attention_evolution", s.label), svg=self.ctx.svg
            )
            flat = evo.meta.get("flat") or []
            caption = (
                f"How the gates' maps change over training ({len(series)} snapshots, epochs "
                f"{', '.join(map(str, evo.meta['epochs']))} shown; heads averaged"
                f"{'; 3D: the middle plane' if image.ndim == 4 else ''}); one colour scale per gate over its epochs."
            )
            if flat:
                caption += f" Flat (range below {F.FLAT_RANGE}, drawn on 0..1): {_e(', '.join(flat))}."
            figs.append(self.ctx.img(evo, caption, "wide"))
        return "<h4>Recorded during training</h4>" + "".join(figs)

    def att_caption(self, fig: F.FigureFile, what: str) -> str:
        flat = fig.meta.get("flat") or []
        ranges = fig.meta.get("ranges") or {}
        rng = _e("; ".join(f"{g}: {lo:.3f}–{hi:.3f}" for g, (lo, hi) in ranges.items()))
        text = f"Attention coefficients (α, 0..1) of {what}; range of each map: {rng}. "
        stretched = [g for g in ranges if g not in flat]
        if stretched:
            text += f"{_e(', '.join(stretched))}: coloured over its own range (the colour bar's ticks give it). "
        if flat:
            text += (f"{_e(', '.join(flat))}: flat (a range below {F.FLAT_RANGE}), drawn on the fixed 0..1 scale, not "
                     "stretched")  # fmt: skip
            if all(ranges[g][0] >= 0.9 for g in flat if g in ranges):
                text += ": the gate still passes nearly everything, as it was initialised (α ≈ 0.95)"
            text += "."
        if fig.meta.get("planes") == 3:
            text += " 3D: three orthogonal mid-planes."
        return text

    def live_attention(self, s: ModelSource) -> str:
        picks = self.gallery_cases.get(s.label) or []
        pick = next(((t, r) for t, r in picks if t == "median"), picks[0] if picks else None)
        if pick is None or s.run is None:
            return ""
        fold = self.fold_of(s, pick[1])
        if fold is None or not fold.file("model/model.json").is_file():
            return ""
        b = s.bundle(fold) or {}
        if b.get("task", "segmentation") != "segmentation":
            return ""
        got = self.load_case(fold, s.run.case_id[pick[1]])
        if isinstance(got, str):
            return ""
        case, _ = got
        try:
            from agseg.inference.predictor import Predictor
            from agseg.nets.base import has_attention

            predictor = Predictor.from_path(fold.path, amp="off")
            if not has_attention(predictor.model):
                return ""
            pred = predictor.predict_array(case.image, case.geometry, attention=True)
        except Exception as e:
            return self.note(f"{s.label}: attention maps not computed: {type(e).__name__}: {e}")
        if not pred.attention:
            return ""
        cid = s.run.case_id[pick[1]]
        fig = F.attention_figure(case.image, pred.attention, f"{s.label} · {fold.label} · {cid}",
                                 F.figure_name("attention", s.label, cid), reference=case.label,
                                 spacing=case.geometry.array_spacing, svg=self.ctx.svg)  # fmt: skip
        return "<h4>On the gallery's median test case</h4>" + self.ctx.img(fig, self.att_caption(
            fig, f"the median test case <code>{_e(cid)}</code>, predicted by the model of {fold.label} (which did not "
            "train on it), on the image's own grid; reference green"), "wide")  # fmt: skip

    # ------------------------------------------------------------------ classification
    def classification(self) -> str:
        from sklearn.metrics import auc, confusion_matrix, precision_recall_fscore_support, roc_curve

        out = []
        for s in self.sources:
            if s.task != "classification":
                continue
            out.append(f"<h3>{_e(s.label)}</h3>")
            rows = [r for r in s.rows if r.get("target") is not None and r.get("predicted") is not None]
            rows = [r for r in rows if math.isfinite(r["target"]) and math.isfinite(r["predicted"])]
            if not rows:
                out.append(self.note(f"{s.label}: no case with a target and a prediction"))
                continue
            probs = [h for h in s.header if h.startswith("prob_")]
            names = s.class_names
            values = sorted({int(r["target"]) for r in rows} | {int(r["predicted"]) for r in rows} | set(names))
            if len(probs) == len(values) and not names:
                names = {v: p[len("prob_") :] for v, p in zip(values, probs, strict=True)}
            for r in rows:
                if isinstance(r.get("predicted_class"), str) and int(r["predicted"]) not in names:
                    names[int(r["predicted"])] = r["predicted_class"]
            cls_names = [names.get(v, str(v)) for v in values]
            y = np.asarray([int(r["target"]) for r in rows])
            yhat = np.asarray([int(r["predicted"]) for r in rows])
            cm = confusion_matrix(y, yhat, labels=values)
            figs = [self.ctx.img(F.confusion_figure(cm, cls_names, s.label, F.figure_name("confusion", s.label),
                                                    self.ctx.svg),
                                 f"Confusion matrix of {len(rows)} test case rows (all folds pooled): counts; colour: "
                                 "fraction of the true class.")]  # fmt: skip
            curves, aucs = [], {}
            if len(probs) == len(values):
                score = np.asarray([[float(r[p]) for p in probs] for r in rows])
                targets = values[1:] if len(values) == 2 else values
                for v in targets:
                    pos = y == v
                    if pos.all() or not pos.any():
                        self.note(
                            f"{s.label}: no ROC curve for class {names.get(v, v)}: the cases are all or none of it"
                        )
                        continue
                    fpr, tpr, _ = roc_curve(pos.astype(int), score[:, values.index(v)])
                    aucs[v] = float(auc(fpr, tpr))
                    curves.append((names.get(v, str(v)), fpr, tpr, aucs[v]))
            else:
                self.note(f"{s.label}: no ROC curves: the CSV has {len(probs)} prob_ column(s) for {len(values)} "
                          "classes")  # fmt: skip
            if curves:
                kind = "positive class" if len(values) == 2 else "one-vs-rest per class"
                figs.append(self.ctx.img(F.roc_figure(curves, s.label, F.figure_name("roc", s.label), self.ctx.svg),
                                         f"ROC curves ({kind}; scikit-learn roc_curve) from the predicted "
                                         "probabilities; dotted: chance.",))  # fmt: skip
            out.append(f"<div class='figs'>{''.join(figs)}</div>")
            prec, rec, f1, sup = precision_recall_fscore_support(y, yhat, labels=values, zero_division=np.nan)
            table = []
            for i, v in enumerate(values):
                tn = cm.sum() - cm[i, :].sum() - cm[:, i].sum() + cm[i, i]
                fp = cm[:, i].sum() - cm[i, i]
                spec = tn / (tn + fp) if (tn + fp) else math.nan
                table.append([f"{v}: {cls_names[i]}", str(int(sup[i])), self.ctx.f(prec[i]), self.ctx.f(rec[i]),
                              self.ctx.f(spec), self.ctx.f(f1[i]), self.ctx.f(aucs.get(v))])  # fmt: skip
            acc = float(np.mean(y == yhat))
            out.append(_table(["class", "cases", "precision", "recall (sensitivity)", "specificity", "F1", "AUC"],
                              table, "num"))  # fmt: skip
            out.append(f"<p>Accuracy {self.ctx.f(acc)} ({int(np.sum(y == yhat))} of {len(y)} rows).</p>")
        return "".join(out)


def _why_missing(s: ModelSource, otherwise: str) -> str:
    if s.kind == "csv":
        return "only per-case metric CSVs were given (the run directories are gone)"
    return otherwise


_KIND = {"cv": "cross-validation", "run": "training run", "csv": "per-case CSV"}
_SECTION_TITLES = {
    "run": "What was run",
    "results": "Results",
    "statistics": "Statistics",
    "plots": "Distributions",
    "classification": "Classification",
    "curves": "Learning curves",
    "gallery": "Gallery",
    "attention": "Attention",
    "notes": "Notes",
}
