"""Figures of a comparison and of the HTML report (PNG bytes, Matplotlib's Agg canvas, no display).

The figure functions return bytes instead of writing files, so the caller decides where they go (atomically,
in ``compare/``; inline, in an HTML report). Undefined values (NaN/inf) are left out of the boxes and their count is
shown in the tick label, never silently dropped.

``boxplot_png`` draws ``compare/boxplot_<metric>.png``. The report's figures (:class:`FigureFile`: PNG at 200 dpi,
SVG on request) are sized for a journal column (3.5 in) or page (7.16 in) with 8 pt text and Okabe-Ito colours:
learning curves, box and paired plots, case overlays (reference, prediction, false positives and negatives; three
mid-planes in 3D), attention maps with ticked colour bars (a flat map drawn flat, never stretched), confusion
matrices and ROC curves.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from agseg.experiments.compare import Comparison

__all__ = [
    "COLUMN_WIDTH",
    "FLAT_RANGE",
    "PAGE_WIDTH",
    "FigureFile",
    "attention_evolution_figure",
    "attention_figure",
    "boxplot_figure",
    "boxplot_filename",
    "boxplot_png",
    "comparison_boxplot_png",
    "confusion_figure",
    "figure_name",
    "learning_curves_figure",
    "overlay_figure",
    "paired_figure",
    "plane_slices",
    "render",
    "roc_figure",
]


def boxplot_filename(metric: str) -> str:
    """``boxplot_<metric>.png``, with characters other than letters, digits, ``_.-`` replaced by ``_``."""
    return f"boxplot_{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric) or 'metric'}.png"


def boxplot_png(samples: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]], metric: str) -> bytes:
    """A box plot with one box per model (points overlaid when at most 500, mean marked) as PNG bytes.

    Args:
        samples: Model label -> per-case values, shape ``(N,)`` (a mapping, or ``(label, values)`` pairs), one box
            each in this order; NaN/inf are left out and counted in the tick label.
        metric: Metric name (y label and title).

    Returns:
        The PNG file's bytes (100 dpi, 4 inches high, wider with more models). The overlaid points are jittered
        with a fixed seed, so the bytes are the same for the same input.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data, ticks = [], []
    for label, v in samples.items() if isinstance(samples, Mapping) else samples:
        v = np.asarray(v, dtype=float)
        x = v[np.isfinite(v)]
        data.append(x)
        n_undef = int(v.size - x.size)
        ticks.append(f"{label}\nn={x.size}" + (f", {n_undef} undefined" if n_undef else ""))
    fig = Figure(figsize=(max(4.0, 1.6 * len(data) + 1.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(1, len(data) + 1)
    nonempty = [i for i, x in enumerate(data) if x.size]
    if nonempty:
        ax.boxplot([data[i] for i in nonempty], positions=positions[nonempty], widths=0.5, showmeans=True)
    rng = np.random.default_rng(0)
    for i, x in enumerate(data):
        if 0 < x.size <= 500:
            ax.scatter(positions[i] + rng.uniform(-0.12, 0.12, x.size), x, s=6, alpha=0.35, color="k", zorder=3)
    ax.set_xticks(positions, ticks)
    ax.set_xlim(0.4, len(data) + 0.6)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per case")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def comparison_boxplot_png(comparison: Comparison, metric: str) -> bytes:
    """:func:`boxplot_png` of ``metric`` for every run of ``comparison``, in run order."""
    return boxplot_png([(r.label, r.values[metric]) for r in comparison.runs], metric)


# ------------------------------------------------------------------------------------------- figures for a paper
#
# Everything below draws one figure of the HTML report (:mod:`agseg.report.html`) on a Matplotlib ``Figure`` with the
# Agg canvas (no pyplot, no display) sized for a journal column (3.5 in) or a full page width (7.16 in), with 8 pt
# text, and returns a :class:`FigureFile`: PNG bytes (200 dpi) and, on request, SVG bytes with the text kept as text.

COLUMN_WIDTH = 3.5
"""Width of a one-column figure in inches (IEEE / Elsevier single column)."""

PAGE_WIDTH = 7.16
"""Width of a full-page (two-column) figure in inches."""

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
"""Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), one per model or fold."""

REFERENCE_COLOUR = "#00C000"
PREDICTION_COLOUR = "#FF00FF"
ERROR_COLOURS = {"false positive": "#FF8C00", "false negative": "#1E90FF", "wrong class": "#B000B0"}
"""Error colours of the overlays: predicted but not in the reference, in the reference but missed, and (multi-class)
foreground given the wrong class."""

FLAT_RANGE = 0.01
"""An attention map whose values span less than this is drawn flat on the fixed 0..1 scale, with a note, instead of
being stretched over its own (meaningless) range."""

_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "svg.fonttype": "none",
    "svg.hashsalt": "agseg",
    "image.interpolation": "nearest",
}


@dataclass
class FigureFile:
    """One rendered figure.

    Attributes:
        name: File stem (letters, digits, ``_.-``), unique within a report.
        png: PNG bytes (200 dpi).
        svg: SVG bytes (text as text) or ``None`` when not asked for.
        meta: Facts about the figure for callers and tests (e.g. ``{"planes": 3}``).
    """

    name: str
    png: bytes
    svg: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def figure_name(*parts: object) -> str:
    """A file stem from ``parts`` joined by ``_`` (characters other than letters, digits, ``.-`` replaced)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(str(p) for p in parts)).strip("_") or "figure"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render(fig: Figure, name: str, svg: bool = False, **meta: Any) -> FigureFile:
    """``fig`` as a :class:`FigureFile` (PNG at 200 dpi; SVG too when ``svg``); metadata dates are left out, so the
    same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=200, metadata={"Software": None})
    svg_bytes = None
    if svg:
        sbuf = io.BytesIO()
        fig.savefig(sbuf, format="svg", metadata={"Date": None, "Creator": None})
        svg_bytes = sbuf.getvalue()
    return FigureFile(name, buf.getvalue(), svg_bytes, dict(meta))


def style() -> Any:
    """The report's Matplotlib settings as a context manager (``with style(): ...``)."""
    import matplotlib

    return matplotlib.rc_context(_RC)


def _wrap(label: str, width: int = 14) -> str:
    """``label`` on lines of about ``width`` characters, broken after spaces, ``_`` and ``-`` (a name such as
    ``attention_multi`` breaks after its underscore, not inside a word)."""
    lines, line = [], ""
    for tok in re.split(r"(?<=[\s_-])", str(label)):
        while len(tok) > width + 4:  # a very long word: cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(tok[:width])
            tok = tok[width:]
        if line and len(line) + len(tok.rstrip()) > width:
            lines.append(line)
            line = ""
        line += tok
    if line:
        lines.append(line)
    return "\n".join(x.strip() for x in lines if x.strip()) or str(label)


def learning_curves_figure(
    logs: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    title: str,
    name: str,
    svg: bool = False,
) -> FigureFile:
    """Loss and the logged quick metric (Dice or accuracy) per epoch, one colour per fold, training solid and
    validation dashed (page width).

    Args:
        logs: ``(fold label, columns of its log.csv)`` pairs; columns are ``epoch``, ``train_loss``, ``val_loss`` and
            ``train_<m>`` / ``val_<m>`` for the quick metric (``dice``, ``acc``), arrays of shape ``(epochs,)``.
        title: Figure title (the model).
        name: File stem.
        svg: Also render SVG.
    """
    quick = []
    for _, cols in logs:
        for k in cols:
            if k.startswith(("train_", "val_")) and not k.endswith("_loss"):
                m = k.split("_", 1)[1]
                if m not in quick:
                    quick.append(m)
    panels = [("loss", "loss")] + [(m, {"dice": "Dice", "acc": "accuracy"}.get(m, m)) for m in quick[:2]]
    with style():
        fig = _new_figure(PAGE_WIDTH, 2.3)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (key, ylabel) in zip(axes, panels, strict=True):
            for i, (_fold, cols) in enumerate(logs):
                epoch = np.asarray(cols.get("epoch", np.arange(1, len(next(iter(cols.values()))) + 1)), float)
                colour = PALETTE[i % len(PALETTE)]
                for split, ls in (("train", "-"), ("val", "--")):
                    y = np.asarray(cols.get(f"{split}_{key}", []), float)
                    if y.size and np.isfinite(y).any():
                        ax.plot(epoch[: y.size], y, ls, color=colour, marker="o" if y.size < 3 else None, ms=2)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, lw=0.4)
            ax.xaxis.get_major_locator().set_params(integer=True)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=PALETTE[i % len(PALETTE)], label=f) for i, (f, _) in enumerate(logs)]
        handles += [Line2D([], [], color="0.3", ls="-", label="training"),
                    Line2D([], [], color="0.3", ls="--", label="validation")]  # fmt: skip
        fig.legend(handles=handles, loc="outside right center")
        fig.suptitle(title)
        return render(fig, name, svg, panels=[p for p, _ in panels], folds=len(logs))


