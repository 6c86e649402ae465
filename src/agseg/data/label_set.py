"""The explicit label set of an experiment: which label values exist, their names, and how they map to outputs.

A label set is declared (``data.labels`` in a config, ``dataset.json``, a descriptor), or counted over every case
of the experiment once (raw masks, cached by file signature so that a second run reads no mask). It is never
guessed from a sample. Every case is checked against it before training starts, it is stored in the model bundle,
and it decides how predicted masks are written (binary: 0/255 in raster formats; multi-class: the raw values).

Outputs: a binary set (background + one value) trains one sigmoid channel; a set of K values trains K softmax
channels, channel k standing for the k-th smallest value. :meth:`LabelSet.encode` maps label values to channel
indices (identity for the usual 0..K-1), :meth:`LabelSet.decode` maps them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agseg.data.errors import DataError

__all__ = ["LabelSet", "case_label_values", "count_labels"]

log = logging.getLogger(__name__)


def _slug(name: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower()).strip("_")
    return s or "class"


@dataclass(frozen=True)
class LabelSet:
    """Label values (sorted, 0 = background first) and their names.

    Attributes:
        values: label values, e.g. ``(0, 1, 2)``.
        names: one name per value, e.g. ``("background", "anterior", "posterior")``.
        source: where the set came from (``"data.labels"``, ``"dataset.json"``, ``"counted over 40 cases"``, ...).
    """

    values: tuple[int, ...]
    names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        vals = tuple(int(v) for v in self.values)
        if len(vals) != len(self.names):
            raise ValueError(f"{len(vals)} label values but {len(self.names)} names")
        if list(vals) != sorted(set(vals)):
            raise ValueError(f"label values must be unique and sorted, got {vals}")
        if not vals or vals[0] != 0:
            raise ValueError(f"a label set starts with the background value 0, got {vals}")
        if len(vals) < 2:
            raise ValueError("a label set needs a foreground value besides 0")
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_mapping(cls, mapping: Mapping[int, str], source: str = "") -> LabelSet:
        """From ``{value: name}`` (0 added as ``background`` when absent)."""
        m = {int(k): str(v) for k, v in mapping.items()}
        m.setdefault(0, "background")
        items = sorted(m.items())
        return cls(tuple(k for k, _ in items), tuple(v for _, v in items), source)

    @classmethod
    def from_values(cls, values: Iterable[int], names: Mapping[int, str] | None = None, source: str = "") -> LabelSet:
        """From label values; names from ``names`` where given, else ``background`` for 0 and the value."""
        vals = sorted({int(v) for v in values} | {0})
        if len(vals) < 2:  # a dataset whose masks are all empty still has a foreground class to learn
            vals = [0, 1]
        names = {int(k): str(v) for k, v in (names or {}).items()}
        return cls(tuple(vals), tuple(names.get(v, "background" if v == 0 else str(v)) for v in vals), source)

    @classmethod
    def from_bundle(cls, labels: Sequence[int], class_names: Mapping[str, str] | None = None) -> LabelSet:
        """From a model bundle's ``labels`` and ``class_names`` (keys are strings in JSON)."""
        names = {int(k): v for k, v in (class_names or {}).items()}
        return cls.from_values(labels, names, "model bundle")

    # ---------------------------------------------------------------- properties
    @property
    def binary(self) -> bool:
        """True for background + one foreground value (one sigmoid output)."""
        return len(self.values) == 2

    @property
    def out_channels(self) -> int:
        """Output channels of a net for this set: 1 when binary, else one per value."""
        return 1 if self.binary else len(self.values)

    @property
    def foreground(self) -> tuple[int, ...]:
        return self.values[1:]

    def to_dict(self) -> dict[int, str]:
        """``{value: name}``."""
        return dict(zip(self.values, self.names, strict=True))

    def name_of(self, value: int) -> str:
        return self.to_dict()[int(value)]

    def column_suffix(self, value: int) -> str:
        """The suffix of per-class metric columns: the class name as a slug (``dice_anterior``), or the value when
        the set has no names of its own (``dice_2``)."""
        name = self.name_of(value)
        return str(value) if name == str(value) else _slug(name)

    def column_suffixes(self) -> dict[int, str]:
        """``{foreground value: column suffix}``, unique (the value is appended to names that collide)."""
        out: dict[int, str] = {}
        for v in self.foreground:
            s = self.column_suffix(v)
            out[v] = f"{s}_{v}" if s in out.values() else s
        return out

    def describe(self) -> str:
        return ", ".join(f"{v}: {n}" for v, n in self.to_dict().items())

    # ---------------------------------------------------------------- checks and mapping
    def unknown(self, values: Iterable[int]) -> list[int]:
        """The values in ``values`` that are not in the set."""
        known = set(self.values)
        return sorted({int(v) for v in values} - known)

    def check(self, values: Iterable[int], path: Any, case_id: str | None = None) -> None:
        """Raise a :class:`~agseg.data.errors.DataError` naming ``path`` when ``values`` hold a value not in the set.

        The message tells how to fix it: a stray value in the data, or a class to declare in ``data.labels``.
        """
        bad = self.unknown(values)
        if bad:
            raise DataError(
                path,
                f"label value(s) {bad} are not in the label set {{{self.describe()}}} ({self.source or 'declared'}); "
                "fix the mask, map the value with data.options.label_map, or declare it in data.labels",
                case_id,
            )

    def _lut(self) -> np.ndarray:
        lut = np.full(max(self.values) + 1, -1, dtype=np.int64)
        lut[list(self.values)] = np.arange(len(self.values))
        return lut

    def encode(self, label: np.ndarray) -> np.ndarray:
        """Label values -> class indices (0..K-1; for a binary set 0/1). Unknown values raise ``ValueError``."""
        lab = np.asarray(label)
        if lab.size and (int(lab.min()) < 0 or int(lab.max()) > max(self.values)):
            raise ValueError(f"label values {self.unknown(np.unique(lab))} not in the label set {self.values}")
        idx = self._lut()[lab.astype(np.int64, copy=False)]
        if lab.size and int(idx.min()) < 0:
            raise ValueError(f"label values {self.unknown(np.unique(lab))} not in the label set {self.values}")
        return idx

    def decode(self, index: np.ndarray) -> np.ndarray:
        """Class indices -> label values (uint8, or uint16 above 255)."""
        vals = np.asarray(self.values)
        return vals[np.asarray(index, dtype=np.int64)].astype(np.uint16 if max(self.values) > 255 else np.uint8)


