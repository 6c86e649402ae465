"""Dataset layouts: find the cases in a folder (or a YAML/CSV/JSON descriptor) and load them lazily.

A *case* is one image (one or more channel files) with zero or more mask files that together give one label map.
:func:`load_dataset` recognises these layouts (``layout=`` forces one):

``folders``
    Image and mask folders paired by file name (``cxr/NAME.png`` + ``masks/NAME.png``; ``images/`` + ``labels/``;
    ``imagesTr/`` + ``labelsTr/``). Mask names may carry ``_mask``/``_seg``/``_label``; nnU-Net channel files
    ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` + ``CASE.nii.gz`` become one multi-channel case. Several mask folders
    (Montgomery ``ManualMask/leftMask`` + ``rightMask``) are merged into one label.
``msd``
    Medical Segmentation Decathlon / nnU-Net: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``.
``luna16``
    LUNA16 CT ``subset*/UID.mhd`` + lung masks ``seg-lungs-LUNA16/UID.mhd``; label map default ``{3: 1, 4: 1, 5: 0}``.
``dsb2018``
    Data Science Bowl 2018: ``[stage1_train/]ID/images/ID.png`` + ``ID/masks/*.png`` (one per nucleus, merged).
``case_folders``
    One folder per case (optionally under split folders such as ``train/``), one file per channel plus a mask file
    (BRATS: ``Flair*``, ``T1c*`` + ``OTMultiClass``).
``list``
    An explicit CSV (columns ``image``, ``mask``, optional ``patient_id``, ``case_id``; several channel files
    separated by ``;``) or JSON list (objects with the same keys; lists allowed).

A YAML descriptor (a ``.yaml`` path, or ``agseg_dataset.yaml`` inside the folder) names the layout and its options::

    layout: folders
    images: CXR_png
    masks: [ManualMask/leftMask, ManualMask/rightMask]
    mask_threshold: 127
    labels: [0, 1]

Options every layout takes: ``mask_threshold`` (``"auto"``, a number or ``None``), ``label_map`` (``{raw: label}``),
``labels`` (allowed label values), ``merge`` (``"union"`` or ``"index"`` for several mask files),
``patient_pattern`` (regex whose first group is the patient id), ``drop_alpha``, ``geometry_tol``.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import yaml

from agseg.data.errors import DataError, SkippedCase
from agseg.data.io import Geometry, is_image_file, read_header, read_image, read_mask, split_ext

log = logging.getLogger(__name__)

DESCRIPTOR_NAMES = ("agseg_dataset.yaml", "agseg_dataset.yml")
IMAGE_DIR_NAMES = ("images", "imagesTr", "image", "imgs", "img", "cxr", "CXR_png", "scans", "volumes")
MASK_DIR_NAMES = ("masks", "labels", "labelsTr", "mask", "label", "ManualMask", "seg", "segmentations", "gt")
MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_labels", "_gt", "-mask", "_Mask")
_MASK_WORDS = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|gt|truth|groundtruth|ot|otmulticlass)([_\-.]|$)")
_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")


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


# ---------------------------------------------------------------------------------------------------- cases
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
    """

    case_id: str
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...] = ()
    patient_id: str = ""
    mask_spec: MaskSpec = field(default_factory=MaskSpec)
    drop_alpha: bool = True
    geometry_tol: float = 1e-3
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_paths", tuple(Path(p) for p in self.image_paths))
        object.__setattr__(self, "mask_paths", tuple(Path(p) for p in self.mask_paths))
        if not self.patient_id:
            object.__setattr__(self, "patient_id", self.case_id)
        if not self.image_paths:
            raise ValueError(f"case {self.case_id!r} has no image path")

    @property
    def has_mask(self) -> bool:
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
    """

    root: Path
    layout: str
    cases: list[CaseRef]
    options: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedCase] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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


# ------------------------------------------------------------------------------------------------------- layouts
ScanResult = tuple[list[CaseRef], list[DataError], list[str]]
_COMMON = {"mask_threshold", "label_map", "labels", "merge", "patient_pattern", "drop_alpha", "geometry_tol"}


@dataclass(frozen=True)
class _Layout:
    scan: Callable[[Path, dict[str, Any]], ScanResult]
    options: frozenset[str]
    defaults: Mapping[str, Any]


_LAYOUTS: dict[str, _Layout] = {}


def _layout(name: str, options: Sequence[str] = (), **defaults: Any) -> Callable:
    def deco(fn: Callable[[Path, dict[str, Any]], ScanResult]) -> Callable:
        _LAYOUTS[name] = _Layout(fn, frozenset(options) | _COMMON, defaults)
        return fn

    return deco


def list_layouts() -> list[str]:
    """Names of the known layouts."""
    return sorted(_LAYOUTS)


def layout_options(name: str) -> frozenset[str]:
    """The option names layout ``name`` accepts (``KeyError`` listing the layouts for an unknown name)."""
    if name not in _LAYOUTS:
        raise KeyError(f"unknown layout {name!r}; known: {', '.join(list_layouts())}")
    return _LAYOUTS[name].options


class _Builder:
    """Shared per-layout settings -> CaseRef."""

    def __init__(self, o: Mapping[str, Any], labels: Sequence[int] | None = None) -> None:
        self.spec = MaskSpec(
            threshold=o.get("mask_threshold"),
            label_map=o.get("label_map"),
            merge=o.get("merge", "union"),
            labels=o.get("labels", labels),
        )
        pat = o.get("patient_pattern")
        self.pattern = re.compile(pat) if pat else None
        self.drop_alpha = bool(o.get("drop_alpha", True))
        self.tol = float(o.get("geometry_tol", 1e-3))

    def __call__(self, case_id: str, images: Sequence[Path], masks: Sequence[Path] = (), **meta: Any) -> CaseRef:
        patient = case_id
        if self.pattern is not None and (m := self.pattern.match(case_id)):
            patient = m.group(1) if m.groups() else m.group(0)
        return CaseRef(case_id, tuple(images), tuple(masks), patient, self.spec, self.drop_alpha, self.tol, meta)


def _image_entries(folder: Path) -> list[Path]:
    """Image files in ``folder`` plus sub-folders holding DICOM files (each one a series)."""
    out = []
    for p in sorted(folder.iterdir()):
        if is_image_file(p) or (
            p.is_dir() and not p.name.startswith(".") and any(f.suffix.lower() == ".dcm" for f in p.iterdir())
        ):
            out.append(p)
    return out


def _stem(p: Path) -> str:
    return p.name if p.is_dir() else split_ext(p)[0]


def _find_dir(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def _mask_dirs(root: Path, masks: str | Sequence[str] | None) -> list[Path]:
    if masks is not None:
        dirs = [root / m for m in ([masks] if isinstance(masks, str) else masks)]
        for d in dirs:
            if not d.is_dir():
                raise DataError(d, "mask folder not found")
        return dirs
    d = _find_dir(root, MASK_DIR_NAMES)
    if d is None:
        return []
    if not _image_entries(d):
        subs = [s for s in sorted(d.iterdir()) if s.is_dir() and _image_entries(s)]
        if subs:
            return subs
    return [d]


@_layout("folders", ("images", "masks"), mask_threshold="auto")
def _scan_folders(root: Path, o: dict[str, Any]) -> ScanResult:
    img_dir = root / o["images"] if o.get("images") else _find_dir(root, IMAGE_DIR_NAMES)
    if img_dir is None or not img_dir.is_dir():
        raise DataError(img_dir or root, f"image folder not found (looked for {', '.join(IMAGE_DIR_NAMES)})")
    mask_dirs = _mask_dirs(root, o.get("masks"))
    build = _Builder(o)
    index = [{_stem(p): p for p in _image_entries(d)} for d in mask_dirs]
    used: set[Path] = set()

    def find(stem: str) -> list[Path | None]:
        out = []
        for idx in index:
            hit = next((idx[stem + s] for s in MASK_SUFFIXES if stem + s in idx), None)
            out.append(hit)
        return out

    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    masks_of: dict[str, list[Path | None]] = {}
    for p in _image_entries(img_dir):
        stem = _stem(p)
        hits = find(stem)
        m = _CHANNEL_SUFFIX.match(stem)
        if not any(hits) and m and any(find(m.group(1))):  # nnU-Net: CASE_0000 + CASE
            groups[m.group(1)].append((int(m.group(2)), p))
            masks_of[m.group(1)] = find(m.group(1))
        else:
            groups[stem].append((0, p))
            masks_of.setdefault(stem, hits)
            if len(groups[stem]) > 1:  # same stem, another extension: a duplicate, reported by _finalize
                groups[f"{stem}\0{len(groups[stem])}"] = [groups[stem].pop()]
    cases, problems, unlabelled = [], [], 0
    for key, chans in groups.items():
        cid = key.split("\0")[0]
        hits = masks_of[cid]
        chans.sort()
        images = [p for _, p in chans]
        if mask_dirs and any(hits) and not all(hits):
            missing = [str(d) for d, h in zip(mask_dirs, hits, strict=True) if h is None]
            problems.append(DataError(images[0], f"no mask in {', '.join(missing)}", cid))
            continue
        masks = [h for h in hits if h is not None]
        used.update(masks)
        unlabelled += not masks
        cases.append(build(cid, images, masks))
    warnings = []
    if mask_dirs and unlabelled:
        warnings.append(f"{unlabelled} image(s) in {img_dir} have no mask (kept as unlabelled cases)")
    orphans = [p for idx in index for p in idx.values() if p not in used]
    if orphans:
        warnings.append(f"{len(orphans)} mask file(s) have no image, e.g. {orphans[0]}")
    return cases, problems, warnings


@_layout("msd")
def _scan_msd(root: Path, o: dict[str, Any]) -> ScanResult:
    dj_path = root / "dataset.json"
    try:
        dj = json.loads(dj_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(dj_path, f"cannot read dataset.json: {e}") from e
    labels: list[int] | None = None
    raw = dj.get("labels")
    if isinstance(raw, dict) and raw:
        if all(str(k).lstrip("-").isdigit() for k in raw):  # MSD: {"0": "background", ...}
            labels = sorted(int(k) for k in raw)
        else:  # nnU-Net v2: {"background": 0, "tumour": 1 or [1, 2]}
            vals: set[int] = set()
            for v in raw.values():
                vals.update(int(x) for x in (v if isinstance(v, list) else [v]))
            labels = sorted(vals)
    build = _Builder(o, labels)
    cases, problems, warnings = [], [], []
    if "training" in dj:
        for item in dj["training"]:
            img = root / str(item["image"]).removeprefix("./")
            lab = root / str(item["label"]).removeprefix("./") if item.get("label") else None
            cid = _stem(img)
            for p in [img] + ([lab] if lab else []):
                if not p.exists():
                    problems.append(DataError(p, f"listed in {dj_path} but missing", cid))
                    break
            else:
                cases.append(build(cid, [img], [lab] if lab else []))
        return cases, problems, warnings
    ending = dj.get("file_ending", ".nii.gz")
    n_ch = len(dj.get("channel_names", dj.get("modality", {"0": ""})))
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    if not img_dir.is_dir():
        raise DataError(img_dir, "imagesTr folder not found")
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for p in sorted(img_dir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = _CHANNEL_SUFFIX.match(p.name[: -len(ending)])
        if m:
            groups[m.group(1)][int(m.group(2))] = p
        else:
            groups[p.name[: -len(ending)]][0] = p
    for cid, chans in groups.items():
        if sorted(chans) != list(range(n_ch)):
            problems.append(DataError(next(iter(chans.values())), f"channels {sorted(chans)}, expected {n_ch}", cid))
            continue
        lab = lab_dir / f"{cid}{ending}"
        cases.append(build(cid, [chans[k] for k in range(n_ch)], [lab] if lab.exists() else []))
    return cases, problems, warnings


@_layout("luna16", ("images", "masks"), label_map={3: 1, 4: 1, 5: 0}, labels=(0, 1))
def _scan_luna16(root: Path, o: dict[str, Any]) -> ScanResult:
    mask_dir = root / o.get("masks", "seg-lungs-LUNA16")
    pattern = o.get("images", "subset*/*.mhd")
    images = sorted(p for p in root.glob(pattern) if is_image_file(p) and mask_dir not in p.parents)
    if not images:
        images = sorted(p for p in root.rglob("*.mhd") if mask_dir not in p.parents and not p.name.startswith("."))
    masks = {_stem(p): p for p in (_image_entries(mask_dir) if mask_dir.is_dir() else [])}
    build = _Builder(o)
    cases = [build(_stem(p), [p], [masks[_stem(p)]] if _stem(p) in masks else []) for p in images]
    warnings = []
    if n := sum(not c.has_mask for c in cases):
        warnings.append(f"{n} scan(s) have no lung mask in {mask_dir}")
    return cases, [], warnings


@_layout("dsb2018", mask_threshold="auto", labels=(0, 1))
def _scan_dsb(root: Path, o: dict[str, Any]) -> ScanResult:
    base = root / "stage1_train" if (root / "stage1_train").is_dir() else root
    build = _Builder(o)
    cases, problems = [], []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = _image_entries(d / "images") if (d / "images").is_dir() else []
        if len(imgs) != 1:
            problems.append(DataError(d / "images", f"expected one image, found {len(imgs)}", d.name))
            continue
        masks = _image_entries(d / "masks") if (d / "masks").is_dir() else []
        if (d / "masks").is_dir() and not masks:
            problems.append(DataError(d / "masks", "masks folder is empty", d.name))
            continue
        cases.append(build(d.name, imgs, masks))
    return cases, problems, []


def _match(files: Sequence[Path], pattern: str) -> list[Path]:
    return [f for f in files if fnmatch.fnmatch(f.name, pattern) or fnmatch.fnmatch(_stem(f), pattern)]


@_layout("case_folders", ("channels", "mask", "exclude"), patient_pattern=r"^(.*pat\d+)_\d+$")
def _scan_case_folders(root: Path, o: dict[str, Any]) -> ScanResult:
    case_dirs = _case_dirs(root)
    build = _Builder(o)
    cases, problems, ignored = [], [], Counter()
    first_channels: list[str] | None = None
    for cd in case_dirs:
        files = [f for f in _image_entries(cd) if not any(_match([f], x) for x in o.get("exclude", ()))]
        if o.get("mask"):
            masks = _match(files, o["mask"])
        else:
            masks = [f for f in files if _MASK_WORDS.search(_stem(f).lower())]
        if len(masks) > 1:
            problems.append(DataError(cd, f"several mask files ({', '.join(m.name for m in masks)}); set 'mask'"))
            continue
        rest = [f for f in files if f not in masks]
        if o.get("channels"):
            chans = []
            for pat in o["channels"]:
                hit = _match(rest, pat)
                if len(hit) != 1:
                    problems.append(DataError(cd, f"channel {pat!r} matches {len(hit)} files, expected 1", cd.name))
                    break
                chans.append(hit[0])
            if len(chans) != len(o["channels"]):
                continue
        else:
            chans = [f for f in rest if "mask" not in _stem(f).lower()]
            ignored.update(_stem(f) for f in rest if f not in chans)
            names = [_stem(f) for f in chans]
            if first_channels is None:
                first_channels = names
            elif names != first_channels:
                problems.append(DataError(cd, f"channel files {names} differ from the first case's {first_channels}"))
                continue
        if not chans:
            problems.append(DataError(cd, "no image file", cd.name))
            continue
        meta = {"split": cd.parent.name} if cd.parent != root else {}
        cases.append(build(cd.name, chans, masks, **meta))
    warnings = [f"ignored in every case folder: {', '.join(sorted(ignored))}"] if ignored else []
    return cases, problems, warnings


def _case_dirs(root: Path) -> list[Path]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _image_entries(d):
            out.append(d)
        else:
            out.extend(
                s for s in sorted(d.iterdir()) if s.is_dir() and not s.name.startswith(".") and _image_entries(s)
            )
    return out


_LIST_KEYS = {
    "image": ("image", "images", "img", "image_path"),
    "mask": ("mask", "masks", "label", "labels", "seg", "mask_path", "label_path"),
    "patient_id": ("patient_id", "patient", "subject", "subject_id"),
    "case_id": ("case_id", "case", "id", "name"),
}


@_layout("list", ("file", "root"))
def _scan_list(path: Path, o: dict[str, Any]) -> ScanResult:
    list_file = path / o["file"] if o.get("file") else path
    base = Path(o["root"]) if o.get("root") else list_file.parent
    if not base.is_absolute():
        base = list_file.parent / base
    try:
        if list_file.suffix.lower() == ".csv":
            with open(list_file, newline="") as f:
                rows: list[dict[str, Any]] = list(csv.DictReader(f))
        else:
            data = json.loads(list_file.read_text())
            rows = data if isinstance(data, list) else data.get("cases", data.get("training"))
            if not isinstance(rows, list):
                raise ValueError("expected a list of cases, or {'cases': [...]}")
    except (OSError, ValueError, csv.Error) as e:
        raise DataError(list_file, f"cannot read case list: {e}") from e
    build = _Builder(o)
    cases, problems = [], []
    for i, row in enumerate(rows, start=1):
        r = {k.strip().lower(): v for k, v in (row if isinstance(row, dict) else {"image": row}).items() if k}
        get = {
            key: next((r[a] for a in names if r.get(a) not in (None, "")), None) for key, names in _LIST_KEYS.items()
        }
        if get["image"] is None:
            problems.append(DataError(list_file, f"row {i} has no image"))
            continue

        images = _list_paths(get["image"], base)
        masks = _list_paths(get["mask"], base) if get["mask"] else []
        cid = str(get["case_id"]) if get["case_id"] else _stem(images[0])
        missing = next((p for p in images + masks if not p.exists()), None)
        if missing is not None:
            problems.append(DataError(missing, f"listed in {list_file} (row {i}) but not found", cid))
            continue
        ref = build(cid, images, masks)
        if get["patient_id"]:
            ref = dataclasses.replace(ref, patient_id=str(get["patient_id"]))
        cases.append(ref)
    return cases, problems, []


def _list_paths(value: Any, base: Path) -> list[Path]:
    items = value if isinstance(value, list) else str(value).split(";")
    out = [Path(str(s).strip()) for s in items if str(s).strip()]
    return [p if p.is_absolute() else base / p for p in out]


def save_case_list(cases: Sequence[CaseRef], path: str | Path) -> Path:
    """Write ``cases`` as a CSV (``.csv``) or JSON list that the ``list`` layout reads back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "case_id": c.case_id,
            "patient_id": c.patient_id,
            "image": [str(x) for x in c.image_paths],
            "mask": [str(x) for x in c.mask_paths],
        }
        for c in cases
    ]
    if p.suffix.lower() == ".csv":
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["case_id", "patient_id", "image", "mask"])
            w.writeheader()
            for r in rows:
                w.writerow({**r, "image": ";".join(r["image"]), "mask": ";".join(r["mask"])})
    else:
        p.write_text(json.dumps({"cases": rows}, indent=1))
    return p


