"""Cross-entropy, binary cross-entropy and balanced cross-entropy (FocusNet++ seed 004, eq. 1 ``C_b``).

Input convention (every loss in :mod:`agseg.losses`): ``input`` are **logits** ``(B, C, *spatial)``, 2D or 3D;
sigmoid when ``C == 1``, softmax over channels when ``C > 1`` (``activation`` overrides: ``"sigmoid"``,
``"softmax"``, ``"none"`` for probabilities). ``target`` is a label map ``(B, *spatial)`` / ``(B, 1, *spatial)``
or one-hot ``(B, C, *spatial)``. Computed in float32 from log-sigmoid / log-softmax (stable for large logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agseg.losses._common import FunctionalLoss, Prepared, check_reduction, init_kwargs, masked_mean, prepare

__all__ = [
    "BalancedCrossEntropyLoss",
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "balanced_cross_entropy_loss",
    "binary_cross_entropy_loss",
    "cross_entropy_loss",
]


def _channel_weight(
    weight: Sequence[float] | torch.Tensor | None, n_in: int, prep: Prepared, exclude: Sequence[int] | None
) -> torch.Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32, device=prep.prob.device).flatten()
    k = prep.prob.shape[1]
    if w.numel() == n_in and n_in != k:
        keep = [c for c in range(n_in) if c not in set(exclude or ())]
        w = w[keep]
    if w.numel() != k:
        raise ValueError(f"weight has {w.numel()} entries, expected {k} (one per kept channel)")
    return w.view(1, k, *([1] * (prep.prob.ndim - 2)))


def _binary_terms(prep: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-log p, -log(1 - p))`` for sigmoid / probability inputs."""
    if prep.log_1m_prob is None:
        raise ValueError("binary cross-entropy needs a sigmoid (or probability) output, not a softmax")
    return -prep.log_prob, -prep.log_1m_prob


def cross_entropy_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Sequence[float] | torch.Tensor | None = None,
    exclude_classes: Sequence[int] | None = None,
    activation: str = "auto",
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy from logits: softmax CE for ``C > 1``, binary CE (sigmoid) for ``C == 1``.

    Softmax: ``l_i = -sum_c w_c g_ic log p_ic``, averaged as ``sum_i l_i / sum_i sum_c w_c g_ic`` (the
    ``torch.nn.functional.cross_entropy`` convention for class weights; equal to the plain mean without
    weights). Sigmoid: ``l_ic = -w_c [g log p + (1 - g) log(1 - p)]``, averaged over elements.

    Args:
        input: logits ``(B, C, *spatial)``.
        target: labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot (soft) ``(B, C, *spatial)``.
        weight: optional class weights (length ``C``, or the number of kept channels).
        exclude_classes: channels dropped before the softmax; voxels of those labels are ignored (seed 001).
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"`` (probabilities).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, ``(B,)``).

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.
    """
    check_reduction(reduction)
    prep = prepare(input, target, activation=activation, exclude_classes=exclude_classes)
    w = _channel_weight(weight, input.shape[1], prep, exclude_classes)
    return _cross_entropy(prep, w, reduction, categorical=prep.categorical)


def _cross_entropy(prep: Prepared, w: torch.Tensor | None, reduction: str, *, categorical: bool) -> torch.Tensor:
    g = prep.target
    if categorical:
        wg = g if w is None else g * w
        per_voxel = -(wg * prep.log_prob).sum(1)  # (B, *spatial)
        norm = wg.sum(1)
        dims = tuple(range(1, per_voxel.ndim))
        if reduction == "none":
            return per_voxel.sum(dims) / norm.sum(dims).clamp_min(1e-12)
        total = per_voxel.sum()
        return total if reduction == "sum" else total / norm.sum().clamp_min(1e-12)
    nlp, nl1mp = _binary_terms(prep)
    elem = g * nlp + (1.0 - g) * nl1mp
    if w is not None:
        elem = elem * w
    if reduction == "sum":
        return elem.sum() if prep.mask is None else (elem * prep.mask).sum()
    per_sample = masked_mean(elem, prep.mask)
    if reduction == "none":
        return per_sample
    if prep.mask is None:
        return elem.mean()
    m = prep.mask.expand_as(elem)
    return (elem * m).sum() / m.sum().clamp_min(1.0)


def binary_cross_entropy_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Sequence[float] | torch.Tensor | None = None,
    activation: str = "sigmoid",
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy with logits: every channel of ``(B, C, *spatial)`` is a sigmoid output.

    With ``C > 1`` (multi-label) a label map target is one-hot encoded first. Same as
    ``torch.nn.functional.binary_cross_entropy_with_logits`` on a one-hot target.

    Args:
        input: logits ``(B, C, *spatial)`` (per-channel probabilities with ``activation="none"``).
        target: binary mask(s), labels or one-hot.
        weight: optional per-channel weights.
        activation: ``"sigmoid"`` (default) or ``"none"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, ``(B,)``).
    """
    if activation not in ("sigmoid", "none"):
        raise ValueError(f"binary cross-entropy takes activation 'sigmoid' or 'none', got {activation!r}")
    check_reduction(reduction)
    prep = prepare(input, target, activation=activation)
    w = _channel_weight(weight, input.shape[1], prep, None)
    return _cross_entropy(prep, w, reduction, categorical=False)


