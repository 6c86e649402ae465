"""Models saved under an earlier default load as they were trained.

A bundle stores the arguments the user gave, not every default, so a changed default would rebuild an older model
differently. Each function here looks at the saved weights for the sign of an earlier default and returns the
arguments that rebuild the model as it was; :func:`legacy_model_kwargs` applies them all. Used by
:func:`agseg.inference.bundle.load_bundle` and by resuming a run (:mod:`agseg.experiments.run`).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["legacy_gate_style", "legacy_gating_source", "legacy_model_kwargs", "legacy_up_mode", "resolved_kwargs"]

log = logging.getLogger(__name__)

_UPS0 = re.compile(r"(^|\.)ups\.0\.conv\.weight$")
_GATING_SIGNAL = re.compile(r"(^|\.)gating_signal\.0\.weight$")


def _saved(state: Mapping[str, Any], pattern: re.Pattern[str]) -> torch.Tensor | None:
    return next((v for k, v in state.items() if pattern.search(k) and isinstance(v, torch.Tensor)), None)


def _expected(model: nn.Module, pattern: re.Pattern[str]) -> torch.Tensor | None:
    return next((v for k, v in model.state_dict().items() if pattern.search(k)), None)


def legacy_up_mode(model: nn.Module, kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"up_mode": "interp"}`` for a U-Net / Attention U-Net saved when interpolation + 3x3 conv was the default
    (before ``"transpose"``), ``{}`` otherwise.

    Bundles and runs written since the change record ``up_mode`` (:func:`resolved_kwargs`), so a missing key means an
    older save: the saved first up-sampling weight then decides, a ``(C_0, C_1, 3, 3[, 3])`` convolution against the
    transposed ``(C_1, C_0, *pool)`` the model has now; where both shapes coincide (a pool size of 3 with
    ``C_0 == C_1``) the older default is taken, as every save without the key predates the change.
    """
    decoder = getattr(model, "decoder", None)
    if "up_mode" in kwargs or getattr(decoder, "up_mode", None) != "transpose":
        return {}
    saved, now = _saved(state, _UPS0), _expected(model, _UPS0)
    if saved is None or now is None or saved.ndim < 4:
        return {}
    c = decoder.channels
    if tuple(saved.shape) == (c[0], c[1], *([3] * (saved.ndim - 2))) and (
        tuple(saved.shape) != tuple(now.shape) or tuple(now.shape[2:]) == (3,) * (saved.ndim - 2)
    ):
        return {"up_mode": "interp"}
    return {}


def legacy_gating_source(model: nn.Module, kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"gating_from": "bottleneck"}`` for a thesis-gate single-gating model saved when its gating signal came
    from the bottleneck's output, ``{}`` otherwise. As for :func:`legacy_up_mode`, saves since the change record
    ``gating_from``; without it the saved conv's input width decides (``channels[-1]`` then, the last max-pooling's
    ``channels[-2]`` now), and the older source is taken where the two widths are equal."""
    skips = getattr(model, "skips", None)
    if "gating_from" in kwargs or getattr(skips, "gating_from", None) != "pool":
        return {}
    saved = _saved(state, _GATING_SIGNAL)
    if saved is None or saved.ndim < 2 or saved.shape[1] != skips.channels[-1]:
        return {}
    return {"gating_from": "bottleneck"}


_OKTAY_GATE_OUT = re.compile(r"(^|\.)gates\.\d+\.gates\.\d+\.out\.")


def legacy_gate_style(model: nn.Module, kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"gate_style": "oktay", "gate_init": "open"}`` for a model saved with a thesis preset before the presets
    took the thesis gate: the model built now has the thesis gate (no output transform) where the saved gates have
    Oktay's output transform (``...gates.N.gates.M.out.*``); ``{}`` otherwise."""
    skips = getattr(model, "skips", None)
    if "gate_style" in kwargs or getattr(skips, "gate_style", None) != "thesis":
        return {}
    if not any(_OKTAY_GATE_OUT.search(k) for k in state):
        return {}
    return {"gate_style": "oktay", "gate_init": "open"}


def resolved_kwargs(model: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the defaults that changed once (``up_mode``, ``gating_from``) written out from ``model``, so
    that a saved model names them and rebuilds the same under any later default."""
    out = dict(kwargs)
    takes = inspect.signature(type(model).__init__).parameters
    decoder, skips = getattr(model, "decoder", None), getattr(model, "skips", None)
    if "up_mode" in takes and "up_mode" not in out and getattr(decoder, "up_mode", None):
        out["up_mode"] = decoder.up_mode
    if "gating_from" in takes and "gating_from" not in out and getattr(skips, "gating_from", None):
        out["gating_from"] = skips.gating_from
    return out


def legacy_model_kwargs(
    model: nn.Module, name: str, kwargs: Mapping[str, Any], state: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The model arguments that rebuild ``model`` (built from ``name`` and ``kwargs``) as the saved ``state`` was
    trained, or None when it already is."""
    if not isinstance(state, Mapping):
        return None
    # an Oktay-gate save rebuilds with Oktay's gate, whose single gating takes the bottleneck anyway: the thesis
    # gating-source check does not apply to it
    extra = legacy_gate_style(model, kwargs, state) or legacy_gating_source(model, kwargs, state)
    extra = {**extra, **legacy_up_mode(model, kwargs, state)}
    if not extra:
        return None
    log.info("%s: saved under earlier defaults; loading it as trained (%s)", name,
             ", ".join(f"{k}={v!r}" for k, v in extra.items()))  # fmt: skip
    return {**kwargs, **extra}