# ------------------------------------------------------------------------------------------------ detect and load
def _is_dsb(root: Path) -> bool:
    base = root / "stage1_train" if (root / "stage1_train").is_dir() else root
    subs = [p for p in base.iterdir() if p.is_dir()][:5]
    return bool(subs) and all((s / "images").is_dir() for s in subs)


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (a folder, a YAML descriptor, or a CSV/JSON case list).

    Raises:
        DataError: Not found, or no known layout fits.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "dataset path not found")
    if p.is_file():
        low = p.name.lower()
        if low.endswith((".yaml", ".yml")):
            return "descriptor"
        if low == "dataset.json":
            return "msd"
        if low.endswith((".csv", ".json")):
            return "list"
        raise DataError(p, "expected a folder, a .yaml descriptor or a .csv/.json case list")
    if any((p / n).is_file() for n in DESCRIPTOR_NAMES):
        return "descriptor"
    if (p / "dataset.json").is_file():
        return "msd"
    if (p / "seg-lungs-LUNA16").is_dir():
        return "luna16"
    if _is_dsb(p):
        return "dsb2018"
    if _find_dir(p, IMAGE_DIR_NAMES) is not None:
        return "folders"
    if _case_dirs(p):
        return "case_folders"
    raise DataError(
        p,
        "could not recognise the dataset layout (image+mask folders, dataset.json, LUNA16, DSB 2018, case folders); "
        "pass layout=... or add an agseg_dataset.yaml descriptor",
    )


