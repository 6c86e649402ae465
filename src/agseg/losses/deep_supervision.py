"""Deep-supervision wrapper: one loss applied to every output of a net, weighted and summed.

The nets (DESIGN convention 4) return, in training mode with deep supervision, a list of logits
``(B, C, *spatial)`` at the input's full resolution, the main (finest/fused) output first; in eval mode a single
tensor. :class:`DeepSupervisionLoss` accepts both. ANU-Net (seed 002 eq. 3) sums the per-output losses with unit
weights, which is the default here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepSupervisionLoss", "deep_supervision_loss"]


def _match_target(target: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resample of ``target`` to ``out``'s spatial size (only when they differ)."""
    spatial = tuple(out.shape[2:])
    has_channel = target.ndim == out.ndim
    t_spatial = tuple(target.shape[2:] if has_channel else target.shape[1:])
    if t_spatial == spatial:
        return target
    t = target if has_channel else target.unsqueeze(1)
    resized = F.interpolate(t.float(), size=spatial, mode="nearest")
    resized = resized.to(target.dtype)
    return resized if has_channel else resized[:, 0]


def deep_supervision_loss(
    loss: nn.Module,
    outputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    weights: Sequence[float] | None = None,
    *,
    normalize: bool = False,
) -> torch.Tensor:
    """``sum_i w_i loss(outputs[i], target)`` (the target resampled by nearest neighbour where sizes differ).

    Args:
        loss: any loss taking ``(logits, target)``.
        outputs: one logits tensor ``(B, C, *spatial)`` (then ``loss(outputs, target)`` is returned, unweighted)
            or a list of them, main output first.
        target: labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        weights: one weight per output (``None``: all 1, the plain sum of ANU-Net eq. 3).
        normalize: divide the weights by their sum (a weighted mean, nnU-Net style).

    Raises:
        ValueError: if the list is empty or ``weights`` has a different length.
    """
    if isinstance(outputs, torch.Tensor):
        return loss(outputs, target)
    outs = list(outputs)
    if not outs:
        raise ValueError("deep supervision got an empty list of outputs")
    w = [1.0] * len(outs) if weights is None else [float(x) for x in weights]
    if len(w) != len(outs):
        raise ValueError(f"{len(outs)} outputs but {len(w)} deep-supervision weights")
    if normalize:
        total_w = sum(w)
        if total_w <= 0:
            raise ValueError("deep-supervision weights must have a positive sum to be normalised")
        w = [x / total_w for x in w]
    total: torch.Tensor | None = None
    for wi, out in zip(w, outs, strict=True):
        if wi == 0:
            continue
        term = wi * loss(out, _match_target(target, out))
        total = term if total is None else total + term
    if total is None:  # every weight zero: a zero that still depends on the outputs
        total = sum(o.float().sum() * 0.0 for o in outs)  # type: ignore[assignment]
    assert total is not None
    return total


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to every deep-supervision output and sum with ``weights``.

    Args:
        loss: the per-output loss module (logits in).
        weights: one weight per output, main output first (``None``: all 1).
        normalize: divide the weights by their sum.

    ``forward(outputs, target)``: ``outputs`` a list of logits ``(B, C, *spatial)`` or a single tensor (eval mode;
    then the plain ``loss``). Example::

        crit = DeepSupervisionLoss(create_loss("dice_ce"), weights=[1.0, 0.5, 0.25, 0.125])
        loss = crit(net(x), y)
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None, *, normalize: bool = False) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(x) for x in weights]
        self.normalize = normalize

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of ``loss`` over ``outputs`` (see :func:`deep_supervision_loss`)."""
        return deep_supervision_loss(self.loss, outputs, target, self.weights, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, normalize={self.normalize}"
