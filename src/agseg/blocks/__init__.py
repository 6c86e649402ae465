"""Building blocks shared by the nets (each with its own tests)."""

from agseg.blocks.attention_gate import AttentionGateBlock, GridAttentionGate
from agseg.blocks.conv import ConvNormAct, DoubleConv, UpConv

__all__ = ["AttentionGateBlock", "ConvNormAct", "DoubleConv", "GridAttentionGate", "UpConv"]
