"""Models saved under an earlier default load as they were trained.

A bundle stores the arguments the user gave, not every default, so a changed default would rebuild an older model
differently. Each function here looks at the saved weights for the sign of an earlier default and returns the
arguments that rebuild the model as it was; :func:`legacy_model_kwargs` applies them all. Used by
:func:`agseg.inference.bundle.load_bundle` and by resuming a run (:mod:`agseg.experiments.run`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["legacy_gating_source", "legacy_model_kwargs", "legacy_up_mode"]

log = logging.getLogger(__name__)

_UPS0 = re.compile(r"(^|\.)ups\.0\.conv\.weight$")
_GATING_SIGNAL = re.compile(r"(^|\.)gating_signal\.0\.weight$")


def _saved(state: Mapping[str, Any], pattern: re.Pattern[str]) -> torch.Tensor | None:
    return next((v for k, v in state.items() if pattern.search(k) and isinstance(v, torch.Tensor)), None)


def legacy_up_mode(model: nn.Module, kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"up_mode": "interp"}`` for a U-Net / Attention U-Net saved when interpolation + 3x3 conv was the default
    (before ``"transpose"``): the saved first up-sampling weight is a ``(C_0, C_1, 3, 3[, 3])`` convolution where
    the model built now has a transposed one (``(C_1, C_0, *pool)``); ``{}`` otherwise."""
    decoder = getattr(model, "decoder", None)
    if "up_mode" in kwargs or getattr(decoder, "up_mode", None) != "transpose":
        return {}
    saved = _saved(state, _UPS0)
    c = getattr(decoder, "channels", None)
    if saved is None or c is None or saved.ndim < 4:
        return {}
    if tuple(saved.shape[:2]) == (c[0], c[1]) and all(s == 3 for s in saved.shape[2:]) and c[0] != c[1]:
        return {"up_mode": "interp"}
    return {}


def legacy_gating_source(model: nn.Module, kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"gating_from": "bottleneck"}`` for a thesis-gate single-gating model saved when its gating signal came
    from the bottleneck's output (its conv took ``channels[-1]``, now the last max-pooling's ``channels[-2]``)."""
    skips = getattr(model, "skips", None)
    if "gating_from" in kwargs or getattr(skips, "gating_from", None) != "pool":
        return {}
    saved = _saved(state, _GATING_SIGNAL)
    if saved is None or skips.channels[-1] == skips.channels[-2] or saved.shape[1] != skips.channels[-1]:
        return {}
    return {"gating_from": "bottleneck"}


def legacy_model_kwargs(
    model: nn.Module, name: str, kwargs: Mapping[str, Any], state: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The model arguments that rebuild ``model`` (built from ``name`` and ``kwargs``) as the saved ``state`` was
    trained, or None when it already is."""
    if not isinstance(state, Mapping):
        return None
    extra = {**legacy_up_mode(model, kwargs, state), **legacy_gating_source(model, kwargs, state)}
    if not extra:
        return None
    log.info("%s: saved under earlier defaults; loading it as trained (%s)", name,
             ", ".join(f"{k}={v!r}" for k, v in extra.items()))  # fmt: skip
    return {**kwargs, **extra}