def boxplot_figure(samples: Sequence[tuple[str, np.ndarray]], ylabel: str, name: str, svg: bool = False) -> FigureFile:
    """One box per model (median, quartiles, whiskers at 1.5 IQR), the cases as jittered points (up to 500 per
    model), the mean as a white diamond; undefined values are left out and counted in the tick label (column
    width).

    Args:
        samples: ``(model label, per-case values (N,))`` pairs, in order; NaN/inf are undefined.
        ylabel: Axis label with the unit, e.g. ``"HD95 (px)"``.
        name: File stem.
        svg: Also render SVG.
    """
    data, ticks = [], []
    for label, v in samples:
        v = np.asarray(v, dtype=float)
        x = v[np.isfinite(v)]
        data.append(x)
        ticks.append(_wrap(label) + f"\nn={x.size}" + (f"\n{v.size - x.size} undefined" if v.size > x.size else ""))
    with style():
        fig = _new_figure(COLUMN_WIDTH if len(data) <= 4 else PAGE_WIDTH, 2.6)
        ax = fig.add_subplot()
        pos = np.arange(1, len(data) + 1)
        nonempty = [i for i, x in enumerate(data) if x.size]
        if nonempty:
            mean_style = {"marker": "D", "markerfacecolor": "white", "markeredgecolor": "k", "ms": 4}
            ax.boxplot([data[i] for i in nonempty], positions=pos[nonempty], widths=0.5, showmeans=True,
                       showfliers=False, medianprops={"color": "k", "lw": 1.2}, meanprops=mean_style)  # fmt: skip
        rng = np.random.default_rng(0)
        for i, x in enumerate(data):
            if 0 < x.size <= 500:
                small = x.size <= 100
                ax.scatter(pos[i] + rng.uniform(-0.15, 0.15, x.size), x, s=8 if small else 3,
                           alpha=0.7 if small else 0.4, lw=0, color=PALETTE[i % len(PALETTE)], zorder=3)  # fmt: skip
        ax.set_xticks(pos, ticks)
        ax.set_xlim(0.4, len(data) + 0.6)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3, lw=0.4)
        return render(fig, name, svg, models=len(data))


