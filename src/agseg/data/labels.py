"""Mask rules: how raw mask files become one integer label map, and label counting.

Pure functions and one frozen dataclass; nothing here reads a file.

* :class:`MaskSpec`: per-file threshold -> merge several files -> ``label_map`` -> check against allowed ``labels``.
* :func:`label_counts`: ``{value: voxel count}`` of a label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agseg.data.errors import DataError


# --------------------------------------------------------------------------------------------------------- mask rules
@dataclass(frozen=True)
class MaskSpec:
    """How raw mask files become one integer label map ``(*spatial)``.

    Order: per file ``threshold`` -> merge the files (``merge``) -> ``label_map`` -> check against ``labels``.

    Attributes:
        threshold: ``None`` (values are labels), a number (``value > threshold`` -> 1), or ``"auto"``: an 8-bit mask
            whose maximum is 255 is thresholded at 127 (binary or anti-aliased PNGs), anything else is kept.
        label_map: ``{raw value: label}``; 0 maps to 0 unless listed. A value present in a mask but absent from the
            map is an error (LUNA16 default ``{3: 1, 4: 1, 5: 0}``).
        merge: Several mask files: ``"union"`` (foreground of any -> 1) or ``"index"`` (file k -> label k + 1).
        labels: Allowed label values after mapping (``None``: any non-negative integer).
    """

    threshold: float | str | None = None
    label_map: Mapping[int, int] | None = None
    merge: str = "union"
    labels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and self.threshold != "auto" and not isinstance(self.threshold, int | float):
            raise ValueError(f"mask_threshold must be None, 'auto' or a number, got {self.threshold!r}")
        if self.label_map is not None:
            object.__setattr__(self, "label_map", {int(k): int(v) for k, v in dict(self.label_map).items()})
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(sorted(int(v) for v in self.labels)))
        if self.merge not in ("union", "index"):
            raise ValueError(f"merge must be 'union' or 'index', got {self.merge!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "label_map": dict(self.label_map) if self.label_map is not None else None,
            "merge": self.merge,
            "labels": list(self.labels) if self.labels is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MaskSpec:
        return cls(**d)

    def apply(self, masks: Sequence[tuple[np.ndarray, Path]], case_id: str | None = None) -> np.ndarray:
        """Raw masks ``[(array (*spatial), path), ...]`` -> labels ``(*spatial)`` uint8 (int16/int32 if needed).

        Raises:
            DataError: Non-integer or negative values, values outside ``label_map`` or ``labels`` (names the file).
        """
        first = masks[0][1]
        if len(masks) == 1:
            out = _threshold(masks[0][0], self.threshold)
        else:
            out = np.zeros(masks[0][0].shape, np.uint8)
            for k, (m, _) in enumerate(masks):
                fg = _threshold(m, self.threshold) > 0
                out[fg] = 1 if self.merge == "union" else k + 1
        out = _as_int_labels(out, first, case_id)
        counts = label_counts(out)
        present = set(counts)
        if self.label_map is not None:
            unknown = sorted(present - set(self.label_map) - {0})
            if unknown:
                raise DataError(
                    first, f"mask values {unknown} are not in the label map {self.label_map}", case_id=case_id
                )
            lut = np.arange(max(max(present), max(self.label_map)) + 1, dtype=np.int64)
            for k, v in self.label_map.items():
                lut[k] = v
            out = _as_int_labels(lut[out], first, case_id)
            present = set(label_counts(out))
        if self.labels is not None:
            bad = sorted(present - set(self.labels))
            if bad:
                raise DataError(first, f"mask values {bad} outside the allowed labels {list(self.labels)}", case_id)
        return out


def _threshold(m: np.ndarray, threshold: float | str | None) -> np.ndarray:
    if threshold == "auto":
        if m.dtype == np.uint8 and m.size and int(m.max()) == 255:
            return (m > 127).astype(np.uint8)
        return m
    if threshold is None:
        return m
    return (m > threshold).astype(np.uint8)


def _as_int_labels(m: np.ndarray, path: Path, case_id: str | None) -> np.ndarray:
    if m.dtype == bool:
        return m.astype(np.uint8)
    if m.dtype.kind == "f":
        if not np.all(np.isfinite(m)):
            raise DataError(path, "mask contains NaN/Inf values", case_id)
        r = m.astype(np.int64)
        if not np.array_equal(r, m):
            frac = m[r != m]
            raise DataError(path, f"mask has non-integer values (e.g. {frac.flat[0]:g}); set mask_threshold", case_id)
        m = r
    if m.dtype.kind not in "iu":
        raise DataError(path, f"mask dtype {m.dtype} is not an integer type", case_id)
    if m.size == 0:
        return m.astype(np.uint8)
    lo, hi = int(m.min()), int(m.max())
    if lo < 0:
        raise DataError(path, f"mask has negative values (min {lo})", case_id)
    target = np.uint8 if hi < 256 else (np.int16 if hi < 32768 else np.int32)
    return m.astype(target, copy=False)


def label_counts(label: np.ndarray) -> dict[int, int]:
    """``{label value: voxel count}`` of an integer label map (only values present)."""
    if label.size == 0:
        return {}
    counts = np.bincount(label.ravel().astype(np.int64, copy=False))
    return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
