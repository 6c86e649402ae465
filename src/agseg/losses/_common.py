"""Shared input handling of every loss: logits to probabilities, targets to one-hot, excluded classes.

The convention (stated once here, repeated in every loss docstring):

* ``input`` are **logits** of shape ``(B, C, *spatial)`` (2D or 3D). ``activation="auto"`` (default) applies a
  sigmoid when ``C == 1`` (binary) and a softmax over the channel axis when ``C > 1`` (multi-class).
  ``activation="sigmoid"`` treats every channel as an independent binary problem (multi-label);
  ``activation="softmax"`` forces a softmax; ``activation="none"`` means ``input`` already holds
  probabilities in ``[0, 1]``.
* ``target`` is an integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)``, or a one-hot (or soft) map
  ``(B, C, *spatial)``. With ``C == 1`` a label map is the binary mask itself (values in ``{0, 1}``; soft values
  in ``[0, 1]`` are allowed; anything else raises ``ValueError``).
* With ``activation="none"`` and ``C > 1`` the probabilities are taken as categorical (one class per voxel, as
  a softmax output); for multi-label probabilities compute per channel with ``C == 1`` slices.
* Everything is computed in float32 (bf16/fp16 logits under autocast are cast with ``.float()``).
* ``exclude_classes`` (seed 001, fine-tuning on TCIA: "the output nodes corresponding to spleen and kidney are
  excluded from the output softmax computation, and the gradient updates are computed only for the background
  and pancreas labels"): the excluded channels are dropped from the logits *before* the softmax and from the
  one-hot target; voxels whose target label is an excluded class are ignored (weight 0) by every term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "Prepared",
    "check_reduction",
    "masked_mean",
    "masked_pg",
    "prepare",
    "reduce_loss",
    "sum_spatial",
]

ACTIVATIONS = ("auto", "sigmoid", "softmax", "none")
_LOG_EPS = 1e-7  # clamp for log(p) when the input already holds probabilities (activation="none")


@dataclass
class Prepared:
    """Inputs of a loss after the common handling.

    Attributes:
        prob: probabilities ``(B, K, *spatial)`` float32 (``K`` = kept channels).
        log_prob: ``log(prob)`` ``(B, K, *spatial)``, computed stably from the logits.
        log_1m_prob: ``log(1 - prob)`` for sigmoid/none activations (``None`` for softmax).
        target: one-hot (or soft) target ``(B, K, *spatial)`` float32.
        mask: ``(B, 1, *spatial)`` float32 weights (0 where the target is an excluded class) or ``None``.
        kind: ``"sigmoid"``, ``"softmax"`` or ``"none"``: the activation actually applied.
    """

    prob: torch.Tensor
    log_prob: torch.Tensor
    log_1m_prob: torch.Tensor | None
    target: torch.Tensor
    mask: torch.Tensor | None
    kind: str

    @property
    def categorical(self) -> bool:
        """One class per voxel (softmax, or given probabilities with several channels) rather than binary."""
        return self.kind == "softmax" or (self.kind == "none" and self.prob.shape[1] > 1)


def _resolve_activation(activation: str, n_channels: int) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "auto":
        return "sigmoid" if n_channels == 1 else "softmax"
    return activation


def _target_to_onehot(target: torch.Tensor, input_shape: torch.Size, kind: str) -> tuple[torch.Tensor, bool]:
    """Return ``(target_float, is_label_map)``; label maps are returned as ``(B, 1, *spatial)`` floats."""
    n_channels = input_shape[1]
    spatial = tuple(input_shape[2:])
    if target.ndim == len(input_shape) - 1:
        target = target.unsqueeze(1)
    if target.ndim != len(input_shape):
        raise ValueError(
            f"target must be (B, *spatial), (B, 1, *spatial) or (B, C, *spatial) for input {tuple(input_shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.shape[0] != input_shape[0] or tuple(target.shape[2:]) != spatial:
        raise ValueError(
            f"target {tuple(target.shape)} does not match input {tuple(input_shape)} in batch or spatial size"
        )
    if target.shape[1] == n_channels:
        if n_channels == 1 and target.numel() and (target.min() < 0 or target.max() > 1):
            raise ValueError("a binary (one-channel) target must hold values in [0, 1]")
        return target.float(), n_channels == 1
    if target.shape[1] == 1:
        if target.is_floating_point() and not torch.equal(target, target.round()):
            raise ValueError("a (B, 1, *spatial) target for a multi-channel input must hold integer labels")
        return target, True
    raise ValueError(f"target has {target.shape[1]} channels, input has {n_channels}: expected 1 or {n_channels}")


def prepare(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: str = "auto",
    exclude_classes: Sequence[int] | None = None,
) -> Prepared:
    """Apply the common convention (module docstring) to ``input`` logits and ``target``.

    Args:
        input: logits ``(B, C, *spatial)`` (probabilities with ``activation="none"``).
        target: label map ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        activation: ``"auto"``, ``"sigmoid"``, ``"softmax"`` or ``"none"``.
        exclude_classes: channel indices removed before the softmax and from the loss (seed 001).

    Returns:
        A :class:`Prepared` with ``K = C - len(exclude_classes)`` channels.

    Raises:
        ValueError: on shape mismatches, a bad activation or class indices out of range.
    """
    if input.ndim < 3:
        raise ValueError(f"input must be (B, C, *spatial) with 1 to 3 spatial dims, got {tuple(input.shape)}")
    x = input.float()
    n_channels = x.shape[1]
    kind = _resolve_activation(activation, n_channels)
    tgt, is_labels = _target_to_onehot(target, x.shape, kind)

    excluded = sorted({int(c) for c in (exclude_classes or ())})
    for c in excluded:
        if not 0 <= c < n_channels:
            raise ValueError(f"exclude_classes has {c}, outside 0..{n_channels - 1}")
    if len(excluded) >= n_channels:
        raise ValueError("exclude_classes removes every channel")
    keep = [c for c in range(n_channels) if c not in excluded]

    mask: torch.Tensor | None = None
    if is_labels and n_channels > 1:
        labels = tgt.long()
        if excluded:
            ex = torch.tensor(excluded, device=labels.device)
            mask = (~torch.isin(labels, ex)).float()
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_channels):
            raise ValueError(f"target labels must lie in 0..{n_channels - 1}")
        onehot = torch.zeros_like(x)
        onehot.scatter_(1, labels, 1.0)
        tgt = onehot
    elif excluded:
        # one-hot target: voxels whose (hard) class is excluded are ignored
        mask = (1.0 - tgt[:, excluded].sum(1, keepdim=True)).clamp(0.0, 1.0)
    tgt = tgt.float()
    if excluded:
        x = x[:, keep]
        tgt = tgt[:, keep]
        if mask is not None:
            tgt = tgt * mask

    log_1m: torch.Tensor | None = None
    if kind == "sigmoid":
        prob = torch.sigmoid(x)
        log_prob = F.logsigmoid(x)
        log_1m = F.logsigmoid(-x)
    elif kind == "softmax":
        log_prob = F.log_softmax(x, dim=1)
        prob = log_prob.exp()
    else:  # probabilities given
        prob = x
        clamped = x.clamp(_LOG_EPS, 1.0 - _LOG_EPS)
        log_prob = clamped.log()
        log_1m = (1.0 - clamped).log()
    return Prepared(prob=prob, log_prob=log_prob, log_1m_prob=log_1m, target=tgt, mask=mask, kind=kind)


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"mean"``, ``"sum"`` or ``"none"`` reduction of a per-item loss tensor."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` ``(B, K, *spatial)`` per sample ``(B,)``, over channels and valid voxels."""
    dims = tuple(range(1, values.ndim))
    if mask is None:
        return values.mean(dim=dims)
    w = mask.expand_as(values)
    return (values * w).sum(dim=dims) / w.sum(dim=dims).clamp_min(1.0)