def paired_figure(labels: Sequence[str], values: np.ndarray, ylabel: str, name: str, svg: bool = False) -> FigureFile:
    """One grey line per case across the models (its value under each model), the per-model medians in black
    (column width). Lines going up from the first to the last model are blue, going down orange.

    Args:
        labels: Model labels, ``(M,)``.
        values: ``(n_cases, M)`` values of the cases every model has, all defined.
        ylabel: Axis label with the unit.
        name: File stem.
        svg: Also render SVG.
    """
    values = np.asarray(values, dtype=float)
    n, m = values.shape
    x = np.arange(m)
    with style():
        fig = _new_figure(COLUMN_WIDTH if m <= 4 else PAGE_WIDTH, 2.6)
        ax = fig.add_subplot()
        if n:
            from matplotlib.collections import LineCollection

            alpha = float(np.clip(40.0 / n, 0.15, 0.7))
            up = values[:, -1] > values[:, 0]
            down = values[:, -1] < values[:, 0]
            colours = np.where(up, 0, np.where(down, 1, 2))
            palette = (PALETTE[0], PALETTE[1], "0.5")
            segs = [np.column_stack([x, row]) for row in values]
            ax.add_collection(
                LineCollection(segs, colors=[palette[c] for c in colours], linewidths=0.6, alpha=alpha, zorder=2)
            )
            med = np.median(values, axis=0)
            ax.plot(x, med, "-o", color="k", lw=1.5, ms=4, zorder=4)
            lo, hi = float(values.min()), float(values.max())
            pad = (hi - lo) * 0.05 or 0.05 * max(abs(hi), 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
            from matplotlib.lines import Line2D

            last = _short(labels[-1], 14)
            fig.legend(
                handles=[Line2D([], [], color="k", marker="o", ms=3, label="median"),
                         Line2D([], [], color=PALETTE[0], label=f"{last} higher"),
                         Line2D([], [], color=PALETTE[1], label=f"{last} lower")],
                loc="outside upper center", ncol=3, handlelength=1.5, columnspacing=1.0,
            )  # fmt: skip
        ax.set_xticks(x, [_wrap(lab) for lab in labels])
        ax.set_xlim(-0.3, m - 0.7)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3, lw=0.4)
        return render(fig, name, svg, cases=n, models=m)


