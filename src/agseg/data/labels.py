"""Mask rules and label sets: how raw mask files become one integer label map, and what labels a dataset declares.

Pure functions and one frozen dataclass; nothing here reads a file.

* :class:`MaskSpec`: per-file threshold -> merge several files -> ``label_map`` -> check against allowed ``labels``.
* :func:`parse_labels`: a declared label set (a list of values, ``{value: name}`` or ``{name: value}``) ->
  ``{value: name}`` sorted by value. :func:`msd_labels` does the same for a ``dataset.json`` ``labels`` entry.
* :func:`label_counts`: ``{value: voxel count}`` of a label map.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agseg.data.errors import DataError

_INT = re.compile(r"^\s*\d+\s*$")
_SIGNED_INT = re.compile(r"^\s*-\d+\s*$")


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
        labels: Allowed label values after mapping (``None``: any non-negative integer). Layouts set it from the
            declared label set (``DatasetIndex.labels``).
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


# --------------------------------------------------------------------------------------------- declared label sets
def _is_value_key(k: Any) -> bool:
    """Whether a mapping key is a label value (an int or an integer string, sign allowed) rather than a name."""
    if isinstance(k, bool | np.bool_):
        return False
    if isinstance(k, numbers.Integral):
        return True
    return isinstance(k, str) and bool(_INT.match(k) or _SIGNED_INT.match(k))


def _value(x: Any) -> int:
    """A label value: a non-negative integer (``3``, ``np.int64(3)``, ``"3"``, ``3.0``); else ``ValueError``."""
    if isinstance(x, bool | np.bool_):
        raise ValueError(f"label value {x!r} is not an integer")
    integral = isinstance(x, numbers.Integral) or (isinstance(x, float) and x.is_integer())
    if not (integral or (isinstance(x, str) and (_INT.match(x) or _SIGNED_INT.match(x)))):
        raise ValueError(f"label value {x!r} is not an integer")
    v = int(x)
    if v < 0:
        raise ValueError(f"label value {v} is negative (mask values are non-negative)")
    return v


def _default_name(v: int) -> str:
    return "background" if v == 0 else str(v)


def parse_labels(value: Any) -> dict[int, str] | None:
    """A declared label set in any of its accepted forms -> ``{value: name}`` sorted by value.

    Accepted forms (the ``labels`` option of every layout, in a descriptor or as a keyword):

    * ``None``: nothing declared (returns ``None``);
    * a list of values ``[0, 1, 2]``: names ``"background"`` for 0 and ``str(v)`` otherwise;
    * ``{value: name}``: ``{0: "background", 1: "lung"}`` (keys ints or integer strings, as JSON gives them);
    * ``{name: value}``: ``{"background": 0, "lung": 1}`` (the nnU-Net v2 ``dataset.json`` form). A region,
      ``{"tumour": [1, 2]}``, names each of its values; a value listed under several names takes the name of the
      smallest entry listing it (a plain value beats a region; ties go to the first listed).

    Which mapping form it is follows from the keys: all ints / integer strings -> ``{value: name}``, none ->
    ``{name: value}``. Value 0 is kept like any other value; it is not added when missing (then a mask with
    background fails the mask check, as it always has).

    Args:
        value: The declared labels.

    Returns:
        ``{value: name}`` sorted by value, or ``None``.

    Raises:
        ValueError: Mixed key kinds, non-integer or negative values, a string or another non-collection.

    Example:
        >>> parse_labels({"background": 0, "tumour": [1, 2]})
        {0: 'background', 1: 'tumour', 2: 'tumour'}
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        keys = list(value)
        kinds = {_is_value_key(k) for k in keys}
        if len(kinds) > 1:
            raise ValueError(f"labels mixes values and names as keys ({keys}); give {{value: name}} or {{name: value}}")
        if kinds == {True}:  # {value: name}
            out = {}
            for k, name in value.items():
                if name is None or isinstance(name, Mapping | list | tuple | set):
                    raise ValueError(f"label {k!r}: name must be a string, got {name!r}")
                out[_value(k)] = str(name)
            return dict(sorted(out.items()))
        best: dict[int, tuple[int, int, str]] = {}  # value -> (size of the entry, position, name)
        for pos, (name, vals) in enumerate(value.items()):
            items = list(vals) if isinstance(vals, list | tuple | set | frozenset) else [vals]
            if not items:
                raise ValueError(f"label {name!r} lists no value")
            for x in items:
                v = _value(x)
                cand = (len(items), pos, str(name))
                if v not in best or cand[:2] < best[v][:2]:
                    best[v] = cand
        return {v: best[v][2] for v in sorted(best)}
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"labels must be a list of values or a mapping, got {value!r}")
    return {v: _default_name(v) for v in sorted({_value(x) for x in value})}


def msd_labels(raw: Any, path: Path) -> dict[int, str] | None:
    """The ``labels`` entry of an MSD / nnU-Net ``dataset.json`` -> ``{value: name}`` (``None`` when absent).

    MSD form ``{"0": "background", "1": "Anterior"}`` and nnU-Net v2 form ``{"background": 0, "tumour": [1, 2]}``
    (regions name each of their values; see :func:`parse_labels`). Anything but a non-empty mapping declares nothing.

    Raises:
        DataError: A malformed entry (names ``path``).
    """
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return parse_labels(raw)
    except ValueError as e:
        raise DataError(path, f"bad 'labels' entry: {e}") from e
