"""Soft Dice losses: V-Net squared form, plain-sum form, multi-class Sorensen-Dice with excluded classes, Dice + CE.

Input convention (every loss in :mod:`agseg.losses`): ``input`` are **logits** ``(B, C, *spatial)``, 2D or 3D;
sigmoid when ``C == 1``, softmax over channels when ``C > 1`` (``activation`` overrides: ``"sigmoid"``,
``"softmax"``, ``"none"`` for probabilities). ``target`` is a label map ``(B, *spatial)`` / ``(B, 1, *spatial)``
or one-hot ``(B, C, *spatial)``. Computed in float32 (safe under bf16 autocast).

Formulas, per class ``c`` with probabilities ``p`` and target ``g`` summed over the voxels ``i`` of a sample
(or of the whole batch with ``batch=True``) and smoothing ``s``:

* plain sum (MONAI ``DiceLoss``):   ``L_c = 1 - (2 sum p g + s) / (sum p + sum g + s)``
* V-Net squared (seed 000 appendix A, Milletari et al. 2016; also ANU-Net seed 002 eq. 1):
  ``L_c = 1 - (2 sum p g + s) / (sum p^2 + sum g^2 + s)``

The multi-class Sorensen-Dice loss of seed 001 ("defined over all semantic classes") is the mean of ``L_c`` over
all channels (``include_background=True``, the default); ``exclude_classes`` removes channels from the softmax
and from the loss (seed 001, fine-tuning with the spleen/kidney outputs excluded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agseg.losses._common import (
    FunctionalLoss,
    check_reduction,
    init_kwargs,
    masked_pg,
    prepare,
    reduce_loss,
    sum_spatial,
)
from agseg.losses.cross_entropy import cross_entropy_loss

__all__ = ["DiceCELoss", "DiceLoss", "dice_ce_loss", "dice_loss", "soft_dice_per_class"]


def soft_dice_per_class(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    squared: bool = False,
    smooth: float = 1e-5,
    include_background: bool = True,
    exclude_classes: Sequence[int] | None = None,
    batch: bool = False,
    activation: str = "auto",
) -> torch.Tensor:
    """Soft Dice coefficient per sample and class.

    Args:
        input: logits ``(B, C, *spatial)`` (probabilities with ``activation="none"``).
        target: label map ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        squared: V-Net form (squared denominator, seed 000 appendix A) instead of the plain sum.
        smooth: ``s``, added to numerator and denominator (an empty class predicted empty scores 1).
        include_background: keep channel 0 of a multi-class output (no effect when ``C == 1``).
        exclude_classes: channels dropped before the softmax and from the loss (seed 001).
        batch: sum over the batch as well as space (one Dice per class for the batch).
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"``.

    Returns:
        Dice coefficients ``(B, K)`` (``(1, K)`` with ``batch``), float32.
    """
    prep = prepare(input, target, activation=activation, exclude_classes=exclude_classes)
    p, g = masked_pg(prep, include_background=include_background)
    inter = sum_spatial(p * g, batch=batch)
    if squared:
        denom = sum_spatial(p * p, batch=batch) + sum_spatial(g * g, batch=batch)
    else:
        denom = sum_spatial(p, batch=batch) + sum_spatial(g, batch=batch)
    return (2.0 * inter + smooth) / (denom + smooth)


def dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    squared: bool = False,
    smooth: float = 1e-5,
    include_background: bool = True,
    exclude_classes: Sequence[int] | None = None,
    batch: bool = False,
    activation: str = "auto",
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice loss ``1 - Dice`` (plain sum, or V-Net squared form with ``squared=True``).

    Takes **logits** by default (sigmoid for one channel, softmax for several). See
    :func:`soft_dice_per_class` for the arguments.

    Returns:
        Scalar for ``reduction="mean"``/``"sum"`` (``"sum"`` adds the per-sample losses, each the mean over
        classes); per-sample ``(B,)`` (``(1,)`` with ``batch``) for ``"none"``. Per-class values:
        :func:`soft_dice_per_class`.
    """
    check_reduction(reduction)
    d = soft_dice_per_class(
        input,
        target,
        squared=squared,
        smooth=smooth,
        include_background=include_background,
        exclude_classes=exclude_classes,
        batch=batch,
        activation=activation,
    )
    return reduce_loss((1.0 - d).mean(1), reduction)


class DiceLoss(FunctionalLoss):
    """Module wrapper of :func:`dice_loss` (logits in; ``(B, C, *spatial)``; see the module docstring).

    ``DiceLoss(squared=True)`` is the V-Net soft Dice loss (seed 000 appendix A); the default is the plain-sum
    form. ``exclude_classes`` gives seed 001's fine-tuning loss.
    """

    def __init__(
        self,
        *,
        squared: bool = False,
        smooth: float = 1e-5,
        include_background: bool = True,
        exclude_classes: Sequence[int] | None = None,
        batch: bool = False,
        activation: str = "auto",
        reduction: str = "mean",
    ) -> None:
        super().__init__(dice_loss, **init_kwargs(locals()))


def dice_ce_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    squared: bool = False,
    smooth: float = 1e-5,
    include_background: bool = True,
    exclude_classes: Sequence[int] | None = None,
    batch: bool = False,
    ce_weight: Sequence[float] | torch.Tensor | None = None,
    activation: str = "auto",
) -> torch.Tensor:
    """``lambda_dice * Dice loss + lambda_ce * cross-entropy`` (MONAI ``DiceCELoss`` form), from logits.

    With one output channel the cross-entropy is the binary one (BCE with logits). Both terms share
    ``exclude_classes``. Returns a scalar.
    """
    d = dice_loss(
        input,
        target,
        squared=squared,
        smooth=smooth,
        include_background=include_background,
        exclude_classes=exclude_classes,
        batch=batch,
        activation=activation,
    )
    ce = cross_entropy_loss(input, target, weight=ce_weight, exclude_classes=exclude_classes, activation=activation)
    return lambda_dice * d + lambda_ce * ce


class DiceCELoss(FunctionalLoss):
    """Module wrapper of :func:`dice_ce_loss` (logits ``(B, C, *spatial)`` in, scalar out)."""

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        squared: bool = False,
        smooth: float = 1e-5,
        include_background: bool = True,
        exclude_classes: Sequence[int] | None = None,
        batch: bool = False,
        ce_weight: Sequence[float] | None = None,
        activation: str = "auto",
    ) -> None:
        super().__init__(dice_ce_loss, **init_kwargs(locals()))
