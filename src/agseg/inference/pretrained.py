"""Models shipped inside the package (``agseg predict --model NAME``): found on disk, never downloaded.

Each lives in ``agseg/assets/models/<name>/`` as ``model.json`` + ``model.safetensors``; ``AGSEG_MODELS`` may
name extra folders (``os.pathsep``-separated) holding more such model folders.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["list_pretrained", "pretrained_path"]

_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"


def _roots() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("AGSEG_MODELS", "").split(os.pathsep) if p]
    return [*extra, _ASSETS]


def list_pretrained() -> list[str]:
    """Names of the models available offline."""
    names = set()
    for root in _roots():
        if root.is_dir():
            names |= {d.name for d in root.iterdir() if (d / "model.json").is_file()}
    return sorted(names)


def pretrained_path(name: str) -> Path:
    """The folder of shipped model ``name``.

    Raises:
        KeyError: unknown name (the message lists the available ones).
    """
    for root in _roots():
        if (root / name / "model.json").is_file():
            return root / name
    have = ", ".join(list_pretrained()) or "none yet"
    raise KeyError(f"unknown shipped model {name!r}; available: {have}")