def _read_descriptor(path: Path) -> tuple[Path, dict[str, Any]]:
    f = path if path.is_file() else next(path / n for n in DESCRIPTOR_NAMES if (path / n).is_file())
    try:
        d = yaml.safe_load(f.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f, f"cannot read dataset descriptor: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f, "dataset descriptor must be a mapping (layout: ..., options)")
    root = Path(d.pop("root", "."))
    return (root if root.is_absolute() else f.parent / root), d


def load_dataset(
    source: str | Path, layout: str | None = None, *, skip_bad: bool = False, **options: Any
) -> DatasetIndex:
    """Find the cases of a dataset (file names only; nothing is decoded until a case is loaded).

    Args:
        source: Dataset folder, YAML descriptor, or CSV/JSON case list.
        layout: Force a layout (see :func:`list_layouts`); ``None`` or ``"auto"``: detected.
        skip_bad: Skip (and log) cases with problems found while scanning (duplicate ids, missing files, ...)
            instead of raising. Problems inside files are found by :meth:`DatasetIndex.check` or on loading.
        **options: Layout options (override the descriptor's), e.g. ``mask_threshold=127``,
            ``label_map={3: 1, 4: 1, 5: 0}``, ``images="CXR_png"``, ``channels=["Flair*", "T1c*"]``.

    Returns:
        The :class:`DatasetIndex`.

    Raises:
        DataError: Unknown layout, empty dataset, or a scan problem (naming the file) when not ``skip_bad``.
    """
    src = Path(source)
    name = layout if layout not in (None, "", "auto") else detect_layout(src)
    if name == "descriptor":
        root, desc = _read_descriptor(src)
        name = desc.pop("layout", None) or detect_layout(root)
        options = {**desc, **options}
        src = root
    if name not in _LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(list_layouts())}")
    spec = _LAYOUTS[name]
    unknown = set(options) - spec.options
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for layout {name!r}; allowed: {sorted(spec.options)}")
    opts = {**spec.defaults, **options}
    if not src.exists():
        raise DataError(src, "dataset path not found")
    root = src.parent if src.is_file() and name == "msd" else src
    cases, problems, warnings = spec.scan(root, opts)
    cases, problems = _dedupe(cases, problems)
    skipped = []
    if problems:
        if not skip_bad:
            e = problems[0]
            more = f" (and {len(problems) - 1} more problem(s); skip_bad lists them all)" if len(problems) > 1 else ""
            raise DataError(e.path, e.problem + more, e.case_id)
        skipped = [SkippedCase.from_error(e) for e in problems]
        _log_skipped(skipped)
    for w in warnings:
        (log.info if w.startswith("ignored") else log.warning)("%s: %s", src, w)
    if not cases:
        raise DataError(src, f"empty dataset: no cases found (layout {name!r})")
    log.debug("%s: %d case(s), layout %s", src, len(cases), name)
    return DatasetIndex(src, name, cases, opts, skipped, warnings)


