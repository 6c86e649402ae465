"""``class_folders``: one folder per class, ``ROOT/<class>/*.png`` (the ImageNet / torchvision ``ImageFolder`` layout).

Every image file in a class folder is a case (its id the file stem, unique over the dataset) whose
:attr:`~agseg.data.cases.CaseRef.target` is the folder's class: the folder name as a number (``0/``, ``1/``), or a
name of the ``labels`` option (``{0: normal, 1: tuberculosis}`` with folders ``normal/`` and ``tuberculosis/``,
case-insensitive). Without ``labels``, the sorted folder names are the classes ``0..K-1`` and the layout declares
them as its label set. A folder that names no class of ``labels`` is a problem. Detected (before ``case_folders``)
for a folder whose sub-folders hold image files only, none named like a mask, with no file name shared between two
folders (case folders repeat their channel names) and at least one folder with two images.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.labels import parse_labels
from agseg.data.layouts.classes import class_value
from agseg.data.layouts.common import Builder, image_entries, stem
from agseg.data.layouts.registry import ScanResult, register_layout

_MASKY = re.compile(r"(^|[_\-.])(mask|masks|seg|segmentation|label|labels|gt|groundtruth)([_\-.]|$)")


def class_dirs(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that hold image files, sorted by name."""
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and image_entries(d)]


def _detect(p: Path) -> bool:
    if not p.is_dir() or image_entries(p):
        return False
    dirs = class_dirs(p)
    if len(dirs) < 2:
        return False
    seen: set[str] = set()
    many = False
    for d in dirs:
        if _MASKY.search(d.name.lower()):
            return False
        files = image_entries(d)
        if any(f.is_dir() or _MASKY.search(stem(f).lower()) for f in files):
            return False
        stems = {stem(f) for f in files}
        if stems & seen:
            return False
        seen |= stems
        many = many or len(files) > 1
    return many


@register_layout("class_folders", detect=_detect, order=45)
def scan_class_folders(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan the class folders under ``root``."""
    dirs = class_dirs(root)
    if not dirs:
        raise DataError(root, "no class folder with images (expected ROOT/<class name>/*.png)")
    given = parse_labels(o["labels"]) if o.get("labels") is not None else None
    declared: dict[int, str] | None = given
    if given is None:
        numeric = all(re.fullmatch(r"\d+", d.name) for d in dirs)
        declared = None if numeric else {i: d.name for i, d in enumerate(dirs)}
    build = Builder({**o, "labels": declared} if declared is not None else o)
    cases, problems = [], []
    for d in dirs:
        try:
            value = class_value(d.name, declared)
        except ValueError as err:
            problems.append(DataError(d, f"class folder: {err}"))
            continue
        for f in image_entries(d):
            cases.append(build(stem(f), [f], [], target=value, split=d.name))
    return ScanResult(cases, problems, [], declared)
