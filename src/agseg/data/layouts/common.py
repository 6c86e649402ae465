"""What the layout scanners share: the :class:`Builder` that turns per-layout options into :class:`CaseRef` and the
file-finding helpers (image entries, stems, folder names, nnU-Net channel suffixes)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agseg.data.cases import CaseRef
from agseg.data.io import is_image_file, split_ext
from agseg.data.labels import MaskSpec, parse_labels

CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")
"""nnU-Net channel files: ``CASE_0000`` -> ``("CASE", "0000")``."""


class Builder:
    """Shared per-layout settings -> :class:`CaseRef`.

    Args:
        o: The layout options (``mask_threshold``, ``label_map``, ``labels``, ``merge``, ``patient_pattern``,
            ``drop_alpha``, ``geometry_tol``).
        declared: The labels the dataset itself declares (``{value: name}``, e.g. from ``dataset.json``); the
            ``labels`` option, when given (``None`` included), wins.

    Attributes:
        labels: The declared label set ``{value: name}`` (or ``None``); its values are the allowed mask values.
        spec: The :class:`MaskSpec` every case gets.
    """

    def __init__(self, o: Mapping[str, Any], declared: Mapping[int, str] | None = None) -> None:
        self.labels = parse_labels(o["labels"]) if "labels" in o else (dict(declared) if declared is not None else None)
        self.spec = MaskSpec(
            threshold=o.get("mask_threshold"),
            label_map=o.get("label_map"),
            merge=o.get("merge", "union"),
            labels=tuple(self.labels) if self.labels is not None else None,
        )
        pat = o.get("patient_pattern")
        self.pattern = re.compile(pat) if pat else None
        self.drop_alpha = bool(o.get("drop_alpha", True))
        self.tol = float(o.get("geometry_tol", 1e-3))

    def __call__(
        self,
        case_id: str,
        images: Sequence[Path],
        masks: Sequence[Path] = (),
        *,
        patient_id: str | None = None,
        target: int | None = None,
        **meta: Any,
    ) -> CaseRef:
        """The :class:`CaseRef` of one case; the patient id comes from ``patient_pattern`` unless given."""
        patient = case_id
        if patient_id:
            patient = patient_id
        elif self.pattern is not None and (m := self.pattern.match(case_id)):
            patient = m.group(1) if m.groups() else m.group(0)
        return CaseRef(
            case_id, tuple(images), tuple(masks), patient, self.spec, self.drop_alpha, self.tol, meta, target
        )


def image_entries(folder: Path) -> list[Path]:
    """Image files in ``folder`` plus sub-folders holding DICOM files (each one a series)."""
    out = []
    for p in sorted(folder.iterdir()):
        if is_image_file(p) or (
            p.is_dir() and not p.name.startswith(".") and any(f.suffix.lower() == ".dcm" for f in p.iterdir())
        ):
            out.append(p)
    return out


def stem(p: Path) -> str:
    """File name without its (double) ending; a folder's (DICOM series) name."""
    return p.name if p.is_dir() else split_ext(p)[0]


def find_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a folder in ``root`` (exact, then case-insensitive), or ``None``."""
    for n in names:
        if (root / n).is_dir():
            return root / n
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def match(files: Sequence[Path], pattern: str) -> list[Path]:
    """Files whose name or stem matches the glob ``pattern``."""
    return [f for f in files if fnmatch.fnmatch(f.name, pattern) or fnmatch.fnmatch(stem(f), pattern)]
