"""Tversky loss (Salehi et al. 2017; FocusNet++ seed 004, eq. 1 ``TL``).

Input convention (every loss in :mod:`agseg.losses`): ``input`` are **logits** ``(B, C, *spatial)``, 2D or 3D;
sigmoid when ``C == 1``, softmax over channels when ``C > 1`` (``activation`` overrides: ``"sigmoid"``,
``"softmax"``, ``"none"`` for probabilities). ``target`` is a label map ``(B, *spatial)`` / ``(B, 1, *spatial)``
or one-hot ``(B, C, *spatial)``. Computed in float32.

Per class: ``TI = (|G n P| + s) / (|G n P| + alpha |P \\ G| + beta |G \\ P| + s)`` with the soft counts
``|G n P| = sum p g``, ``|P \\ G| = sum p (1 - g)`` (false positives), ``|G \\ P| = sum (1 - p) g`` (false
negatives); ``alpha = 0.3``, ``beta = 0.7`` (seed 004). The loss per class is ``1 - TI``; FocusNet++ sums it over
classes (``TL = sum_c (1 - TI)``), the default here averages (``class_reduction="mean"``) so that
``alpha = beta = 0.5`` gives exactly the plain-sum soft Dice loss with smoothing ``2 s``.
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

__all__ = ["TverskyLoss", "tversky_index", "tversky_loss"]


def tversky_index(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    include_background: bool = True,
    exclude_classes: Sequence[int] | None = None,
    batch: bool = False,
    activation: str = "auto",
) -> torch.Tensor:
    """Soft Tversky index per sample and class, ``(B, K)`` (``(1, K)`` with ``batch``).

    Args:
        input: logits ``(B, C, *spatial)``.
        target: labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        alpha: weight of false positives ``|P \\ G|``.
        beta: weight of false negatives ``|G \\ P|``.
        smooth: added to numerator and denominator.
        include_background: keep channel 0 of a multi-class output (no effect when ``C == 1``).
        exclude_classes: channels dropped before the softmax and from the loss (seed 001).
        batch: sum over the batch as well as space.
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"``.
    """
    prep = prepare(input, target, activation=activation, exclude_classes=exclude_classes)
    p, g = masked_pg(prep, include_background=include_background)
    tp = sum_spatial(p * g, batch=batch)
    fp = sum_spatial(p, batch=batch) - tp
    fn = sum_spatial(g, batch=batch) - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def tversky_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    include_background: bool = True,
    exclude_classes: Sequence[int] | None = None,
    batch: bool = False,
    class_reduction: str = "mean",
    activation: str = "auto",
    reduction: str = "mean",
) -> torch.Tensor:
    """Tversky loss ``1 - TI`` from logits (see :func:`tversky_index` for the arguments).

    Args:
        class_reduction: ``"mean"`` over classes (MONAI ``TverskyLoss``) or ``"sum"`` (FocusNet++ eq. 1).
        reduction: over samples: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``, or ``(1,)`` with ``batch``).

    Returns:
        Scalar, or per-sample values for ``reduction="none"``.
    """
    check_reduction(reduction)
    if class_reduction not in ("mean", "sum"):
        raise ValueError(f"class_reduction must be 'mean' or 'sum', got {class_reduction!r}")
    ti = tversky_index(
        input,
        target,
        alpha=alpha,
        beta=beta,
        smooth=smooth,
        include_background=include_background,
        exclude_classes=exclude_classes,
        batch=batch,
        activation=activation,
    )
    per_sample = (1.0 - ti).mean(1) if class_reduction == "mean" else (1.0 - ti).sum(1)
    return reduce_loss(per_sample, reduction)


class TverskyLoss(FunctionalLoss):
    """Module wrapper of :func:`tversky_loss` (logits ``(B, C, *spatial)`` in; ``alpha=0.3, beta=0.7``)."""

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        include_background: bool = True,
        exclude_classes: Sequence[int] | None = None,
        batch: bool = False,
        class_reduction: str = "mean",
        activation: str = "auto",
        reduction: str = "mean",
    ) -> None:
        super().__init__(tversky_loss, **init_kwargs(locals()))
