"""Building blocks shared by the nets (each with its own tests), and the registry of conv blocks by name."""

from agseg.blocks.attention_gate import AttentionGateBlock, GridAttentionGate
from agseg.blocks.conv import ConvNormAct, DoubleConv, Resize, UpConv
from agseg.blocks.registry import get_block, list_blocks, make_block, register_block

__all__ = [
    "AttentionGateBlock",
    "ConvNormAct",
    "DoubleConv",
    "GridAttentionGate",
    "Resize",
    "UpConv",
    "get_block",
    "list_blocks",
    "make_block",
    "register_block",
]
