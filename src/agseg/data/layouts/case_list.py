"""``list``: an explicit CSV or JSON case list.

CSV columns (case-insensitive) ``image`` and ``mask`` (several files separated by ``;``), optional ``patient_id``,
``case_id`` and an image-level class ``class`` / ``target`` / ``label_class`` (a non-negative integer; it becomes
:attr:`CaseRef.target`). A JSON list holds objects with the same keys (lists allowed for files), or is
``{"cases": [...]}`` (what :func:`~agseg.data.cases.save_case_list` writes). Relative paths are relative to the list
file (or the ``root`` option). A row with a class and no mask is labelled for classification only. No label set is
declared unless the ``labels`` option gives one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from agseg.data.errors import DataError
from agseg.data.layouts.common import Builder, stem
from agseg.data.layouts.registry import ScanResult, register_layout

LIST_KEYS = {
    "image": ("image", "images", "img", "image_path"),
    "mask": ("mask", "masks", "label", "labels", "seg", "mask_path", "label_path"),
    "patient_id": ("patient_id", "patient", "subject", "subject_id"),
    "case_id": ("case_id", "case", "id", "name"),
    "target": ("class", "target", "label_class"),
}
"""Accepted column names (CSV) / keys (JSON) of each field, first match wins."""


def _detect(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".csv", ".json"))


def _paths(value: Any, base: Path) -> list[Path]:
    items = value if isinstance(value, list) else str(value).split(";")
    out = [Path(str(s).strip()) for s in items if str(s).strip()]
    return [p if p.is_absolute() else base / p for p in out]


def _target(value: Any) -> int:
    """A class value (``3``, ``"3"``, ``3.0``) -> int; ``ValueError`` unless a non-negative integer."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        value = int(value)
    v = int(value) if isinstance(value, int) else int(str(value).strip())
    if v < 0:
        raise ValueError
    return v


@register_layout("list", ("file", "root"), detect=_detect, order=60)
def scan_list(path: Path, o: dict[str, Any]) -> ScanResult:
    """Read the case list ``path`` (or ``path / o["file"]``)."""
    list_file = path / o["file"] if o.get("file") else path
    base = Path(o["root"]) if o.get("root") else list_file.parent
    if not base.is_absolute():
        base = list_file.parent / base
    try:
        if list_file.suffix.lower() == ".csv":
            with open(list_file, newline="", encoding="utf-8") as f:
                rows: list[dict[str, Any]] = list(csv.DictReader(f))
        else:
            data = json.loads(list_file.read_text(encoding="utf-8"))
            rows = data if isinstance(data, list) else data.get("cases", data.get("training"))
            if not isinstance(rows, list):
                raise ValueError("expected a list of cases, or {'cases': [...]}")
    except (OSError, ValueError, csv.Error) as e:
        raise DataError(list_file, f"cannot read case list: {e}") from e
    build = Builder(o)
    cases, problems = [], []
    for i, row in enumerate(rows, start=1):
        r = {k.strip().lower(): v for k, v in (row if isinstance(row, dict) else {"image": row}).items() if k}
        get = {key: next((r[a] for a in names if r.get(a) not in (None, "")), None) for key, names in LIST_KEYS.items()}
        if get["image"] is None:
            problems.append(DataError(list_file, f"row {i} has no image"))
            continue

        images = _paths(get["image"], base)
        masks = _paths(get["mask"], base) if get["mask"] else []
        cid = str(get["case_id"]) if get["case_id"] else stem(images[0])
        target = None
        if get["target"] is not None:
            try:
                target = _target(get["target"])
            except (TypeError, ValueError):
                problems.append(
                    DataError(list_file, f"row {i}: class {get['target']!r} is not a non-negative integer", cid)
                )
                continue
        missing = next((p for p in images + masks if not p.exists()), None)
        if missing is not None:
            hint = ""
            raw = next((q for q in _raw_paths(get["image"]) + _raw_paths(get["mask"]) if not (base / q).exists()), None)
            if raw is not None and not Path(raw).is_absolute() and Path(raw).exists():
                hint = (
                    f"; paths in a case list are relative to its folder ({base}), and this one exists relative to the "
                    "current folder instead: write it relative to the list, absolute, or set root"
                )
            problems.append(DataError(missing, f"listed in {list_file} (row {i}) but not found{hint}", cid))
            continue
        patient = str(get["patient_id"]) if get["patient_id"] else None
        cases.append(build(cid, images, masks, patient_id=patient, target=target))
    return ScanResult(cases, problems, [], build.labels)


def _raw_paths(value: Any) -> list[str]:
    """The path strings of a list cell as written (before joining them to the list's folder)."""
    if value in (None, ""):
        return []
    items = value if isinstance(value, list) else str(value).split(";")
    return [str(v).strip() for v in items if str(v).strip()]