def _dedupe(cases: list[CaseRef], problems: list[DataError]) -> tuple[list[CaseRef], list[DataError]]:
    seen: dict[str, CaseRef] = {}
    out = []
    for c in cases:
        if c.case_id in seen:
            problems.append(
                DataError(c.image_paths[0], f"duplicate case id {c.case_id!r} (also {seen[c.case_id].image_paths[0]})")
            )
            continue
        seen[c.case_id] = c
        out.append(c)
    return out, problems


# ------------------------------------------------------------------------------------------------------- inspect
def inspect_dataset(
    source: str | Path | DatasetIndex,
    layout: str | None = None,
    *,
    limit: int | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Read every case and summarise the dataset; problems are collected, not raised.

    Args:
        source: Dataset path (as :func:`load_dataset`) or an index.
        layout: Force a layout.
        limit: Inspect only the first ``limit`` cases.
        progress: Show a progress bar.
        **options: Layout options.

    Returns:
        A JSON-safe dict: ``root``, ``layout``, ``n_cases`` (good cases), ``n_labelled``, ``n_unlabelled``, ``ndim``,
        ``channels``, ``shapes`` (min/max/unique), ``spacings`` (array order ``(z, y, x)``), ``dtypes``,
        ``intensity`` (per channel min/max/mean/std, and the spread of per-case ranges), ``label_values``,
        ``label_counts`` (voxels), ``label_cases`` (cases containing each value), ``empty_masks``, ``problems``
        (``[{case_id, path, problem}]``: bad cases, not counted in ``n_cases``), ``warnings``.
    """
    if isinstance(source, DatasetIndex):
        index, scan_problems = source, list(source.skipped)
    else:
        index = load_dataset(source, layout, skip_bad=True, **options)
        scan_problems = list(index.skipped)
    refs = index.cases[:limit] if limit else index.cases
    problems = [s.to_dict() for s in scan_problems]
    shapes, spacings, dtypes, channels = Counter(), Counter(), Counter(), Counter()
    stats: dict[int, list[float]] = {}
    case_min, case_max = [], []
    lab_counts, lab_cases = Counter(), Counter()
    n_ok = n_lab = empty = 0
    for ref in _progress(refs, progress, "inspecting"):
        try:
            case = ref.load()
        except DataError as e:
            problems.append(SkippedCase.from_error(e, ref.case_id).to_dict())
            continue
        n_ok += 1
        g = case.geometry
        shapes[g.shape] += 1
        spacings[tuple(round(s, 4) for s in g.array_spacing)] += 1
        dtypes[g.dtype] += 1
        channels[case.image.shape[0]] += 1
        for c, ch in enumerate(case.image):
            x = ch.astype(np.float64, copy=False)
            s = stats.setdefault(c, [0.0, 0.0, 0.0, np.inf, -np.inf])
            s[0] += x.size
            s[1] += float(x.sum())
            s[2] += float(np.square(x).sum())
            s[3] = min(s[3], float(x.min()))
            s[4] = max(s[4], float(x.max()))
        case_min.append(float(case.image.min()))
        case_max.append(float(case.image.max()))
        if case.label is not None:
            n_lab += 1
            counts = label_counts(case.label)
            lab_counts.update(counts)
            lab_cases.update(counts.keys())
            empty += set(counts) <= {0}
    intensity = {}
    for c, (n, s1, s2, lo, hi) in sorted(stats.items()):
        mean = s1 / n
        intensity[str(c)] = {"min": lo, "max": hi, "mean": mean, "std": float(np.sqrt(max(s2 / n - mean**2, 0.0)))}
    warnings = list(index.warnings)
    if len(dtypes) > 1:
        warnings.append(f"mixed image dtypes: {dict(dtypes)}")
    if case_max and max(case_max) - min(case_max) > 10 * max(1e-6, float(np.median(case_max)) - min(case_min)):
        warnings.append("intensity ranges differ widely between cases (consider per-case normalisation)")
    if empty:
        warnings.append(f"{empty} mask(s) contain only background")
    if n_ok and n_lab < n_ok:
        warnings.append(f"{n_ok - n_lab} case(s) have no mask")
    if len(spacings) > 1:
        warnings.append(f"{len(spacings)} different spacings (consider resampling to a common spacing)")
    for sp in spacings:
        if max(sp) / max(min(sp), 1e-9) > 3:
            warnings.append(f"anisotropic spacing {list(sp)}")
            break
    shape_list = list(shapes)
    return {
        "root": str(index.root),
        "layout": index.layout,
        "n_cases": n_ok,
        "label_values": sorted(lab_counts),
        "label_counts": {str(k): v for k, v in sorted(lab_counts.items())},
        "n_labelled": n_lab,
        "n_unlabelled": n_ok - n_lab,
        "n_bad": len(problems),
        "ndim": len(shape_list[0]) if shape_list else None,
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "shapes": {
            "min": [int(v) for v in np.min(shape_list, axis=0)] if shape_list else None,
            "max": [int(v) for v in np.max(shape_list, axis=0)] if shape_list else None,
            "n_unique": len(shapes),
            "most_common": [[list(s), n] for s, n in shapes.most_common(3)],
        },
        "spacings": {
            "min": [float(v) for v in np.min(list(spacings), axis=0)] if spacings else None,
            "max": [float(v) for v in np.max(list(spacings), axis=0)] if spacings else None,
            "n_unique": len(spacings),
            "most_common": [[list(s), n] for s, n in spacings.most_common(3)],
        },
        "dtypes": dict(dtypes),
        "intensity": {
            "per_channel": intensity,
            "case_min": [min(case_min), max(case_min)] if case_min else None,
            "case_max": [min(case_max), max(case_max)] if case_max else None,
        },
        "label_cases": {str(k): v for k, v in sorted(lab_cases.items())},
        "empty_masks": empty,
        "problems": problems,
        "warnings": warnings,
    }