# --------------------------------------------------------------------------------------------- counting labels
def case_label_values(ref: Any, extra: Any = None) -> tuple[dict[int, int], bool | None]:
    """``({value: voxel count}, auto-thresholded)`` of a case's label map, read from its mask files only.

    Args:
        ref: the case.
        extra: a further :class:`~agseg.data.labels.MaskSpec` applied after the case's own (the preprocessing's
            ``mask_threshold`` / ``label_map``), so that the counts are the labels training sees.

    The flag says whether ``mask_threshold: auto`` binarised the masks (8-bit with a maximum of 255): True/False,
    or None when the case does not use ``auto``.
    """
    from agseg.data.io import read_mask
    from agseg.data.labels import label_counts

    masks = []
    for p in ref.mask_paths:
        m, _ = read_mask(p)
        masks.append((m, p))
    auto = None
    if ref.mask_spec.threshold == "auto":
        auto = any(m.dtype == np.uint8 and m.size and int(m.max()) == 255 for m, _ in masks)
    try:
        label = ref.mask_spec.apply(masks, ref.case_id)
        if extra is not None:
            label = extra.apply([(label, ref.mask_paths[0])], ref.case_id)
        return label_counts(label), auto
    except DataError as e:
        e.case_id = e.case_id or ref.case_id
        raise


