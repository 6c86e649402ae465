"""Conv blocks by name, so a net takes ``block="double_conv"`` and a new architecture registers its own block.

A block factory is called as ``factory(spatial_dims, in_channels, out_channels, norm=norm, **kwargs)`` and returns
a module ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` that keeps the grid (the encoder and
decoder do the down- and up-sampling). The classes in :mod:`agseg.blocks.conv` have that signature, so a class is
its own factory::

    @register_block("my_block")
    class MyBlock(nn.Module):
        def __init__(self, spatial_dims, in_channels, out_channels, norm="batch"): ...

    net = create_model("unet", block="my_block")

Registered here: ``"double_conv"`` (:class:`~agseg.blocks.conv.DoubleConv`, the U-Net block) and ``"resgroup"``
(:class:`~agseg.blocks.group_attention.ResGroupAttentionBlock`, FocusNet++'s residual group attention block).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from agseg.blocks.conv import DoubleConv
from agseg.blocks.group_attention import ResGroupAttentionBlock

__all__ = ["BlockFactory", "get_block", "list_blocks", "make_block", "register_block", "unregister_block"]

BlockFactory = Callable[..., nn.Module]

_BLOCKS: dict[str, BlockFactory] = {}


def register_block(name: str, factory: BlockFactory | None = None):
    """Register ``factory`` under ``name``; usable as a decorator (``@register_block("name")``) or as a call.

    Raises:
        ValueError: if ``name`` is already registered or is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a block name must be a non-empty string, got {name!r}")

    def _add(f: BlockFactory) -> BlockFactory:
        if name in _BLOCKS:
            raise ValueError(f"block {name!r} is already registered")
        if not callable(f):
            raise ValueError(f"block {name!r}: the factory must be callable, got {type(f).__name__}")
        _BLOCKS[name] = f
        return f

    return _add(factory) if factory is not None else _add


def unregister_block(name: str) -> None:
    """Remove ``name`` from the registry (for tests that register a throw-away block); unknown names are ignored."""
    _BLOCKS.pop(name, None)


def list_blocks() -> list[str]:
    """Names of the registered blocks, sorted."""
    return sorted(_BLOCKS)


def get_block(name: str) -> BlockFactory:
    """The factory registered as ``name``.

    Raises:
        KeyError: for an unknown name; the message lists the registered blocks.
    """
    try:
        return _BLOCKS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown block {name!r}; registered blocks: {', '.join(list_blocks())}") from None


def make_block(
    block: str | BlockFactory,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str = "batch",
    **kwargs: Any,
) -> nn.Module:
    """Build one block: ``block`` is a registered name or a factory with the signature above.

    Shapes: the module maps ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.
    """
    factory = get_block(block) if isinstance(block, str) else block
    if not callable(factory):
        raise KeyError(f"block must be a registered name or a callable, got {block!r}; registered: {list_blocks()}")
    return factory(spatial_dims, in_channels, out_channels, norm=norm, **kwargs)


register_block("double_conv", DoubleConv)
register_block("resgroup", ResGroupAttentionBlock)
