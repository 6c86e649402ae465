"""The block registry: blocks by name, clear errors, and a registered block really used by the nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import agseg
from agseg.blocks.conv import DoubleConv
from agseg.blocks.registry import get_block, list_blocks, make_block, register_block, unregister_block
from agseg.layers import Conv


def test_double_conv_is_registered_and_built_by_name():
    assert "double_conv" in list_blocks()
    assert get_block("double_conv") is DoubleConv
    block = make_block("double_conv", 3, 2, 5, norm="instance")
    assert isinstance(block, DoubleConv)
    assert block(torch.randn(1, 2, 4, 4, 4)).shape == (1, 5, 4, 4, 4)
    assert isinstance(block[0][1], nn.InstanceNorm3d)


def test_unknown_block_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"unknown block 'resgroupp'.*registered blocks: .*double_conv"):
        get_block("resgroupp")
    with pytest.raises(KeyError, match="double_conv"):
        agseg.create_model("unet", spatial_dims=2, channels=(4, 8), block="no_such_block")
    with pytest.raises(KeyError, match="double_conv"):
        agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8), block="no_such_block")


def test_duplicate_or_bad_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_block("double_conv", DoubleConv)
    with pytest.raises(ValueError, match="non-empty string"):
        register_block("", DoubleConv)
    with pytest.raises(ValueError, match="callable"):
        register_block("not_callable_block", 3)  # type: ignore[arg-type]
    assert "not_callable_block" not in list_blocks()


class CountingBlock(nn.Module):
    """A test block: a single conv + ReLU that counts its forward calls."""

    calls = 0

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.norm = norm
        self.conv = Conv[spatial_dims](in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingBlock.calls += 1
        return torch.relu(self.conv(x))


@pytest.fixture
def counting_block():
    register_block("test_counting", CountingBlock)
    CountingBlock.calls = 0
    yield "test_counting"
    unregister_block("test_counting")


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_registered_block_is_used_by_the_net(counting_block: str, name: str):
    channels = (4, 8, 16, 32)
    net = agseg.create_model(name, spatial_dims=2, channels=channels, norm="instance", block=counting_block).eval()
    blocks = [m for m in net.modules() if isinstance(m, CountingBlock)]
    # one block per encoder level, one per decoder level; no DoubleConv left
    assert len(blocks) == len(channels) + len(channels) - 1
    assert not any(isinstance(m, DoubleConv) for m in net.modules())
    assert all(b.norm == "instance" for b in blocks)
    # decoder blocks take the concatenation (2 * width) in
    assert [b.conv.in_channels for b in net.decoder.blocks] == [2 * c for c in channels[:-1]]
    with torch.no_grad():
        y = net(torch.randn(1, 1, 16, 24))
    assert y.shape == (1, 1, 16, 24)
    assert CountingBlock.calls == len(blocks)


def test_a_factory_function_works_as_block():
    def factory(spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch") -> nn.Module:
        return DoubleConv(spatial_dims, in_channels, out_channels, mid_channels=1, norm=norm)

    net = agseg.create_model("unet", spatial_dims=2, channels=(4, 8), block=factory)
    assert all(b[0][0].out_channels == 1 for b in net.encoder.blocks)