def masked_pg(prep: Prepared, *, include_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and target ``(B, K', *spatial)`` with ignored voxels zeroed.

    ``include_background=False`` drops channel 0 of a multi-channel output; it has no effect on a single-channel
    sigmoid output (its only channel is the foreground).
    """
    p, g = prep.prob, prep.target
    if prep.mask is not None:
        p = p * prep.mask
        g = g * prep.mask
    if not include_background and p.shape[1] > 1:
        p, g = p[:, 1:], g[:, 1:]
    return p, g


def sum_spatial(x: torch.Tensor, *, batch: bool) -> torch.Tensor:
    """Sum ``(B, K, *spatial)`` over space to ``(B, K)``, or over batch and space to ``(1, K)`` with ``batch``."""
    s = x.sum(tuple(range(2, x.ndim)))
    return s.sum(0, keepdim=True) if batch else s


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` for an unknown reduction name."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class FunctionalLoss(nn.Module):
    """Thin ``nn.Module`` over a functional loss: keeps the keyword arguments and passes them on.

    Subclasses declare their keyword arguments explicitly (they are the public API) and call
    ``super().__init__(fn, **init_kwargs(locals()))``; ``forward(input, target)`` is ``fn(input, target, **kw)``.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], **kw: Any) -> None:
        super().__init__()
        check_reduction(kw.get("reduction", "mean"))
        for key in ("exclude_classes", "weight", "ce_weight"):  # plain lists: readable repr, YAML-safe
            if kw.get(key) is not None and not isinstance(kw[key], torch.Tensor):
                kw[key] = list(kw[key])
        self._fn = fn
        self.kw: dict[str, Any] = kw

    def forward(self, input: Any, target: torch.Tensor) -> torch.Tensor:
        """``input`` logits ``(B, C, *spatial)`` (or the list a loss accepts), ``target`` labels or one-hot."""
        return self._fn(input, target, **self.kw)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kw.items())


def init_kwargs(scope: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an ``__init__`` from its ``locals()`` (without ``self`` and ``__class__``)."""
    return {k: v for k, v in scope.items() if k not in ("self", "__class__")}
