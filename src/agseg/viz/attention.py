"""Pictures of where the network looks: attention maps over the image, and their evolution over epochs.

2D images are drawn whole; 3D volumes as their three central orthogonal slices (or the slice with the most
foreground). Every figure is written atomically as PNG with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from agseg.fileio import atomic_path

__all__ = ["central_slices", "plot_attention", "plot_attention_evolution", "plot_saved_attention", "save_figure"]


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def central_slices(volume: np.ndarray, focus: np.ndarray | None = None) -> list[np.ndarray]:
    """A 2D array as ``[array]``; a 3D ``(z, y, x)`` array as its three orthogonal slices through the centre
    (or through the centre of mass of ``focus`` when it is non-empty)."""
    if volume.ndim == 2:
        return [volume]
    if volume.ndim != 3:
        raise ValueError(f"expected a 2D or 3D array, got shape {volume.shape}")
    centre = [s // 2 for s in volume.shape]
    if focus is not None and focus.any():
        centre = [round(c) for c in np.argwhere(focus).mean(0)]
    z, y, x = centre
    return [volume[z], volume[:, y], volume[:, :, x]]


def _norm(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
    return np.clip((img - lo) / (hi - lo + 1e-8), 0, 1)


def plot_attention(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    title: str | None = None,
    stretch: bool = True,
) -> Path:
    """One figure: the image (with reference and predicted contours) and each gate's attention map over it.

    Args:
        image: ``(*spatial)`` or ``(C, *spatial)`` (the first channel is drawn).
        maps: gate name -> ``(heads, *spatial)`` or ``(*spatial)`` attention coefficients in [0, 1], on the image grid.
        path: output PNG.
        label: reference mask ``(*spatial)`` (drawn as a green contour).
        prediction: predicted mask ``(*spatial)`` (drawn as a red contour).
        stretch: colour each map over its own range (printed in its title), so that gates still close to their
            open initialisation (alpha near 1 everywhere) show where they discriminate; False uses 0..1.
    """
    spatial_ndim = len(next(iter(maps.values())).shape) if maps else image.ndim
    img = image[0] if image.ndim > 2 and (not maps or image.ndim == spatial_ndim) else image
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2D or 3D after taking the first channel, got {img.shape}")
    focus = label if label is not None else None
    columns: list[tuple[str, list[np.ndarray]]] = []
    for name, a in maps.items():
        a = np.asarray(a)
        heads = a if a.ndim == img.ndim + 1 else a[None]
        for h, ah in enumerate(heads):
            columns.append((f"{name}" + (f" head {h}" if len(heads) > 1 else ""), central_slices(ah, focus)))
    img_slices = central_slices(img, focus)
    lab_slices = central_slices(label, focus) if label is not None else [None] * len(img_slices)
    pred_slices = central_slices(prediction, focus) if prediction is not None else [None] * len(img_slices)
    n_rows, n_cols = len(img_slices), 1 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows), squeeze=False)
    for r in range(n_rows):
        base = _norm(img_slices[r])
        ax = axes[r, 0]
        ax.imshow(base, cmap="gray")
        for m, color in ((lab_slices[r], "lime"), (pred_slices[r], "red")):
            if m is not None and np.any(m):
                ax.contour(np.asarray(m) > 0, levels=[0.5], colors=color, linewidths=0.8)
        if r == 0:
            said = [w for w, m in (("ref green", label), ("pred red", prediction)) if m is not None]
            ax.set_title("image" + (f" ({', '.join(said)})" if said else ""), fontsize=8)
        for c, (name, slices) in enumerate(columns, start=1):
            ax = axes[r, c]
            ax.imshow(base, cmap="gray")
            lo, hi = (float(np.min(slices[r])), float(np.max(slices[r]))) if stretch else (0.0, 1.0)
            im = ax.imshow(slices[r], cmap="jet", alpha=0.5, vmin=lo, vmax=max(hi, lo + 1e-6))
            ax.set_title(f"{name}\nalpha {lo:.2f}-{hi:.2f}" if stretch else (name if r == 0 else ""), fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    if columns:
        label = "attention coefficient" + (" (per-map range)" if stretch else "")
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label=label, ticks=[] if stretch else None)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_attention_evolution(
    image: np.ndarray,
    maps_by_epoch: Sequence[tuple[int, Mapping[str, np.ndarray]]],
    path: str | os.PathLike[str],
    gate: str | None = None,
) -> Path:
    """Attention of one gate over training epochs (seed 001 Fig. 3 / seed 003: the gates learn to focus).

    Args:
        image: ``(*spatial)`` or ``(1, *spatial)``.
        maps_by_epoch: ``[(epoch, {gate: (heads, *spatial)}), ...]``.
        path: output PNG.
        gate: gate to draw (default: the finest gated level).
    """
    if not maps_by_epoch:
        raise ValueError("no attention maps to plot")
    img = image[0] if image.ndim in (3, 4) and image.shape[0] == 1 else image
    names = sorted(maps_by_epoch[0][1])
    gate = gate or names[0]
    fig, axes = plt.subplots(1, len(maps_by_epoch), figsize=(2.4 * len(maps_by_epoch), 2.6), squeeze=False)
    base = _norm(central_slices(img)[0])
    for ax, (epoch, maps) in zip(axes[0], maps_by_epoch, strict=True):
        a = np.asarray(maps[gate])
        a = a.mean(0) if a.ndim == img.ndim + 1 else a
        ax.imshow(base, cmap="gray")
        ax.imshow(central_slices(a)[0], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"epoch {epoch}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"attention at {gate} over training", fontsize=9)
    return save_figure(fig, path)


def plot_saved_attention(folder: str | os.PathLike[str]) -> list[Path]:
    """One evolution figure per gate (``evolution_<gate>.png``) from the ``epoch_NNN.npz`` snapshots a training run
    saved in ``folder`` (:class:`agseg.training.callbacks.AttentionSnapshots`; also those saved before a resume)."""
    folder = Path(folder)
    files = sorted(folder.glob("epoch_*.npz"))
    if not files:
        return []
    loaded = []
    for f in files:
        with np.load(f) as z:
            loaded.append((int(f.stem.split("_")[1]), {k: z[k].astype(np.float32) for k in z.files}))
    image = loaded[-1][1]["_image"]
    series = [(e, {k: v for k, v in m.items() if k != "_image"}) for e, m in loaded]
    return [
        plot_attention_evolution(image, series, folder / f"evolution_{gate}.png", gate=gate)
        for gate in sorted(series[-1][1])
    ]
