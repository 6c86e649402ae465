"""Building blocks shared by the nets (each with its own tests), and the registry of conv blocks by name."""

from agseg.blocks.attention_gate import AttentionGateBlock, GridAttentionGate
from agseg.blocks.conv import ConvNormAct, DoubleConv, Resize, UpConv
from agseg.blocks.group_attention import ResGroupAttentionBlock
from agseg.blocks.registry import get_block, list_blocks, make_block, register_block
from agseg.blocks.squeeze_excite import SqueezeExcitation

__all__ = [
    "AttentionGateBlock",
    "ConvNormAct",
    "DoubleConv",
    "GridAttentionGate",
    "ResGroupAttentionBlock",
    "Resize",
    "SqueezeExcitation",
    "UpConv",
    "get_block",
    "list_blocks",
    "make_block",
    "register_block",
]
