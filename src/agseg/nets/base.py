"""The net contract: what training, inference and the CLI may rely on, written down once.

Every registered net derives from :class:`Net` (segmentation nets from :class:`SegmentationNet`, classifiers from
:class:`ClassificationNet`). Code outside ``agseg.nets`` reads a net's properties through the helpers below
(:func:`spatial_dims_of`, :func:`min_input_shape_of`, ...), which also give sensible answers for a plain
``nn.Module`` a user brings (no ``getattr`` probes scattered through the package).

Contract:
    ``task``: ``"segmentation"`` or ``"classification"`` (class attribute).
    ``spatial_dims``: 2 or 3.
    ``in_channels``, ``out_channels``: image channels in, output channels (classes; 1 for a sigmoid output).
    ``deep_supervision``: in training mode ``forward`` returns a list of outputs, main output first.
    ``min_input_shape``: the smallest spatial size per axis the net accepts (``min_input_size``: its maximum).
    ``forward_with_attention(x) -> (output, maps)``: ``maps`` maps gate names to ``(B, heads, *grid)`` in [0, 1];
    empty for a net without gates.
    ``pruning_levels``, ``prune(level)``: the levels a net can be pruned to at inference (ANU-Net, seed 002) and a
    new, smaller standalone net that computes only the level-``level`` output; empty / a ``ValueError`` for a net
    that cannot be pruned. :func:`prune_model` and :func:`pruning_levels_of` also take wrapped nets.

Parameter names of older layouts: a net whose modules were renamed lists ``(pattern, replacement)`` regular
expressions in :attr:`Net.legacy_renames`; :meth:`Net.legacy_keys` applies them, and every ``load_state_dict``
applies them first (a state-dict pre-hook, so this also works with the net wrapped in ``DataParallel`` or
``torch.compile``). Code that matches tensors by name itself (weight transfer) calls :func:`upgrade_state_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

__all__ = [
    "ClassificationNet",
    "Net",
    "Output",
    "SegmentationNet",
    "has_attention",
    "main_output",
    "min_input_shape_of",
    "prune_model",
    "pruning_levels_of",
    "spatial_dims_of",
    "task_of",
    "unwrap",
    "upgrade_state_dict",
    "uses_deep_supervision",
]

Output = torch.Tensor | list[torch.Tensor]

TASKS = ("segmentation", "classification")

V = TypeVar("V")


class Net(nn.Module):
    """Base class of every agseg net: the attributes of the contract (see the module docstring)."""

    task: ClassVar[str] = "segmentation"
    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 1
    deep_supervision: bool = False
    #: ``(pattern, replacement)`` regular expressions (``re.sub`` syntax, anchored by the pattern) that turn a
    #: parameter name of an older layout of this net into the current one; the first matching pattern wins.
    #: They must leave current names alone, since every ``load_state_dict`` applies them.
    legacy_renames: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._register_load_state_dict_pre_hook(_rename_legacy_keys, with_module=True)

    def legacy_keys(self, state_dict: Mapping[str, V], prefix: str = "") -> dict[str, V]:
        """``state_dict`` with names of older layouts renamed to this net's (current names pass unchanged).

        Args:
            state_dict: parameter and buffer tensors by name.
            prefix: only names starting with ``prefix`` (the net's own prefix inside a larger module) are renamed;
                the prefix itself is kept.

        A name whose new form is already in ``state_dict`` is left as it is (nothing is overwritten).
        """
        out: dict[str, V] = {}
        for key, value in state_dict.items():
            new = self._legacy_name(key, prefix)
            out[new if new not in state_dict else key] = value
        return out

    def _legacy_name(self, key: str, prefix: str) -> str:
        if not key.startswith(prefix):
            return key
        rest = key[len(prefix) :]
        for pattern, replacement in self.legacy_renames:
            renamed, n = re.subn(pattern, replacement, rest, count=1)
            if n:
                return prefix + renamed
        return key

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """Smallest spatial size per axis (array order); 1 per axis unless a net says otherwise."""
        return (1,) * self.spatial_dims

    @property
    def min_input_size(self) -> int:
        """The largest entry of :attr:`min_input_shape` (one number for isotropic nets)."""
        return max(self.min_input_shape)

    @property
    def has_gates(self) -> bool:
        """True when :meth:`forward_with_attention` returns attention maps (the net has attention gates)."""
        return False

    def forward_with_attention(self, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
        """``(forward(x), maps)``; the base class has no gates, so ``maps`` is empty."""
        return self(x), {}

    @property
    def pruning_levels(self) -> tuple[int, ...]:
        """The levels :meth:`prune` accepts, ascending; empty for a net that cannot be pruned (the base class)."""
        return ()

    def prune(self, level: int) -> Net:
        """A new standalone net that computes only the level-``level`` output (see the nets that support it).

        Raises:
            ValueError: always for a net without :attr:`pruning_levels`.
        """
        raise ValueError(f"{type(self).__name__} cannot be pruned (no pruning levels); ANU-Net (anunet) can")


class SegmentationNet(Net):
    """A net whose output is per-voxel logits ``(B, out_channels, *spatial)`` (a list with deep supervision)."""

    task: ClassVar[str] = "segmentation"


class ClassificationNet(Net):
    """A net whose output is per-image logits ``(B, out_channels)`` (a list with deep-supervised heads)."""

    task: ClassVar[str] = "classification"


def _rename_legacy_keys(module: Net, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load-state-dict pre-hook: rename keys of older layouts in place (see :attr:`Net.legacy_renames`)."""
    if not module.legacy_renames:
        return
    for key in list(state_dict):
        new = module._legacy_name(key, prefix)
        if new != key and new not in state_dict:
            state_dict[new] = state_dict.pop(key)


def upgrade_state_dict(model: nn.Module, state_dict: Mapping[str, V]) -> dict[str, V]:
    """``state_dict`` with parameter names of older layouts renamed to ``model``'s (see :meth:`Net.legacy_keys`).

    For code that matches tensors by name without ``load_state_dict`` (weight transfer); a plain module gets the
    names unchanged.
    """
    net = unwrap(model)
    return net.legacy_keys(state_dict) if isinstance(net, Net) else dict(state_dict)


def main_output(out: Any) -> torch.Tensor:
    """The main output of a forward pass: the tensor itself, or the first of a deep-supervision list."""
    return out if isinstance(out, torch.Tensor) else out[0]


def task_of(model: nn.Module) -> str:
    """``"segmentation"`` or ``"classification"`` (a plain module counts as segmentation)."""
    return getattr(unwrap(model), "task", "segmentation")


def spatial_dims_of(model: nn.Module, default: int | None = None) -> int | None:
    """The net's spatial dimensions, or ``default`` for a module that does not say."""
    value = getattr(unwrap(model), "spatial_dims", None)
    return int(value) if value is not None else default


def min_input_shape_of(model: nn.Module, spatial_dims: int) -> tuple[int, ...]:
    """Smallest accepted spatial size per axis (1 per axis for a module that does not say)."""
    net = unwrap(model)
    if isinstance(net, Net):
        shape = tuple(int(s) for s in net.min_input_shape)
        return shape if len(shape) == spatial_dims else (max(shape),) * spatial_dims
    size = getattr(net, "min_input_size", 1)
    if isinstance(size, Sequence):
        return tuple(int(s) for s in size)
    return (int(size),) * spatial_dims


def uses_deep_supervision(model: nn.Module) -> bool:
    """True when the net returns a list of outputs in training mode."""
    return bool(getattr(unwrap(model), "deep_supervision", False))


def has_attention(model: nn.Module) -> bool:
    """True when the net returns attention maps: an agseg net with gates (:attr:`Net.has_gates`), or a plain module
    with a ``forward_with_attention`` method."""
    net = unwrap(model)
    if isinstance(net, Net):
        return bool(net.has_gates)
    return callable(getattr(unwrap(model), "forward_with_attention", None))


def pruning_levels_of(model: nn.Module) -> tuple[int, ...]:
    """The levels ``model`` can be pruned to (:attr:`Net.pruning_levels`); empty for other modules."""
    net = unwrap(model)
    return tuple(net.pruning_levels) if isinstance(net, Net) else ()


def prune_model(model: nn.Module, level: int) -> Net:
    """``model.prune(level)`` for a net inside any wrapper: a new standalone net for the level-``level`` output.

    Raises:
        ValueError: the net cannot be pruned, or not to ``level`` (the message lists the levels it has).
    """
    net = unwrap(model)
    if not isinstance(net, Net) or not net.pruning_levels:
        raise ValueError(f"{type(net).__name__} cannot be pruned (no pruning levels); ANU-Net (anunet) can")
    return net.prune(level)


def unwrap(model: nn.Module) -> nn.Module:
    """The net inside a ``DistributedDataParallel``/``DataParallel`` wrapper or a ``torch.compile`` module."""
    seen = 0
    while seen < 8:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = inner
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            break
        seen += 1
    return model
