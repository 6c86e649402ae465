"""The task seam: what differs between segmentation and classification, written once for every layer.

A :class:`Task` tells the trainer what the target of a batch is and which quick metrics to log, tells the
predictor how logits become probabilities and labels, and names the default loss. The model registry says which
task a net serves (``register_model(..., task="classification")``); ``agseg train``/``cv``/``predict`` pick the
task from the model. Training and inference both import from here, never from each other.

Logits convention (both tasks): one output channel means a sigmoid (binary: probability of the foreground / the
positive class), several mean a softmax over channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "TASKS",
    "ClassificationTask",
    "SegmentationTask",
    "Task",
    "batch_accuracy",
    "get_task",
    "logits_to_labels",
    "logits_to_probs",
    "quick_dice",
]


def logits_to_probs(logits: torch.Tensor, exclude: Sequence[int] | None = None) -> torch.Tensor:
    """Sigmoid for one output channel, softmax over channels otherwise. ``(B, K, ...) -> (B, K, ...)``.

    ``exclude``: channels left out of the softmax (probability 0), as the losses' ``exclude_classes`` leave them out
    in training (seed 001's fine-tuning with spleen and kidney excluded); ignored for one output channel.
    """
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    if exclude:
        drop = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        drop[list(exclude)] = True
        logits = logits.masked_fill(drop.view(1, -1, *([1] * (logits.ndim - 2))), float("-inf"))
    return torch.softmax(logits, dim=1)


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices ``(B, ...)``: logit > 0 for one channel (probability > 0.5), argmax otherwise."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def probs_to_indices(probs: np.ndarray) -> np.ndarray:
    """Class indices from probabilities ``(K, ...)``: ``p > 0.5`` for one channel, argmax otherwise."""
    return (probs[0] > 0.5).astype(np.int64) if probs.shape[0] == 1 else probs.argmax(0)


@torch.no_grad()
def quick_dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    """Mean foreground Dice of a batch, for progress bars and logs (not the evaluation metric).

    One output channel: sigmoid > 0.5; several: argmax, averaged over the foreground classes present in the
    reference or the prediction. Both empty counts as 1.
    """
    n = logits.shape[1]
    pred = logits_to_labels(logits)
    scores = []
    for c in range(1, max(2, n)):
        p, t = pred == c, label == c
        denom = p.sum() + t.sum()
        if denom > 0:
            scores.append(float(2 * (p & t).sum() / denom))
    return float(np.mean(scores)) if scores else 1.0


@torch.no_grad()
def batch_accuracy(logits: torch.Tensor, label: torch.Tensor) -> float:
    """Fraction of images of a batch whose predicted class is the target."""
    return float((logits_to_labels(logits) == label).float().mean())


@dataclass(frozen=True)
class Task:
    """What one kind of problem needs from every layer.

    Attributes:
        name: ``"segmentation"`` or ``"classification"``.
        default_loss: the loss a config gets when it names none.
        quick_metric: name of the metric logged per epoch (``train_<name>``, ``val_<name>``).
    """

    name: str
    default_loss: str
    quick_metric: str

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's target as class indices: ``(B, *spatial)`` (segmentation) or ``(B,)`` (classification)."""
        raise NotImplementedError

    def quick_score(self, logits: torch.Tensor, target: torch.Tensor) -> float:
        """The per-batch metric logged during training (not the evaluation metric)."""
        raise NotImplementedError

    def adapt_loss(self, loss: torch.nn.Module) -> torch.nn.Module:
        """The loss as the trainer calls it, ``loss(output, target)``, for this task's outputs."""
        return loss


@dataclass(frozen=True)
class SegmentationTask(Task):
    """Per-voxel labels; the quick metric is the mean foreground Dice of the batch."""

    name: str = "segmentation"
    default_loss: str = "dice_ce"
    quick_metric: str = "dice"

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        y = batch["label"]
        return y[:, 0] if y.ndim == batch["image"].ndim else y

    def quick_score(self, logits: torch.Tensor, target: torch.Tensor) -> float:
        return quick_dice(logits, target)


@dataclass(frozen=True)
class ClassificationTask(Task):
    """One class per image; the quick metric is the batch accuracy."""

    name: str = "classification"
    default_loss: str = "ce"
    quick_metric: str = "acc"

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return batch["label"].reshape(-1)

    def quick_score(self, logits: torch.Tensor, target: torch.Tensor) -> float:
        return batch_accuracy(logits, target)

    def adapt_loss(self, loss: torch.nn.Module) -> torch.nn.Module:
        return PerImageLoss(loss)


class PerImageLoss(torch.nn.Module):
    """A per-voxel loss applied to per-image outputs: logits ``(B, K)`` and targets ``(B,)`` get a singleton spatial
    axis (``(B, K, 1)``, ``(B, 1)``), so that every loss of :mod:`agseg.losses` (cross-entropy, focal, ...) serves a
    classifier unchanged; deep-supervised heads (a list) are handled like the segmentation nets' outputs."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        output = [o[..., None] for o in output] if isinstance(output, list | tuple) else output[..., None]
        return self.loss(output, target.reshape(-1, 1))


TASKS: dict[str, Task] = {"segmentation": SegmentationTask(), "classification": ClassificationTask()}


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; an unknown name raises a ``KeyError`` listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