def balanced_cross_entropy_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    omega: float = 0.7,
    exclude_classes: Sequence[int] | None = None,
    activation: str = "auto",
    reduction: str = "mean",
) -> torch.Tensor:
    """Balanced cross-entropy ``C_b`` of FocusNet++ (seed 004, eq. 1), from logits.

    Binary (sigmoid): ``C_b = -[Omega g log p + (1 - Omega)(1 - g) log(1 - p)]`` averaged over voxels, with
    ``Omega = 0.7`` to emphasise the foreground. The paper prints ``C_b`` without the minus sign; as written it
    would be a non-positive "loss" that rewards errors, so we read the sign as a typo. Multi-class (softmax,
    our generalisation): ``-[(1 - Omega) g_0 log p_0 + Omega sum_{c >= 1} g_c log p_c]``. ``Omega = 0.5``
    gives half the (binary) cross-entropy.

    Args:
        input: logits ``(B, C, *spatial)``.
        target: labels or one-hot, see :func:`cross_entropy_loss`.
        omega: ``Omega``, the foreground weight.
        exclude_classes: channels dropped before the softmax (seed 001).
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, ``(B,)``).
    """
    check_reduction(reduction)
    prep = prepare(input, target, activation=activation, exclude_classes=exclude_classes)
    g = prep.target
    if prep.categorical:
        k = g.shape[1]
        cw = torch.full((k,), float(omega), device=g.device)
        cw[0] = 1.0 - omega
        cw = cw.view(1, k, *([1] * (g.ndim - 2)))
        per_voxel = -(cw * g * prep.log_prob).sum(1, keepdim=True)
        elem, mask = per_voxel, prep.mask
    else:
        nlp, nl1mp = _binary_terms(prep)
        elem = omega * g * nlp + (1.0 - omega) * (1.0 - g) * nl1mp
        mask = prep.mask
    if reduction == "sum":
        return elem.sum() if mask is None else (elem * mask).sum()
    per_sample = masked_mean(elem, mask)
    if reduction == "none":
        return per_sample
    if mask is None:
        return elem.mean()
    m = mask.expand_as(elem)
    return (elem * m).sum() / m.sum().clamp_min(1.0)


class CrossEntropyLoss(FunctionalLoss):
    """Module wrapper of :func:`cross_entropy_loss` (logits ``(B, C, *spatial)``; BCE when ``C == 1``)."""

    def __init__(
        self,
        *,
        weight: Sequence[float] | None = None,
        exclude_classes: Sequence[int] | None = None,
        activation: str = "auto",
        reduction: str = "mean",
    ) -> None:
        super().__init__(cross_entropy_loss, **init_kwargs(locals()))


class BinaryCrossEntropyLoss(FunctionalLoss):
    """Module wrapper of :func:`binary_cross_entropy_loss` (every channel a sigmoid logit)."""

    def __init__(
        self, *, weight: Sequence[float] | None = None, activation: str = "sigmoid", reduction: str = "mean"
    ) -> None:
        super().__init__(binary_cross_entropy_loss, **init_kwargs(locals()))


class BalancedCrossEntropyLoss(FunctionalLoss):
    """Module wrapper of :func:`balanced_cross_entropy_loss` (FocusNet++ ``C_b``, ``Omega = 0.7``)."""

    def __init__(
        self,
        *,
        omega: float = 0.7,
        exclude_classes: Sequence[int] | None = None,
        activation: str = "auto",
        reduction: str = "mean",
    ) -> None:
        super().__init__(balanced_cross_entropy_loss, **init_kwargs(locals()))
