"""``case_folders``: one folder per case (optionally under split folders such as ``train/``), one file per channel plus
a mask file (BRATS: ``Flair*``, ``T1c*`` + ``OTMultiClass``).

Options: ``channels`` (globs, one per channel, in order), ``mask`` (a glob), ``exclude`` (globs). Without
``channels``, every non-mask file is a channel and every case must have the same ones; files named like masks but
not the mask (``brainmask``) are ignored and reported. ``patient_pattern`` defaults to ``^(.*pat\\d+)_\\d+$`` (BRATS
``..._pat0001_1``). No label set is declared unless the ``labels`` option gives one.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.layouts.common import Builder, image_entries, match, stem
from agseg.data.layouts.registry import ScanResult, register_layout

_MASK_WORDS = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|gt|truth|groundtruth|ot|otmulticlass)([_\-.]|$)")


def case_dirs(root: Path) -> list[Path]:
    """Folders of ``root`` (or of its sub-folders, one level down) that hold image files."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if image_entries(d):
            out.append(d)
        else:
            out.extend(s for s in sorted(d.iterdir()) if s.is_dir() and not s.name.startswith(".") and image_entries(s))
    return out


def _detect(p: Path) -> bool:
    return p.is_dir() and bool(case_dirs(p))


@register_layout(
    "case_folders", ("channels", "mask", "exclude"), detect=_detect, order=50, patient_pattern=r"^(.*pat\d+)_\d+$"
)
def scan_case_folders(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan the case folders under ``root``."""
    build = Builder(o)
    cases, problems, ignored = [], [], Counter()
    first_channels: list[str] | None = None
    for cd in case_dirs(root):
        files = [f for f in image_entries(cd) if not any(match([f], x) for x in o.get("exclude", ()))]
        masks = match(files, o["mask"]) if o.get("mask") else [f for f in files if _MASK_WORDS.search(stem(f).lower())]
        if len(masks) > 1:
            problems.append(DataError(cd, f"several mask files ({', '.join(m.name for m in masks)}); set 'mask'"))
            continue
        rest = [f for f in files if f not in masks]
        if o.get("channels"):
            chans = []
            for pat in o["channels"]:
                hit = match(rest, pat)
                if len(hit) != 1:
                    problems.append(DataError(cd, f"channel {pat!r} matches {len(hit)} files, expected 1", cd.name))
                    break
                chans.append(hit[0])
            if len(chans) != len(o["channels"]):
                continue
        else:
            chans = [f for f in rest if "mask" not in stem(f).lower()]
            ignored.update(stem(f) for f in rest if f not in chans)
            names = [stem(f) for f in chans]
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
    return ScanResult(cases, problems, warnings, build.labels)