def _short(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


# ------------------------------------------------------------------------------------------------- overlays


def _display(img: np.ndarray) -> np.ndarray:
    """A 2D slice scaled to 0..1 between its 1st and 99th percentiles (an RGB ``(y, x, 3)`` slice as is)."""
    img = np.asarray(img, dtype=float)
    if img.ndim == 3 and img.shape[-1] == 3:
        hi = 255.0 if img.max() > 1 else 1.0
        return np.clip(img / hi, 0, 1)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    return np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)


def plane_slices(
    volume: np.ndarray, centre: Sequence[int] | None = None
) -> list[tuple[str, np.ndarray, tuple[int, int]]]:
    """A 2D array as ``[("", array, (0, 1))]``; a 3D ``(z, y, x)`` array as its three orthogonal planes through
    ``centre`` (default: the middle) as ``(name, plane, (row axis, column axis))``, e.g. ``("z = 12", ...)``.

    The planes are those of :func:`agseg.viz.attention.central_slices`; the names say where they cut."""
    from agseg.viz.attention import central_slices

    if volume.ndim == 2:
        return [("", volume, (0, 1))]
    c = list(centre) if centre is not None else [s // 2 for s in volume.shape]
    focus = np.zeros(volume.shape, bool)
    focus[tuple(c)] = True
    planes = central_slices(volume, focus)
    return [(f"{a} = {c[i]}", p, axes) for i, (a, p, axes) in enumerate(
        zip("zyx", planes, ((1, 2), (0, 2), (0, 1)), strict=True))]  # fmt: skip


def focus_centre(ref: np.ndarray, pred: np.ndarray | None = None) -> list[int] | None:
    """The centre of mass of the reference's foreground (else of the prediction's), or ``None`` when both are
    empty: where the mid-planes of a 3D overlay cut."""
    for m in (ref, pred):
        if m is not None and np.any(m):
            return [round(v) for v in np.argwhere(np.asarray(m) != 0).mean(0)]
    return None


def _scale_bar(ax: Any, width_px: int, spacing_col: float, unit: str) -> None:
    """A scale bar of a round physical length (about a quarter of the width) in the lower left corner."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    span = width_px * spacing_col
    target = span / 4
    if target <= 0:
        return
    mag = 10 ** np.floor(np.log10(target))
    length = max(v * mag for v in (1, 2, 5) if v * mag <= target)
    text = f"{length:g} {unit}"
    thick = max(width_px / 120, 0.5)
    bar = AnchoredSizeBar(ax.transData, length / spacing_col, text, "lower left", pad=0.3, color="white",
                          frameon=False, size_vertical=thick, fontproperties={"size": 6})  # fmt: skip
    ax.add_artist(bar)


def overlay_figure(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    unit: str,
    title: str,
    name: str,
    svg: bool = False,
) -> FigureFile:
    """A case as three panels per plane: the image (with a scale bar), the reference (green) and predicted
    (magenta) contours, and the errors in colour over the image (false positives orange, false negatives blue,
    wrong foreground class purple). A 3D case gets its three orthogonal mid-planes through the reference's centre of
    mass, drawn with their physical aspect ratio.

    Args:
        image: ``(*spatial)`` or ``(C, *spatial)``: a 2D image with 3 channels is drawn in colour, else channel 0.
        reference: Reference label values ``(*spatial)`` (0 is background).
        prediction: Predicted label values, same shape.
        spacing: Spacing in array order (``Geometry.array_spacing``).
        unit: ``"px"`` or ``"mm"`` for the scale bar.
        title: Figure title (case, fold and metrics).
        name: File stem.
        svg: Also render SVG.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    nd = reference.ndim
    img = np.asarray(image)
    rgb = img.ndim == nd + 1 and nd == 2 and img.shape[0] == 3
    if img.ndim == nd + 1 and not rgb:
        img = img[0]
    centre = focus_centre(reference, prediction) if nd == 3 else None
    ref_planes = plane_slices(reference, centre)
    pred_planes = plane_slices(prediction, centre)
    img_planes = [("", np.moveaxis(img, 0, -1), (0, 1))] if rgb else plane_slices(img, centre)
    fp_all = (prediction != 0) & (reference == 0)
    fn_all = (reference != 0) & (prediction == 0)
    wrong_all = (reference != 0) & (prediction != 0) & (reference != prediction)
    fp_planes, fn_planes, wrong_planes = (plane_slices(a, centre) for a in (fp_all, fn_all, wrong_all))
    multi = (
        bool(wrong_all.any())
        or len((set(np.unique(reference).tolist()) | set(np.unique(prediction).tolist())) - {0}) > 1
    )
    rows = len(ref_planes)
    with style():
        fig = _new_figure(COLUMN_WIDTH if rows == 1 else COLUMN_WIDTH * 1.15, 1.3 * rows + 0.55)
        axes = fig.subplots(rows, 3, squeeze=False)
        for r in range(rows):
            plane_name, ref2, (ra, ca) = ref_planes[r]
            aspect = float(spacing[ra]) / float(spacing[ca])
            base = _display(img_planes[r][1])
            cmap = None if base.ndim == 3 else "gray"
            for c in range(3):
                axes[r, c].imshow(base, cmap=cmap, vmin=0, vmax=1, aspect=aspect)
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
                for s in axes[r, c].spines.values():
                    s.set_visible(False)
            _scale_bar(axes[r, 0], ref2.shape[1], float(spacing[ca]), unit)
            pred2 = pred_planes[r][1]
            for m, colour, ls in ((ref2, REFERENCE_COLOUR, "solid"), (pred2, PREDICTION_COLOUR, "dashed")):
                for v in sorted(set(np.unique(m).tolist()) - {0}):
                    if (m == v).any() and min(m.shape) > 1:
                        axes[r, 1].contour(m == v, levels=[0.5], colors=colour, linewidths=0.7, linestyles=ls)
            err = np.zeros((*ref2.shape, 4))
            tp = (ref2 != 0) & (pred2 != 0) & (ref2 == pred2)
            err[tp] = (1, 1, 1, 0.35)
            for key, plane in (("false positive", fp_planes[r][1]), ("false negative", fn_planes[r][1]),
                               ("wrong class", wrong_planes[r][1])):  # fmt: skip
                colour = matplotlib_rgba(ERROR_COLOURS[key])
                err[np.asarray(plane, bool)] = colour
            axes[r, 2].imshow(err, aspect=aspect, interpolation="nearest")
            if plane_name:
                axes[r, 0].set_ylabel(plane_name, fontsize=7)
        for c, t in enumerate(("image", "reference / prediction", "errors")):
            axes[0, c].set_title(t, fontsize=7)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Line2D([], [], color=REFERENCE_COLOUR, label="reference"),
                   Line2D([], [], color=PREDICTION_COLOUR, ls="--", label="prediction"),
                   Patch(color=ERROR_COLOURS["false positive"], label="false positive"),
                   Patch(color=ERROR_COLOURS["false negative"], label="false negative")]  # fmt: skip
        if multi:
            handles.append(Patch(color=ERROR_COLOURS["wrong class"], label="wrong class"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3 if multi else 4, fontsize=6,
                   handlelength=1.2, columnspacing=0.8)  # fmt: skip
        fig.suptitle(title, fontsize=7)
        return render(fig, name, svg, planes=rows, false_positives=int(fp_all.sum()),
                      false_negatives=int(fn_all.sum()), wrong_class=int(wrong_all.sum()))  # fmt: skip


def matplotlib_rgba(colour: str) -> tuple[float, float, float, float]:
    """``"#RRGGBB"`` as an RGBA tuple with alpha 0.85 (the overlays' error colours)."""
    from matplotlib.colors import to_rgba

    return to_rgba(colour, 0.85)


# ------------------------------------------------------------------------------------------------- attention


def map_range(a: np.ndarray) -> tuple[float, float, bool]:
    """``(low, high, flat)`` of an attention map: its range, and whether it spans less than :data:`FLAT_RANGE`
    (then it is drawn on the fixed 0..1 scale, not stretched)."""
    a = np.asarray(a, dtype=float)
    finite = a[np.isfinite(a)]
    if not finite.size:
        return 0.0, 1.0, True
    lo, hi = float(finite.min()), float(finite.max())
    return lo, hi, (hi - lo) < FLAT_RANGE


def _ticks(lo: float, hi: float) -> list[float]:
    return [lo, (lo + hi) / 2, hi] if hi > lo else [lo]


def _spatial_ndim(image_shape: Sequence[int], map_shape: Sequence[int]) -> int:
    """Spatial dimensions shared by an image ``(C, *spatial)`` / ``(*spatial)`` and a map on its grid
    ``(heads, *spatial)`` / ``(*spatial)`` (leading channel and head axes are tried first)."""
    i, m = tuple(image_shape), tuple(map_shape)
    for nd in (len(m) - 1, len(m)):
        if nd in (2, 3) and i[-nd:] == m[-nd:] and len(i) in (nd, nd + 1):
            return nd
    raise ValueError(f"attention map of shape {m} is not on the grid of the image of shape {i}")


def _heads(a: np.ndarray, nd: int) -> list[np.ndarray]:
    a = np.asarray(a, dtype=np.float32)
    return list(a) if a.ndim == nd + 1 else [a]


def attention_figure(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    title: str,
    name: str,
    reference: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    svg: bool = False,
) -> FigureFile:
    """The image and each gate's attention map over it (one column per gate and head); a 3D case as its three
    orthogonal mid-planes (rows). Each map is coloured over its own range with a colour bar whose ticks give the
    values; a map that spans less than :data:`FLAT_RANGE` is drawn flat on the 0..1 scale and its title says so.

    Args:
        image: ``(*spatial)`` or ``(C, *spatial)`` (channel 0 is drawn).
        maps: Gate name -> ``(heads, *spatial)`` or ``(*spatial)`` coefficients on the image grid.
        title: Figure title.
        name: File stem.
        reference: Optional reference mask (green contour; its centre of mass places the 3D planes).
        spacing: Spacing in array order (aspect ratio of the planes); default 1.
        svg: Also render SVG.
    """
    first = np.asarray(next(iter(maps.values())))
    img = np.asarray(image, dtype=np.float32)
    nd = _spatial_ndim(img.shape, first.shape)
    if img.ndim == nd + 1:
        img = img[0]
    spacing = tuple(spacing) if spacing is not None else (1.0,) * nd
    centre = focus_centre(reference) if (reference is not None and nd == 3) else None
    columns: list[tuple[str, np.ndarray]] = []
    for gate, a in maps.items():
        heads = _heads(a, nd)
        columns += [(gate + (f" head {h}" if len(heads) > 1 else ""), ah) for h, ah in enumerate(heads)]
    img_planes = plane_slices(img, centre)
    ref_planes = plane_slices(np.asarray(reference), centre) if reference is not None else None
    rows, cols = len(img_planes), 1 + len(columns)
    flats = []
    with style():
        w = min(PAGE_WIDTH, 1.45 * cols + 0.2)
        fig = _new_figure(w, 1.45 * rows + 0.45)
        axes = fig.subplots(rows, cols, squeeze=False)
        ranges = [map_range(a) for _, a in columns]
        for r in range(rows):
            plane_name, base, (ra, ca) = img_planes[r]
            aspect = float(spacing[ra]) / float(spacing[ca])
            shown = _display(base)
            axes[r, 0].imshow(shown, cmap="gray", vmin=0, vmax=1, aspect=aspect)
            if ref_planes is not None and np.any(ref_planes[r][1]) and min(base.shape) > 1:
                axes[r, 0].contour(ref_planes[r][1] != 0, levels=[0.5], colors=REFERENCE_COLOUR, linewidths=0.6)
            if plane_name:
                axes[r, 0].set_ylabel(plane_name, fontsize=7)
            for c, ((label, a), (lo, hi, flat)) in enumerate(zip(columns, ranges, strict=True), start=1):
                ax = axes[r, c]
                ax.imshow(shown, cmap="gray", vmin=0, vmax=1, aspect=aspect)
                vmin, vmax = (0.0, 1.0) if flat else (lo, hi)
                im = ax.imshow(plane_slices(a, centre)[r][1], cmap="viridis", alpha=0.6, vmin=vmin, vmax=vmax,
                               aspect=aspect)  # fmt: skip
                if r == 0:
                    ax.set_title(label + (f"\nflat: α = {lo:.2f}" if flat else ""), fontsize=7)
                if r == rows - 1:
                    cb = fig.colorbar(im, ax=axes[:, c].tolist(), orientation="horizontal", fraction=0.05, pad=0.02,
                                      ticks=[0, 0.5, 1] if flat else _ticks(lo, hi), format="%.2f")  # fmt: skip
                    cb.ax.tick_params(labelsize=6)
            if r == 0:
                axes[r, 0].set_title("image" + (" (reference green)" if ref_planes is not None else ""), fontsize=7)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        flats = [label for (label, _), (_, _, f) in zip(columns, ranges, strict=True) if f]
        fig.suptitle(title, fontsize=7)
        return render(fig, name, svg, planes=rows, gates=[c for c, _ in columns], flat=flats,
                      ranges={c: (lo, hi) for (c, _), (lo, hi, _f) in zip(columns, ranges, strict=True)})  # fmt: skip


def attention_evolution_figure(
    image: np.ndarray,
    series: Sequence[tuple[int, Mapping[str, np.ndarray]]],
    title: str,
    name: str,
    max_epochs: int = 6,
    svg: bool = False,
) -> FigureFile:
    """How each gate's map changes over training: one row per gate, one column per recorded epoch (at most
    ``max_epochs``, evenly chosen, the first and last kept), one colour scale per gate shared by its epochs (its range
    over all epochs, with a colour bar; flat on 0..1 when that range is below :data:`FLAT_RANGE`). Multi-head maps
    are averaged over heads; a 3D map is shown on its middle plane along the first axis.

    Args:
        image: ``(C, *spatial)`` or ``(*spatial)``: the image the maps were recorded on (``_image`` of the snapshots).
        series: ``[(epoch, {gate: (heads, *spatial)}), ...]`` in epoch order.
        title: Figure title.
        name: File stem.
        max_epochs: Most epochs shown.
        svg: Also render SVG.
    """
    if not series:
        raise ValueError("no attention snapshots to draw")
    gates = sorted(series[-1][1])
    if len(series) > max_epochs:
        idx = sorted({round(i) for i in np.linspace(0, len(series) - 1, max_epochs)})
        series = [series[i] for i in idx]
    img = np.asarray(image, dtype=np.float32)
    nd = _spatial_ndim(img.shape, np.asarray(series[-1][1][gates[0]]).shape)
    if img.ndim == nd + 1:
        img = img[0]

    def plane(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        a = a.mean(0) if a.ndim == nd + 1 else a
        return a[a.shape[0] // 2] if nd == 3 else a

    base = _display(plane(img))
    flats = []
    with style():
        fig = _new_figure(min(PAGE_WIDTH, 1.2 * len(series) + 0.9), 1.25 * len(gates) + 0.45)
        axes = fig.subplots(len(gates), len(series), squeeze=False)
        for g, gate in enumerate(gates):
            planes = [plane(maps[gate]) if gate in maps else None for _, maps in series]
            vals = np.concatenate([p.ravel() for p in planes if p is not None])
            lo, hi, flat = map_range(vals)
            if flat:
                flats.append(gate)
            vmin, vmax = (0.0, 1.0) if flat else (lo, hi)
            im = None
            for e, ((epoch, _), p) in enumerate(zip(series, planes, strict=True)):
                ax = axes[g, e]
                ax.imshow(base, cmap="gray", vmin=0, vmax=1)
                if p is not None:
                    im = ax.imshow(p, cmap="viridis", alpha=0.6, vmin=vmin, vmax=vmax)
                if g == 0:
                    ax.set_title(f"epoch {epoch}", fontsize=7)
                if e == 0:
                    ax.set_ylabel(gate + (f"\nflat: α = {lo:.2f}" if flat else ""), fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
            if im is not None:
                cb = fig.colorbar(im, ax=axes[g, :].tolist(), fraction=0.04, pad=0.02,
                                  ticks=[0, 0.5, 1] if flat else _ticks(lo, hi), format="%.2f")  # fmt: skip
                cb.ax.tick_params(labelsize=6)
        fig.suptitle(title, fontsize=7)
        return render(fig, name, svg, gates=gates, epochs=[e for e, _ in series], flat=flats)


# ------------------------------------------------------------------------------------------------- classification


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str, name: str, svg: bool = False
                     ) -> FigureFile:  # fmt: skip
    """A confusion matrix: rows the true class, columns the predicted one, each cell its count; the colour is the
    fraction of the true class (row-normalised, 0..1, with a colour bar) so that rare classes are not washed out
    (column width).

    Args:
        matrix: ``(K, K)`` counts, ``matrix[i, j]`` = cases of class ``i`` predicted as ``j``.
        class_names: ``K`` names.
        title: Figure title.
        name: File stem.
        svg: Also render SVG.
    """
    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    with style():
        size = min(COLUMN_WIDTH, 1.2 + 0.45 * k)
        fig = _new_figure(size + 0.6, size)
        ax = fig.add_subplot()
        im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "black")  # fmt: skip
        ticks = [_wrap(c, 12) for c in class_names]
        ax.set_xticks(range(k), ticks)
        ax.set_yticks(range(k), ticks)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.spines[:].set_visible(False)
        cb = fig.colorbar(im, ax=ax, ticks=[0, 0.5, 1], fraction=0.05)
        cb.set_label("fraction of the true class")
        ax.set_title(title)
        return render(fig, name, svg, classes=k)


def roc_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], title: str, name: str,
               svg: bool = False) -> FigureFile:  # fmt: skip
    """ROC curves (one-vs-rest per class), the area under each in the legend, the chance diagonal dotted (column
    width, square axes).

    Args:
        curves: ``(class name, false positive rates, true positive rates, AUC)`` per class (scikit-learn's
            ``roc_curve`` and ``auc``).
        title: Figure title.
        name: File stem.
        svg: Also render SVG.
    """
    with style():
        fig = _new_figure(COLUMN_WIDTH, COLUMN_WIDTH * 0.9)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ":", color="0.5", lw=0.8)
        for i, (label, fpr, tpr, area) in enumerate(curves):
            ax.plot(fpr, tpr, color=PALETTE[i % len(PALETTE)], lw=1.2, drawstyle="steps-post",
                    label=f"{label} (AUC {area:.3f})")  # fmt: skip
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (1 − specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3, lw=0.4)
        ax.set_title(title)
        return render(fig, name, svg, curves=len(curves))
