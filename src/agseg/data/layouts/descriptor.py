"""YAML dataset descriptors: a file (or ``agseg_dataset.yaml`` in the dataset folder) naming a layout and its options.

::

    layout: folders          # optional: detected from the root when absent
    root: ../CXR             # optional: relative to the descriptor; default its folder
    images: CXR_png
    masks: [ManualMask/leftMask, ManualMask/rightMask]
    mask_threshold: 127
    labels: {0: background, 1: lung}    # or [0, 1], or {background: 0, lung: 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agseg.data.errors import DataError

DESCRIPTOR_NAMES = ("agseg_dataset.yaml", "agseg_dataset.yml")


def is_descriptor(path: Path) -> bool:
    """Whether ``path`` is a YAML descriptor, or a folder holding one."""
    if path.is_file():
        return path.name.lower().endswith((".yaml", ".yml"))
    return any((path / n).is_file() for n in DESCRIPTOR_NAMES)


def descriptor_file(path: Path) -> Path:
    """The descriptor file of ``path`` (itself, or ``agseg_dataset.yaml`` inside it)."""
    return path if path.is_file() else next(path / n for n in DESCRIPTOR_NAMES if (path / n).is_file())


def read_descriptor(path: Path) -> tuple[Path, dict[str, Any]]:
    """``(dataset root, options)`` of a descriptor (``options`` still holds ``layout`` when given).

    Raises:
        DataError: Unreadable YAML, or not a mapping (names the file).
    """
    f = descriptor_file(path)
    try:
        d = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f, f"cannot read dataset descriptor: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f, "dataset descriptor must be a mapping (layout: ..., options)")
    root = Path(d.pop("root", "."))
    return (root if root.is_absolute() else f.parent / root), d