def _key(ref: Any, cache: Any, extra: Any) -> str:
    blob = {"labels": 2, "case": cache._sources(ref), "extra": extra.to_dict() if extra is not None else None}
    return "labels-" + hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def count_labels(
    refs: Sequence[Any], cache: Any = None, progress: bool = False, extra: Any = None
) -> dict[str, dict[int, int]]:
    """``{case_id: {value: voxels}}`` for every labelled case in ``refs``.

    With a :class:`~agseg.data.cache.PreprocessCache`, each case's counts are stored as a small JSON keyed by its
    files' signatures (path, size, mtime) and mask rules, so that later runs read no mask at all. ``extra`` is the
    preprocessing's mask rules (see :func:`case_label_values`).

    Raises:
        DataError: an unreadable mask, bad label values (naming the file), or masks that ``mask_threshold: auto``
            treats differently (some binarised from 0/255, others kept with values above 1: coded differently).
    """
    out: dict[str, dict[int, int]] = {}
    auto: dict[str, bool] = {}
    items: Any = [r for r in refs if r.has_mask]
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="counting labels", unit="case", leave=False, disable=None)
    for ref in items:
        key = _key(ref, cache, extra) if cache is not None else None
        hit = cache.load_json(key) if key is not None else None
        if isinstance(hit, dict) and "counts" in hit:
            out[ref.case_id] = {int(k): int(v) for k, v in hit["counts"].items()}
            flag = hit.get("auto")
        else:
            counts, flag = case_label_values(ref, extra)
            out[ref.case_id] = counts
            if key is not None:
                blob = {"case_id": ref.case_id, "counts": {str(k): v for k, v in counts.items()}, "auto": flag}
                cache.save_json(key, blob)
        if flag is not None:
            auto[ref.case_id] = bool(flag)
    binarised = [c for c, f in auto.items() if f]
    kept = [c for c, f in auto.items() if not f and max(out[c], default=0) > 1]
    if binarised and kept:
        by_id = {r.case_id: r for r in refs}
        raise DataError(
            by_id[kept[0]].mask_paths[0],
            f"mask_threshold 'auto' binarised {len(binarised)} mask(s) holding 255 (e.g. {binarised[0]}) but kept "
            f"{len(kept)} as they are (this one holds {sorted(out[kept[0]])}): the masks are coded differently; set "
            "data.options.mask_threshold (e.g. 127) or a label_map",
            kept[0],
        )
    return out


def resolve_label_set(
    refs: Sequence[Any],
    declared: Mapping[int, str] | None,
    declared_source: str,
    cache: Any = None,
    progress: bool = False,
    extra: Any = None,
) -> tuple[LabelSet, dict[str, dict[int, int]]]:
    """The label set of an experiment over ``refs`` and every case's counts, after checking each case against it.

    Args:
        refs: every labelled case of the experiment (all folds of a CV, so that every fold builds the same net).
        declared: ``{value: name}`` from the config or the dataset, or None to count.
        declared_source: where ``declared`` came from (for messages).
        cache: a cache for the counts (see :func:`count_labels`).
        extra: the preprocessing's mask rules, applied after the cases' own (see :func:`case_label_values`).

    Raises:
        DataError: a case with a value outside the declared set (naming its mask file).
    """
    counts = count_labels(refs, cache, progress, extra)
    if declared is not None:
        ls = LabelSet.from_mapping(declared, declared_source)
        by_id = {r.case_id: r for r in refs}
        for cid, c in counts.items():
            ls.check(c.keys(), by_id[cid].mask_paths[0], cid)
        return ls, counts
    values: set[int] = set()
    for c in counts.values():
        values |= set(c)
    ls = LabelSet.from_values(values, source=f"counted over {len(counts)} cases")
    gaps = sorted(set(range(max(ls.values) + 1)) - set(ls.values))
    if gaps:
        rare = {v: sum(v in c for c in counts.values()) for v in ls.foreground}
        log.warning(
            "label values %s are not contiguous (cases holding each: %s): if one is a stray value, declare "
            "data.labels or map it with data.options.label_map",
            list(ls.values),
            rare,
        )
    return ls, counts


def declared_labels(index: Any) -> tuple[dict[int, str] | None, str]:
    """The label set a dataset index declares (``DatasetIndex.labels``), and its source."""
    labels = getattr(index, "labels", None)
    if labels:
        return {int(k): str(v) for k, v in labels.items()}, f"declared by the {index.layout} dataset in {index.root}"
    return None, ""
