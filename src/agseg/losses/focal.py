"""Focal loss (Lin et al. 2017; the focal part of ANU-Net's hybrid loss, seed 002 eq. 2).

Input convention (every loss in :mod:`agseg.losses`): ``input`` are **logits** ``(B, C, *spatial)``, 2D or 3D;
sigmoid when ``C == 1``, softmax over channels when ``C > 1`` (``activation`` overrides: ``"sigmoid"``,
``"softmax"``, ``"none"`` for probabilities). ``target`` is a label map ``(B, *spatial)`` / ``(B, 1, *spatial)``
or one-hot ``(B, C, *spatial)``. Computed in float32.

``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, ``p_t = p`` where ``y = 1`` and ``1 - p`` otherwise
(seed 002 eq. 2). With ``gamma = 0`` and ``alpha = None`` it is the (binary) cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agseg.losses._common import FunctionalLoss, check_reduction, init_kwargs, masked_mean, prepare, reduce_loss

__all__ = ["FocalLoss", "focal_loss"]

_TINY = 1e-12  # keeps d/dx x^gamma finite at x = 0 for gamma < 1


def _modulating(one_minus_pt: torch.Tensor, gamma: float) -> torch.Tensor:
    if gamma == 0:
        return torch.ones_like(one_minus_pt)
    return one_minus_pt.clamp_min(_TINY).pow(gamma)


def focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float | Sequence[float] | None = None,
    gamma: float = 2.0,
    exclude_classes: Sequence[int] | None = None,
    activation: str = "auto",
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss from logits.

    Sigmoid (``C == 1`` or ``activation="sigmoid"``), per element:
    ``-[alpha g (1 - p)^gamma log p + (1 - alpha)(1 - g) p^gamma log(1 - p)]`` (no ``alpha`` factor when
    ``alpha`` is ``None``), averaged over all elements (as MONAI ``FocalLoss``, ``use_softmax=False``).

    Softmax (``C > 1``), per voxel: ``-sum_c alpha_c g_c (1 - p_c)^gamma log p_c`` averaged over voxels; a scalar
    ``alpha`` gives ``alpha_0 = 1 - alpha`` (background) and ``alpha_c = alpha`` otherwise; a sequence gives one
    weight per channel.

    Args:
        input: logits ``(B, C, *spatial)``.
        target: labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        alpha: class balance weight (``None``: no weighting).
        gamma: focusing parameter (2 in Lin et al. and ANU-Net); ``0`` gives cross-entropy.
        exclude_classes: channels dropped before the softmax; voxels of those labels ignored (seed 001).
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, ``(B,)``).

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.
    """
    check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    prep = prepare(input, target, activation=activation, exclude_classes=exclude_classes)
    g, p = prep.target, prep.prob
    if prep.categorical:
        k = g.shape[1]
        if alpha is None:
            a = None
        elif isinstance(alpha, (int, float)):
            a = torch.full((k,), float(alpha), device=g.device)
            a[0] = 1.0 - float(alpha)
        else:
            a = torch.as_tensor(list(alpha), dtype=torch.float32, device=g.device)
            if a.numel() != k:
                raise ValueError(f"alpha has {a.numel()} entries, expected {k}")
        elem = -g * _modulating(1.0 - p, gamma) * prep.log_prob
        if a is not None:
            elem = elem * a.view(1, k, *([1] * (g.ndim - 2)))
        elem = elem.sum(1, keepdim=True)
    else:
        assert prep.log_1m_prob is not None
        pos = -g * _modulating(1.0 - p, gamma) * prep.log_prob
        neg = -(1.0 - g) * _modulating(p, gamma) * prep.log_1m_prob
        if alpha is not None:
            if not isinstance(alpha, (int, float)):
                raise ValueError("a sigmoid focal loss takes a scalar alpha")
            pos, neg = alpha * pos, (1.0 - alpha) * neg
        elem = pos + neg
    if reduction == "none":
        return masked_mean(elem, prep.mask)
    if prep.mask is not None:
        m = prep.mask.expand_as(elem)
        total = (elem * m).sum()
        return total if reduction == "sum" else total / m.sum().clamp_min(1.0)
    return reduce_loss(elem, reduction)


class FocalLoss(FunctionalLoss):
    """Module wrapper of :func:`focal_loss` (logits ``(B, C, *spatial)`` in)."""

    def __init__(
        self,
        *,
        alpha: float | Sequence[float] | None = None,
        gamma: float = 2.0,
        exclude_classes: Sequence[int] | None = None,
        activation: str = "auto",
        reduction: str = "mean",
    ) -> None:
        super().__init__(focal_loss, **init_kwargs(locals()))
