"""Parameter counts, forward FLOPs and output shapes of registered nets, and the seed 001 Table 1 comparison.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products;
one multiply-add counts as 2 FLOPs) on the ``meta`` device, so even a 160x160x96 3D input costs no
memory or compute.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from agseg.nets.registry import create_model

__all__ = ["ModelSummary", "count_flops", "count_parameters", "paper_table1", "parse_shape", "summarize"]


@dataclass
class ModelSummary:
    """Size and cost of one net for one input shape."""

    name: str
    params: int
    input_shape: tuple[int, ...] | None = None
    flops: int | None = None
    output_shapes: list[tuple[int, ...]] | None = None
    train_output_shapes: list[tuple[int, ...]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of a built ``model`` in eval mode for an input of ``input_shape`` ``(B, C, *spatial)``, counted
    on a ``meta``-device copy (the model itself is left as it is; nothing is computed). For nets that exist only as
    instances, e.g. ``ANUNet.prune(level)``; registered nets by name: :func:`summarize`."""
    net = copy.deepcopy(model).to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.empty(tuple(int(s) for s in input_shape), device="meta"))
    return int(counter.get_total_flops())


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1x1x160x160x96"`` (or comma-separated) into a tuple; a clear ``ValueError`` otherwise."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise ValueError(f"cannot read input shape {text!r}: use B x C x spatial..., e.g. 1x1x160x160x96") from None
    if len(shape) < 3 or min(shape) < 1:
        raise ValueError(f"input shape {text!r} needs batch, channels and 1-3 spatial sizes, all >= 1")
    return shape


def _shapes(out: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [tuple(o.shape) for o in outs]


def summarize(name: str, input_shape: Sequence[int] | None = None, **kwargs: Any) -> ModelSummary:
    """Parameters of ``create_model(name, **kwargs)``; with ``input_shape`` also forward FLOPs (eval mode) and
    output shapes in eval and training mode. ``spatial_dims`` and ``in_channels`` are taken from the input shape
    unless given."""
    if input_shape is not None:
        input_shape = tuple(int(s) for s in input_shape)
        kwargs.setdefault("spatial_dims", len(input_shape) - 2)
        kwargs.setdefault("in_channels", input_shape[1])
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    summary = ModelSummary(name=name, params=count_parameters(model))
    if input_shape is None:
        return summary
    summary.input_shape = input_shape
    model.eval()
    with torch.device("meta"), torch.no_grad():
        x = torch.empty(input_shape)
        with FlopCounterMode(display=False) as counter:
            out = model(x)
        summary.flops = int(counter.get_total_flops())
        summary.output_shapes = _shapes(out)
        model.train()
        summary.train_output_shapes = _shapes(model(x))
    return summary


# seed 001 Table 1: number of parameters and inference time for a 160x160x96 input.
PAPER_TABLE1 = {"unet": 5.88e6, "attention_unet": 6.40e6, "input": (1, 1, 160, 160, 96)}


def paper_table1() -> list[dict[str, Any]]:
    """Our ``unet_ct`` and ``attention_unet_ct`` (3D, widths 16-32-64-128-256, 1 input channel, 4 classes,
    multi gating, deep supervision) next to seed 001 Table 1, with FLOPs for a 1x1x160x160x96 input."""
    rows = []
    ours = {k: summarize(f"{k}_ct", PAPER_TABLE1["input"]) for k in ("unet", "attention_unet")}
    for key, s in ours.items():
        rows.append(
            {
                "model": s.name,
                "params": s.params,
                "paper_params": PAPER_TABLE1[key],
                "flops": s.flops,
                "ratio_to_unet": s.params / ours["unet"].params,
                "paper_ratio_to_unet": PAPER_TABLE1[key] / PAPER_TABLE1["unet"],
            }
        )
    return rows
