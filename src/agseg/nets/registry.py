"""Model registry and factory (timm style): nets are named by string in configs and on the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "register_model"]

_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows of a model.

    Attributes:
        name: registry name.
        builder: class or function that builds the net from keyword arguments.
        defaults: keyword arguments a preset fixes (the caller may override any of them).
        task: ``"segmentation"`` or ``"classification"``.
        description: one line for ``agseg models``.
        paper: where the design comes from.
    """

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    task: str = "segmentation"
    description: str = ""
    paper: str = ""


def register_model(
    name: str,
    builder: Callable[..., nn.Module] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    task: str = "segmentation",
    description: str = "",
    paper: str = "",
):
    """Register ``builder`` under ``name``; usable as a decorator or as a call (for presets).

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def _add(b: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        desc = description or ((b.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[name] = ModelSpec(name, b, dict(defaults or {}), task, desc, paper)
        return b

    return _add(builder) if builder is not None else _add


def list_models(task: str | None = None) -> list[str]:
    """Names of the registered models (sorted), optionally only those of one ``task``."""
    _ensure_loaded()
    return sorted(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name raises a ``KeyError`` that lists the valid ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the preset's defaults.

    Common keyword arguments of every segmentation net: ``spatial_dims``, ``in_channels``, ``out_channels``,
    ``channels`` (widths per level, which also fix the depth).
    """
    spec = get_model_spec(name)
    return spec.builder(**{**spec.defaults, **kwargs})


def _ensure_loaded() -> None:
    # Importing the net modules runs their @register_model decorators.
    from agseg import nets  # noqa: F401
