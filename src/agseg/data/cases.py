"""Cases and the dataset index: where a case's files are (:class:`CaseRef`), the loaded arrays (:class:`Case`), and
the cases of a dataset with what its layout declares (:class:`DatasetIndex`).

Nothing is decoded until :meth:`CaseRef.load`. :func:`save_case_list` writes an index as the CSV/JSON case list that
the ``list`` layout reads back.
"""

from __future__ import annotations

import csv
import json
import logging
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from agseg.data.errors import DataError, SkippedCase
from agseg.data.io import Geometry, read_header, read_image, read_mask
from agseg.data.labels import MaskSpec

log = logging.getLogger(__name__)


@dataclass
class Case:
    """A loaded case.

    Attributes:
        case_id: Unique name within the dataset.
        patient_id: Grouping key for patient-wise splits.
        image: ``(C, *spatial)`` float32, array order ``(z, y, x)``.
        geometry: Geometry of the image (``n_channels == C``).
        label: ``(*spatial)`` integer labels, or ``None`` for an unlabelled case.
        ref: The :class:`CaseRef` it came from.
    """

    case_id: str
    patient_id: str
    image: np.ndarray
    geometry: Geometry
    label: np.ndarray | None = None
    ref: CaseRef | None = None


@dataclass(frozen=True)
class CaseRef:
    """Where a case's files are and how to read them; nothing is read until :meth:`load`.

    Attributes:
        case_id: Unique name within the dataset (file stem, folder name, series UID).
        image_paths: One path per channel file (a file may hold several channels, e.g. RGB).
        mask_paths: Mask files merged into one label map by ``mask_spec`` (empty: unlabelled).
        patient_id: Grouping key for patient-wise CV splits (defaults to ``case_id``).
        mask_spec: Thresholding / merging / label mapping of the masks.
        drop_alpha: Drop the alpha channel of RGBA rasters.
        geometry_tol: Tolerance for channel/mask geometry checks (see :meth:`Geometry.mismatch`).
        meta: Extra information (e.g. ``{"split": "train"}``); not part of equality.
        target: Image-level class (a non-negative int) for classification, or ``None``. Independent of the mask: a
            case with a target and no mask is labelled for classification only (:meth:`DatasetIndex.with_targets`).
    """

    case_id: str
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...] = ()
    patient_id: str = ""
    mask_spec: MaskSpec = field(default_factory=MaskSpec)
    drop_alpha: bool = True
    geometry_tol: float = 1e-3
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    target: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_paths", tuple(Path(p) for p in self.image_paths))
        object.__setattr__(self, "mask_paths", tuple(Path(p) for p in self.mask_paths))
        if not self.patient_id:
            object.__setattr__(self, "patient_id", self.case_id)
        if not self.image_paths:
            raise ValueError(f"case {self.case_id!r} has no image path")
        if self.target is not None:
            try:
                target = operator.index(self.target)
            except TypeError:
                raise ValueError(f"case {self.case_id!r}: target must be an int, got {self.target!r}") from None
            if isinstance(self.target, bool) or target < 0:
                raise ValueError(f"case {self.case_id!r}: target must be a non-negative int, got {self.target!r}")
            object.__setattr__(self, "target", int(target))

    @property
    def has_mask(self) -> bool:
        """Whether the case has mask files (a ``target`` does not count)."""
        return bool(self.mask_paths)

    @property
    def files(self) -> tuple[Path, ...]:
        """All image and mask paths."""
        return self.image_paths + self.mask_paths

    def load(self, *, with_mask: bool = True) -> Case:
        """Read the image channels and the merged mask, checking them.

        Raises:
            DataError: Unreadable/truncated file, NaN/Inf voxels, channel or mask size/geometry mismatch, bad label
                values; the message names the file.
        """
        try:
            arrays, geom, first = [], None, self.image_paths[0]
            for p in self.image_paths:
                a, g = read_image(p, drop_alpha=self.drop_alpha)
                if geom is None:
                    geom = g
                elif reason := geom.mismatch(g, self.geometry_tol):
                    raise DataError(p, f"channel file does not match {first.name}: {reason}")
                if a.dtype.kind == "f":
                    n_bad = a.size - int(np.count_nonzero(np.isfinite(a)))
                    if n_bad:
                        raise DataError(p, f"image has {n_bad} NaN/Inf voxels")
                arrays.append(a)
            assert geom is not None
            image = (np.concatenate(arrays) if len(arrays) > 1 else arrays[0]).astype(np.float32, copy=False)
            geom = geom.replace(n_channels=image.shape[0], dtype=str(arrays[0].dtype))
            label = None
            if with_mask and self.mask_paths:
                masks = []
                for p in self.mask_paths:
                    m, g = read_mask(p)
                    if reason := geom.mismatch(g, self.geometry_tol):
                        raise DataError(p, f"mask does not match image {first.name}: {reason}")
                    masks.append((m, p))
                label = self.mask_spec.apply(masks, self.case_id)
        except DataError as e:
            e.case_id = e.case_id or self.case_id
            raise
        return Case(self.case_id, self.patient_id, image, geom, label, self)

    def check_headers(self) -> Geometry:
        """Check channel and mask sizes/geometry from the file headers only (no pixels read).

        Raises:
            DataError: Unreadable header, or a size/geometry mismatch.
        """
        try:
            geom = read_header(self.image_paths[0])
            for p in self.image_paths[1:]:
                if reason := geom.mismatch(read_header(p), self.geometry_tol):
                    raise DataError(p, f"channel file does not match {self.image_paths[0].name}: {reason}")
            for p in self.mask_paths:
                if reason := geom.mismatch(read_header(p), self.geometry_tol):
                    raise DataError(p, f"mask does not match image {self.image_paths[0].name}: {reason}")
        except DataError as e:
            e.case_id = e.case_id or self.case_id
            raise
        return geom

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict."""
        return {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "image": [str(p) for p in self.image_paths],
            "mask": [str(p) for p in self.mask_paths],
            "mask_spec": self.mask_spec.to_dict(),
            "drop_alpha": self.drop_alpha,
            "geometry_tol": self.geometry_tol,
            "meta": dict(self.meta),
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseRef:
        return cls(
            case_id=d["case_id"],
            image_paths=tuple(d["image"]),
            mask_paths=tuple(d.get("mask", ())),
            patient_id=d.get("patient_id", ""),
            mask_spec=MaskSpec.from_dict(d.get("mask_spec", {})),
            drop_alpha=d.get("drop_alpha", True),
            geometry_tol=d.get("geometry_tol", 1e-3),
            meta=dict(d.get("meta", {})),
            target=d.get("target"),
        )


# ------------------------------------------------------------------------------------------------------ the index
@dataclass
class DatasetIndex(Sequence[CaseRef]):
    """The cases found in a dataset, in a stable order (a sequence of :class:`CaseRef`).

    Attributes:
        root: The dataset folder (or the list/descriptor file).
        layout: Layout name (``"folders"``, ``"msd"``, ...).
        cases: The cases.
        options: Options the layout was read with.
        skipped: Cases left out with ``skip_bad=True`` and why.
        warnings: Non-fatal findings (unlabelled images, masks without an image, ignored files).
        labels: The label set the layout declares, ``{value: name}`` sorted by value with 0 included when declared
            (``{0: "background", 1: "lung"}``), or ``None`` when nothing is declared. Sources: an MSD/nnU-Net
            ``dataset.json``, the ``labels`` option (descriptor or keyword; it wins), the luna16 and dsb2018 layouts'
            defaults. Masks are checked against these values (:attr:`MaskSpec.labels`).
    """

    root: Path
    layout: str
    cases: list[CaseRef]
    options: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedCase] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    labels: dict[int, str] | None = None

    def __len__(self) -> int:
        return len(self.cases)

    @overload
    def __getitem__(self, i: int) -> CaseRef: ...
    @overload
    def __getitem__(self, i: slice) -> list[CaseRef]: ...
    def __getitem__(self, i: int | slice) -> CaseRef | list[CaseRef]:
        return self.cases[i]

    def __iter__(self) -> Iterator[CaseRef]:
        return iter(self.cases)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def get(self, case_id: str) -> CaseRef:
        """The case named ``case_id`` (KeyError if absent)."""
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def labelled(self) -> list[CaseRef]:
        """Cases that have a mask."""
        return [c for c in self.cases if c.has_mask]

    def with_targets(self) -> list[CaseRef]:
        """Cases that have an image-level class (``target``), with or without a mask."""
        return [c for c in self.cases if c.target is not None]

    def check(self, *, skip_bad: bool = False, headers_only: bool = False, progress: bool = False) -> DatasetIndex:
        """Read every case (or only its headers) and deal with bad ones.

        Args:
            skip_bad: Drop bad cases (logged, added to :attr:`skipped`) instead of raising.
            headers_only: Check sizes/geometry from headers only (fast; misses truncated pixel data, NaN, labels).
            progress: Show a progress bar.

        Returns:
            ``self`` (bad cases removed when ``skip_bad``).

        Raises:
            DataError: The first bad case, when not ``skip_bad``.
        """
        good, bad = [], []
        for ref in _progress(self.cases, progress, "checking"):
            try:
                ref.check_headers() if headers_only else ref.load()
                good.append(ref)
            except DataError as e:
                if not skip_bad:
                    raise
                bad.append(SkippedCase.from_error(e, ref.case_id))
        if bad:
            _log_skipped(bad)
            self.cases = good
            self.skipped.extend(bad)
        if not self.cases:
            raise DataError(self.root, "empty dataset: every case was skipped as bad")
        return self

    def save_list(self, path: str | Path) -> Path:
        """Write the cases as an explicit CSV or JSON list (by ``path``'s ending) that ``load_dataset`` reads back."""
        return save_case_list(self.cases, path)


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case", leave=False, disable=None)


def _log_skipped(bad: Sequence[SkippedCase]) -> None:
    log.warning("skipped %d bad case(s):\n  %s", len(bad), "\n  ".join(str(b) for b in bad))


def save_case_list(cases: Sequence[CaseRef], path: str | Path) -> Path:
    """Write ``cases`` as a CSV (``.csv``) or JSON list that the ``list`` layout reads back.

    Columns (keys) ``case_id``, ``patient_id``, ``image``, ``mask`` (several files joined by ``;`` in a CSV), and
    ``target`` when any case has one (empty / absent for the cases without).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [
        {
            "case_id": c.case_id,
            "patient_id": c.patient_id,
            "image": [str(x) for x in c.image_paths],
            "mask": [str(x) for x in c.mask_paths],
            **({"target": c.target} if c.target is not None else {}),
        }
        for c in cases
    ]
    fields = ["case_id", "patient_id", "image", "mask"]
    if any(c.target is not None for c in cases):
        fields.append("target")
    if p.suffix.lower() == ".csv":
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow({**r, "image": ";".join(r["image"]), "mask": ";".join(r["mask"])})
    else:
        p.write_text(json.dumps({"cases": rows}, indent=1), encoding="utf-8")
    return p
