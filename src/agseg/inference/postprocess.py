"""Post-processing of predicted label maps, chosen on cross-validation predictions as nnU-Net does.

The one operation: per class, keep the ``k`` largest connected components (two lungs: ``k = 2``) and give the rest
to the background. Whether it is applied, and with which ``k``, is decided per class on a CV run's saved test
predictions against their references (:func:`choose_postprocessing`): an operation is kept only where it improves
the mean Dice over all CV cases. The decision is stored in the CV folder (``postprocessing.json``) and in the model
bundle, and :class:`~agseg.inference.predictor.Predictor` applies it.

Connected components come from :func:`scipy.ndimage.label` with full connectivity (8 in 2D, 26 in 3D). MONAI's
``KeepLargestConnectedComponent`` does the same but needs scikit-image (or cuCIM) on the CPU, which agseg does not
otherwise depend on; SciPy is already a dependency.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["apply_postprocessing", "choose_postprocessing", "keep_largest_components"]

log = logging.getLogger(__name__)


def keep_largest_components(mask: np.ndarray, k: int = 1) -> np.ndarray:
    """The ``k`` largest connected components of a boolean ``mask`` (full connectivity); ties keep the first found.

    Args:
        mask: ``(*spatial)`` boolean (non-zero is foreground).
        k: components to keep (>= 1).

    Returns:
        A boolean array of the same shape.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = np.asarray(mask) != 0
    labels, n = ndimage.label(m, structure=np.ones((3,) * m.ndim, dtype=bool))
    if n <= k:
        return m
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(-sizes, kind="stable")[:k] + 1
    return np.isin(labels, keep)


def apply_postprocessing(label: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    """Apply a post-processing decision to a label map.

    Args:
        label: ``(*spatial)`` label values.
        spec: ``{"keep_largest": {value: k, ...}}`` (JSON keys may be strings); None or empty: unchanged.

    Returns:
        The label map with, per listed value, every component but the ``k`` largest set to 0.
    """
    if not spec or not spec.get("keep_largest"):
        return label
    out = np.array(label, copy=True)
    for value, k in spec["keep_largest"].items():
        cls = out == int(value)
        if cls.any():
            out[cls & ~keep_largest_components(cls, int(k))] = 0
    return out


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / denom


def choose_postprocessing(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    classes: Sequence[int],
    candidates: Sequence[int] = (1, 2, 3),
    min_gain: float = 1e-4,
) -> dict[str, Any]:
    """Decide, per class, whether keeping the ``k`` largest components improves the mean Dice over ``pairs``.

    Args:
        pairs: ``(prediction, reference)`` label maps of every CV test case (the folds' saved predictions).
        classes: foreground label values.
        candidates: the ``k`` values tried.
        min_gain: the least improvement of the mean Dice that counts (smaller gains keep the prediction as is).

    Returns:
        ``{"keep_largest": {value: k}, "classes": {value: {"none": mean Dice, "k1": ..., "chosen": k or None}},
        "n_cases": n}``; ``keep_largest`` holds only the classes where an operation helped.
    """
    scores: dict[int, dict[str, list[float]]] = {int(c): {"none": []} for c in classes}
    n = 0
    for pred, ref in pairs:
        n += 1
        for c in scores:
            p, r = pred == c, ref == c
            scores[c]["none"].append(_dice(p, r))
            for k in candidates:
                scores[c].setdefault(f"k{k}", []).append(_dice(keep_largest_components(p, k) if p.any() else p, r))
    decision: dict[str, Any] = {"keep_largest": {}, "classes": {}, "n_cases": n, "metric": "dice"}
    for c, table in scores.items():
        means = {name: float(np.mean(v)) if v else float("nan") for name, v in table.items()}
        best_name = max((name for name in means if name != "none"), key=lambda name: means[name], default=None)
        chosen = None
        if best_name is not None and means[best_name] > means["none"] + min_gain:
            chosen = int(best_name[1:])
            decision["keep_largest"][str(c)] = chosen
        decision["classes"][str(c)] = {**means, "chosen": chosen}
        log.info("post-processing class %d: %s -> %s", c, {k: round(v, 5) for k, v in means.items()}, chosen)
    return decision
