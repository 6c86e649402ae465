"""Loss registry: configs and the command line name losses by string (``create_loss("dice_ce")``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["LossSpec", "UnknownLossError", "create_loss", "get_loss_spec", "list_losses", "register_loss"]

_REGISTRY: dict[str, LossSpec] = {}


class UnknownLossError(KeyError, ValueError):
    """An unknown loss name (a ``KeyError`` like ``create_model``'s, and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LossSpec:
    """What the registry knows of a loss.

    Attributes:
        name: registry name.
        builder: class or function building the ``nn.Module`` from keyword arguments.
        defaults: keyword arguments fixed by the entry (the caller may override any).
        description: one line.
        paper: where the formula comes from.
    """

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""


def register_loss(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    defaults: dict[str, Any] | None = None,
    description: str = "",
    paper: str = "",
) -> Callable[..., nn.Module]:
    """Register ``builder`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(f"loss {name!r} is already registered")
    desc = description or ((builder.__doc__ or "").strip().splitlines() or [""])[0]
    _REGISTRY[name] = LossSpec(name, builder, dict(defaults or {}), desc, paper)
    return builder


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return sorted(_REGISTRY)


def get_loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name``.

    Raises:
        UnknownLossError: (a ``KeyError`` and ``ValueError``) listing the valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLossError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(_REGISTRY))}") from None


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered loss ``name``; ``kwargs`` override the entry's defaults.

    Every loss takes **logits** ``(B, C, *spatial)`` (sigmoid for ``C == 1``, softmax for ``C > 1``) and a
    target as labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``. For nets with deep
    supervision wrap it: ``DeepSupervisionLoss(create_loss(name), weights)`` (``anunet_hybrid`` takes lists itself).

    Example:
        ``create_loss("dice", exclude_classes=[2, 3])``, ``create_loss("dice_ce", include_background=False)``.

    Raises:
        UnknownLossError: for an unknown name (the message lists the valid ones).
        TypeError: for a keyword the loss does not take.
    """
    spec = get_loss_spec(name)
    return spec.builder(**{**spec.defaults, **kwargs})
