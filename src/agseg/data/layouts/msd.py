"""``msd``: Medical Segmentation Decathlon / nnU-Net, ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``.

Cases come from ``dataset.json``'s ``training`` list (MSD) or, without one, from ``imagesTr/`` channel files
``CASE_0000.nii.gz`` (nnU-Net v2: ``channel_names``, ``file_ending``). The label set is declared by ``labels``: the MSD
form ``{"0": "background", "1": "Anterior"}`` or the nnU-Net v2 form ``{"background": 0, "tumour": 1}`` (a region
``"tumour": [1, 2]`` names each of its values ``tumour``); the ``labels`` option overrides it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.labels import msd_labels
from agseg.data.layouts.common import CHANNEL_SUFFIX, Builder, stem
from agseg.data.layouts.registry import ScanResult, register_layout


def _detect(p: Path) -> bool:
    return p.name.lower() == "dataset.json" if p.is_file() else (p / "dataset.json").is_file()


@register_layout("msd", detect=_detect, order=10)
def scan_msd(root: Path, o: dict[str, Any]) -> ScanResult:
    """Scan the MSD / nnU-Net dataset in ``root`` (the folder holding ``dataset.json``)."""
    dj_path = root / "dataset.json"
    try:
        dj = json.loads(dj_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(dj_path, f"cannot read dataset.json: {e}") from e
    build = Builder(o, None if "labels" in o else msd_labels(dj.get("labels"), dj_path))  # the option wins
    cases, problems, warnings = [], [], []
    if "training" in dj:
        for item in dj["training"]:
            img = root / str(item["image"]).removeprefix("./")
            lab = root / str(item["label"]).removeprefix("./") if item.get("label") else None
            cid = stem(img)
            for p in [img] + ([lab] if lab else []):
                if not p.exists():
                    problems.append(DataError(p, f"listed in {dj_path} but missing", cid))
                    break
            else:
                cases.append(build(cid, [img], [lab] if lab else []))
        return ScanResult(cases, problems, warnings, build.labels)
    ending = dj.get("file_ending", ".nii.gz")
    n_ch = len(dj.get("channel_names", dj.get("modality", {"0": ""})))
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    if not img_dir.is_dir():
        raise DataError(img_dir, "imagesTr folder not found")
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for p in sorted(img_dir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        m = CHANNEL_SUFFIX.match(p.name[: -len(ending)])
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
    return ScanResult(cases, problems, warnings, build.labels)
