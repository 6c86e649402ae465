"""``luna16``: LUNA16 CT ``subset*/UID.mhd`` + lung masks ``seg-lungs-LUNA16/UID.mhd``.

Raw mask values 3 and 4 (the lungs) become 1 and 5 (trachea) becomes 0 (``label_map`` default
``{3: 1, 4: 1, 5: 0}``); the declared labels are ``{0: "background", 1: "lung"}``. Options: ``images`` (a glob,
default ``subset*/*.mhd``), ``masks`` (default ``seg-lungs-LUNA16``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agseg.data.io import is_image_file
from agseg.data.layouts.common import Builder, image_entries, stem
from agseg.data.layouts.registry import ScanResult, register_layout

LUNA16_LABELS = {0: "background", 1: "lung"}


def _detect(p: Path) -> bool:
    return p.is_dir() and (p / "seg-lungs-LUNA16").is_dir()


@register_layout(
    "luna16", ("images", "masks"), detect=_detect, order=20, label_map={3: 1, 4: 1, 5: 0}, labels=LUNA16_LABELS
)
def scan_luna16(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan the LUNA16 scans and lung masks under ``root``."""
    mask_dir = root / o.get("masks", "seg-lungs-LUNA16")
    pattern = o.get("images", "subset*/*.mhd")
    images = sorted(p for p in root.glob(pattern) if is_image_file(p) and mask_dir not in p.parents)
    if not images:
        images = sorted(p for p in root.rglob("*.mhd") if mask_dir not in p.parents and not p.name.startswith("."))
    masks = {stem(p): p for p in (image_entries(mask_dir) if mask_dir.is_dir() else [])}
    build = Builder(o)
    cases = [build(stem(p), [p], [masks[stem(p)]] if stem(p) in masks else []) for p in images]
    warnings = []
    if n := sum(not c.has_mask for c in cases):
        warnings.append(f"{n} scan(s) have no lung mask in {mask_dir}")
    return ScanResult(cases, [], warnings, build.labels)
