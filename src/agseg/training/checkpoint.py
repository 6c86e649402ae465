"""Checkpoints: written atomically, read safely, and transferable between related nets.

A checkpoint file is untrusted input: it is read with ``torch.load(..., weights_only=True)`` (no arbitrary
pickled objects) or from safetensors. Writes go to a temporary file in the same folder and are moved into
place with ``os.replace``, so a run killed while saving never leaves a half-written checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agseg.fileio import atomic_path

__all__ = [
    "InitReport",
    "load_checkpoint",
    "load_state_dict_file",
    "save_checkpoint",
    "save_weights",
    "transfer_weights",
]

log = logging.getLogger(__name__)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save a training state (tensors, numbers, strings, lists and dicts only) atomically."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist (named in the message).
        ValueError: the file is not a readable checkpoint (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise ValueError(f"{path}: not a readable agseg checkpoint ({type(err).__name__}: {err})") from None


def save_weights(model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Save only the model weights as safetensors (the format shipped models use), atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Model weights from a ``.safetensors`` file, or from a checkpoint's ``"model"`` entry (or a bare state dict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    ckpt = load_checkpoint(path)
    state = ckpt.get("model", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no model state dict")
    return dict(state)


@dataclass
class InitReport:
    """What :func:`transfer_weights` did."""

    loaded: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors ({len(self.sliced)} class-sliced), skipped {len(self.skipped)}, "
            f"left at initialisation {len(self.missing)}"
        )


def _slice_classes(src: torch.Tensor, dst_shape: torch.Size, n_src: int, classes: Sequence[int]) -> torch.Tensor | None:
    """Select output classes in every dim where ``src`` has ``k * n_src`` entries and ``dst`` ``k * len(classes)``."""
    if src.ndim != len(dst_shape):
        return None
    out = src
    n_dst = len(classes)
    for dim, (s, d) in enumerate(zip(src.shape, dst_shape, strict=True)):
        if s == d:
            continue
        if s % n_src or d % n_dst or s // n_src != d // n_dst:
            return None
        blocks = s // n_src
        index = torch.tensor([b * n_src + c for b in range(blocks) for c in classes])
        out = out.index_select(dim, index)
    return out if out.shape == dst_shape else None


def transfer_weights(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    classes: Sequence[int] | None = None,
    n_source_classes: int | None = None,
) -> InitReport:
    """Initialise ``model`` from another net's weights, matching what fits (seed 001).

    Tensors with the same name and shape are copied: U-Net weights go into an Attention U-Net (whose gates keep
    their open initialisation). With ``classes`` (indices of the source's output classes to keep, e.g.
    ``[0, 1]`` to fine-tune on background + pancreas with the spleen/kidney outputs excluded, seed 001 Table 3),
    output-layer tensors whose class dimension differs are sliced to those classes.

    Returns:
        An :class:`InitReport` listing loaded, sliced, skipped (with the reason) and missing tensors.
    """
    report = InitReport()
    target = model.state_dict()
    new_state = {}
    for name, dst in target.items():
        src = source.get(name)
        if src is None:
            report.missing.append(name)
            continue
        if src.shape == dst.shape:
            new_state[name] = src
            report.loaded.append(name)
            continue
        sliced = None
        if classes is not None and n_source_classes:
            sliced = _slice_classes(src, dst.shape, n_source_classes, classes)
        if sliced is None:
            report.skipped[name] = f"shape {tuple(src.shape)} vs {tuple(dst.shape)}"
            continue
        new_state[name] = sliced
        report.loaded.append(name)
        report.sliced.append(name)
    model.load_state_dict(new_state, strict=False)
    log.info("init-from: %s", report.summary())
    return report
