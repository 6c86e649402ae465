"""``folders``: image and mask folders paired by file name.

``cxr/NAME.png`` + ``masks/NAME.png``; ``images/`` + ``labels/``; ``imagesTr/`` + ``labelsTr/``. Mask names may carry
``_mask``/``_seg``/``_segmentation`` (ISIC 2018)/``_label``; nnU-Net channel files ``CASE_0000.nii.gz``,
``CASE_0001.nii.gz`` + ``CASE.nii.gz`` become one multi-channel case. Several mask folders (Montgomery
``ManualMask/leftMask`` + ``rightMask``) are merged into one label. Options: ``images``, ``masks`` (a folder or a
list); ``mask_threshold`` defaults to ``"auto"``. No label set is declared unless the ``labels`` option gives one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.layouts.common import CHANNEL_SUFFIX, Builder, find_dir, image_entries, stem
from agseg.data.layouts.registry import ScanResult, register_layout

IMAGE_DIR_NAMES = ("images", "imagesTr", "image", "imgs", "img", "cxr", "CXR_png", "scans", "volumes")
MASK_DIR_NAMES = ("masks", "labels", "labelsTr", "mask", "label", "ManualMask", "seg", "segmentations", "gt")
MASK_SUFFIXES = (
    "",
    "_mask",
    "_seg",
    "_segmentation",
    "_label",
    "_labels",
    "_gt",
    "-mask",
    "_Mask",
)  # ISIC: _segmentation


def _mask_dirs(root: Path, masks: str | Sequence[str] | None) -> list[Path]:
    if masks is not None:
        dirs = [root / m for m in ([masks] if isinstance(masks, str) else masks)]
        for d in dirs:
            if not d.is_dir():
                raise DataError(d, "mask folder not found")
        return dirs
    d = find_dir(root, MASK_DIR_NAMES)
    if d is None:
        return []
    if not image_entries(d):
        subs = [s for s in sorted(d.iterdir()) if s.is_dir() and image_entries(s)]
        if subs:
            return subs
    return [d]


def _detect(p: Path) -> bool:
    return p.is_dir() and find_dir(p, IMAGE_DIR_NAMES) is not None


@register_layout("folders", ("images", "masks"), detect=_detect, order=40, mask_threshold="auto")
def scan_folders(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan ``root`` for an image folder and its mask folder(s)."""
    img_dir = root / o["images"] if o.get("images") else find_dir(root, IMAGE_DIR_NAMES)
    if img_dir is None or not img_dir.is_dir():
        raise DataError(img_dir or root, f"image folder not found (looked for {', '.join(IMAGE_DIR_NAMES)})")
    mask_dirs = _mask_dirs(root, o.get("masks"))
    build = Builder(o)
    index = [{stem(p): p for p in image_entries(d)} for d in mask_dirs]
    used: set[Path] = set()

    def find(name: str) -> list[Path | None]:
        out = []
        for idx in index:
            hit = next((idx[name + s] for s in MASK_SUFFIXES if name + s in idx), None)
            out.append(hit)
        return out

    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    masks_of: dict[str, list[Path | None]] = {}
    for p in image_entries(img_dir):
        s = stem(p)
        hits = find(s)
        m = CHANNEL_SUFFIX.match(s)
        if not any(hits) and m and any(find(m.group(1))):  # nnU-Net: CASE_0000 + CASE
            groups[m.group(1)].append((int(m.group(2)), p))
            masks_of[m.group(1)] = find(m.group(1))
        else:
            groups[s].append((0, p))
            masks_of.setdefault(s, hits)
            if len(groups[s]) > 1:  # same stem, another extension: a duplicate, reported by load_dataset
                groups[f"{s}\0{len(groups[s])}"] = [groups[s].pop()]
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
    return ScanResult(cases, problems, warnings, build.labels)
