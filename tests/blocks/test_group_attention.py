"""FocusNet++'s residual group attention block (seed 004 sec. 2.1) and the squeeze-and-excitation block.

Each test checks one statement of the paper, or one choice the block's docstring makes where the paper is not
explicit: shapes in 2D/3D, the residual identity, which group the attention of a group is learned from, the
receptive field of the attention (3x3 convolutions, a 1x1 before the sigmoid), the permutation properties of the
1D-convolution embedding, the SE re-calibration, and a parameter count by hand.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agseg.blocks import ResGroupAttentionBlock, SqueezeExcitation
from agseg.blocks.registry import get_block, make_block
from agseg.nets.summary import count_parameters


def _block(spatial_dims: int = 2, c_in: int = 8, c_out: int = 8, **kw) -> ResGroupAttentionBlock:
    torch.manual_seed(0)
    return ResGroupAttentionBlock(spatial_dims, c_in, c_out, **kw)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("c_in", "c_out"), [(8, 8), (3, 8), (16, 8)])
def test_shapes_train_and_eval(spatial_dims: int, c_in: int, c_out: int):
    block = _block(spatial_dims, c_in, c_out)
    spatial = (9, 6) if spatial_dims == 2 else (5, 4, 6)
    x = torch.randn(2, c_in, *spatial)
    assert block.train()(x).shape == (2, c_out, *spatial)
    with torch.no_grad():
        assert block.eval()(x).shape == (2, c_out, *spatial)
    assert isinstance(block.shortcut, nn.Identity) == (c_in == c_out)


def test_registered_as_resgroup_and_built_by_name():
    assert get_block("resgroup") is ResGroupAttentionBlock
    block = make_block("resgroup", 3, 4, 8, norm="instance")
    assert isinstance(block, ResGroupAttentionBlock)
    assert any(isinstance(m, nn.InstanceNorm3d) for m in block.modules())
    assert block(torch.randn(1, 4, 4, 4, 4)).shape == (1, 8, 4, 4, 4)


def test_four_groups_two_pairs_by_default():
    block = _block(c_out=32)
    assert block.groups == 4 and block.pairs == 2 and block.group_channels == 8
    h = torch.randn(1, 32, 5, 5)
    groups = block.split(h)
    assert [g.shape[1] for g in groups] == [8, 8, 8, 8]
    torch.testing.assert_close(torch.cat(groups, 1), h, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False])
def test_closed_branch_makes_the_block_an_identity(train: bool):
    # The residual connection is a plain addition (no activation after it): with the branch's last norm zeroed
    # the block returns its input exactly, in training and eval mode.
    block = _block(c_in=8, c_out=8).train(train)
    nn.init.zeros_(block.proj_out[1].weight)
    nn.init.zeros_(block.proj_out[1].bias)
    x = torch.randn(2, 8, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
        # with a projection shortcut the block returns the projection alone
        proj = _block(c_in=4, c_out=8).train(train)
        nn.init.zeros_(proj.proj_out[1].weight)
        nn.init.zeros_(proj.proj_out[1].bias)
        x4 = torch.randn(2, 4, 7, 9)
        torch.testing.assert_close(proj(x4), proj.shortcut(x4), rtol=0, atol=0)


def test_closed_attention_closes_the_whole_branch():
    # A = 0 (sigmoid of a very negative logit) zeroes every attended group; with freshly initialised norms in
    # eval mode (running mean 0, variance 1, no bias before them) nothing reaches the output: the attention gates
    # every path through the branch, there is no ungated side path.
    block = _block().eval()
    for att in block.attention:
        nn.init.zeros_(att.gate.weight)
        nn.init.constant_(att.gate.bias, -200.0)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        _, maps = block.attend(block.proj_in(x))
        assert all(float(m.max()) == 0.0 for m in maps)
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_attention_of_a_group_is_learned_from_its_left_neighbour_only():
    block = _block(c_out=16).eval()  # 4 groups of 4 channels: pairs (0 -> 1) and (2 -> 3)
    h = torch.randn(2, 16, 10, 10)
    d = block.group_channels

    def perturbed(group: int) -> torch.Tensor:
        out = h.clone()
        out[:, group * d : (group + 1) * d] += torch.randn(2, d, 10, 10)
        return out

    with torch.no_grad():
        att, maps = block.attend(h)
        for group in range(4):
            att_p, maps_p = block.attend(perturbed(group))
            pair = group // 2
            # the attention of pair p (applied to group 2p+1) changes iff its attention group 2p changes
            moved = not torch.equal(maps_p[pair], maps[pair])
            assert moved == (group % 2 == 0)
            if moved:
                assert not torch.allclose(maps_p[pair], maps[pair])
            # the attended features of the pair change with either of its groups ...
            assert not torch.allclose(att_p[pair], att[pair])
            # ... and the other pair sees nothing of it
            other = 1 - pair
            assert torch.equal(maps_p[other], maps[other]) and torch.equal(att_p[other], att[other])


def test_attention_is_per_pixel_with_a_5x5_receptive_field():
    # two 3x3 convolutions then a 1x1 before the sigmoid: a change at one pixel of the attention group moves the
    # per-pixel weights within +-2 pixels and nowhere else, and the weights are per pixel AND per channel.
    block = _block(c_out=16).eval()
    h = torch.randn(1, 16, 15, 15)
    h2 = h.clone()
    h2[0, 0, 7, 7] += 5.0
    with torch.no_grad():
        a, b = block.attend(h)[1][0], block.attend(h2)[1][0]
    changed = (a - b).abs().amax(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert rows.min() == 5 and rows.max() == 9 and cols.min() == 5 and cols.max() == 9
    assert a.shape == (1, block.group_channels, 15, 15)
    assert a.min() > 0 and a.max() < 1


def test_embedding_is_pointwise_so_it_commutes_with_any_voxel_permutation():
    block = _block(c_out=16)
    d = block.group_channels
    a = torch.randn(2, d, 6, 7)
    perm = torch.randperm(6 * 7)

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[:, :, perm].reshape(t.shape)

    for train in (True, False):  # batch statistics are permutation invariant too
        block.train(train)
        with torch.no_grad():
            e = block.embed_groups([a])[0]
            ep = block.embed_groups([permute(a)])[0]
        assert e.shape == (2, 2 * d, 6, 7)  # "twice the number of filters"
        torch.testing.assert_close(ep, permute(e), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_shared_embedding_treats_every_pair_alike(shared: bool):
    # Our reading of "permutation invariant": one embedding for every pair, so permuting the pairs permutes the
    # embeddings; the authors' code (shared_embedding=False) has one per pair, and the property fails.
    block = _block(c_out=16, shared_embedding=shared).eval()
    d = block.group_channels
    a0, a1 = torch.randn(1, d, 5, 5), torch.randn(1, d, 5, 5)
    with torch.no_grad():
        e01 = block.embed_groups([a0, a1])
        e10 = block.embed_groups([a1, a0])
    swapped = torch.allclose(e01[0], e10[1]) and torch.allclose(e01[1], e10[0])
    assert swapped == shared
    assert len(block.embed) == (1 if shared else block.pairs)


def test_squeeze_excitation_scales_each_channel_by_a_global_weight():
    torch.manual_seed(0)
    se = SqueezeExcitation(2, 8, reduction=4)
    assert se.hidden == 2
    x = torch.randn(3, 8, 6, 5)
    with torch.no_grad():
        s = se.scale(x)
        y = se(x)
    assert s.shape == (3, 8, 1, 1) and s.min() > 0 and s.max() < 1
    torch.testing.assert_close(y, x * s)
    # the weights depend on the channel means only: invariant to a permutation of the voxels
    perm = torch.randperm(30)
    with torch.no_grad():
        sp = se.scale(x.flatten(2)[:, :, perm].reshape(x.shape))
    torch.testing.assert_close(sp, s, rtol=1e-5, atol=1e-6)
    assert SqueezeExcitation(3, 4, reduction=16).hidden == 1  # never below one channel


def test_se_is_applied_in_the_block():
    block = _block().eval()
    seen = {}
    block.se.register_forward_hook(lambda _m, args, out: seen.update(inp=args[0], out=out))
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
        torch.testing.assert_close(y, x + seen["out"])
        torch.testing.assert_close(seen["out"], seen["inp"] * block.se.scale(seen["inp"]))


def test_parameter_count_by_hand():
    # 8 -> 8 channels, 4 groups of d = 2, SE reduction 4 (hidden 2), batch norm (2 parameters per channel);
    # convolutions directly followed by a norm have no bias.
    d = 2
    proj_in = 8 * 8 + 8
    attention = (2 * d) + (d * d * 9) + (2 * d) + (d * d * 9 + d) + (d * d + d)  # BN conv BN conv+b gate+b
    features = (2 * d) + (d * d * 9) + (2 * d) + (d * d * 9 + d)
    embed = d * 2 * d + 2 * 2 * d  # conv d -> 2d, BN(2d)
    proj_out = 8 * 8 + 2 * 8
    se = (8 * 2 + 2) + (2 * 8 + 8)
    expected = proj_in + 2 * attention + 2 * features + embed + proj_out + se
    assert expected == 550
    assert count_parameters(_block(c_in=8, c_out=8, se_reduction=4)) == expected
    assert count_parameters(_block(c_in=8, c_out=8, se_reduction=4, shared_embedding=False)) == expected + embed
    # a projection shortcut: 1x1 conv 4 -> 8 without bias + BN(8); the input conv is 4 -> 8
    projected = expected - proj_in + (4 * 8 + 8) + (4 * 8 + 2 * 8)
    assert count_parameters(_block(c_in=4, c_out=8, se_reduction=4)) == projected


def test_norm_none_gives_every_conv_a_bias():
    block = _block(norm="none")
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert block(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_bad_groups_and_widths_raise_clear_errors():
    with pytest.raises(ValueError, match="even"):
        ResGroupAttentionBlock(2, 8, 9, groups=3)
    with pytest.raises(ValueError, match="multiple of groups"):
        ResGroupAttentionBlock(2, 8, 10)
    with pytest.raises(ValueError, match="multiple of groups"):
        ResGroupAttentionBlock(2, 8, 2)


def test_every_parameter_gets_a_gradient():
    block = _block(3, 4, 8).train()
    x = torch.randn(2, 4, 4, 5, 6)
    (block(x) * torch.randn(2, 8, 4, 5, 6)).sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
