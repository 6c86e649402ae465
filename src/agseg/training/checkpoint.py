"""Checkpoints of training runs, and weight transfer between related nets (seed 001's U-Net -> Attention U-Net).

Reading and writing weight files lives in :mod:`agseg.weights` (shared with inference); it is re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from agseg.weights import load_checkpoint, load_state_dict_file, save_checkpoint, save_weights

__all__ = [
    "InitReport",
    "load_checkpoint",
    "load_state_dict_file",
    "save_checkpoint",
    "save_weights",
    "transfer_weights",
]

log = logging.getLogger(__name__)


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
    from agseg.nets.base import unwrap, upgrade_state_dict

    report = InitReport()
    model = unwrap(model)
    source = upgrade_state_dict(model, source)  # weights saved before a module rename still match by name
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
