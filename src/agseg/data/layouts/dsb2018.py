"""``dsb2018``: Data Science Bowl 2018 nuclei, ``[stage1_train/]ID/images/ID.png`` + ``ID/masks/*.png``.

One mask file per nucleus, merged into one semantic mask (union); the declared labels are
``{0: "background", 1: "nucleus"}``; ``mask_threshold`` defaults to ``"auto"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.layouts.common import Builder, image_entries
from agseg.data.layouts.registry import ScanResult, register_layout

DSB2018_LABELS = {0: "background", 1: "nucleus"}


def _base(root: Path) -> Path:
    return root / "stage1_train" if (root / "stage1_train").is_dir() else root


def _detect(p: Path) -> bool:
    if not p.is_dir():
        return False
    subs = [s for s in _base(p).iterdir() if s.is_dir()][:5]
    return bool(subs) and all((s / "images").is_dir() for s in subs)


@register_layout("dsb2018", detect=_detect, order=30, mask_threshold="auto", labels=DSB2018_LABELS)
def scan_dsb(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan the DSB 2018 case folders under ``root`` (or ``root/stage1_train``)."""
    base = _base(root)
    build = Builder(o)
    cases, problems = [], []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = image_entries(d / "images") if (d / "images").is_dir() else []
        if len(imgs) != 1:
            problems.append(DataError(d / "images", f"expected one image, found {len(imgs)}", d.name))
            continue
        masks = image_entries(d / "masks") if (d / "masks").is_dir() else []
        if (d / "masks").is_dir() and not masks:
            problems.append(DataError(d / "masks", "masks folder is empty", d.name))
            continue
        cases.append(build(d.name, imgs, masks))
    return ScanResult(cases, problems, [], build.labels)
