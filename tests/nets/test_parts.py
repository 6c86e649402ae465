"""The parts nets are composed of: encoder (with per-axis pooling), decoder with a skip hook, the net contract."""

from __future__ import annotations

import pytest
import torch

import agseg
from agseg.nets.base import ClassificationNet, SegmentationNet, min_input_shape_of
from agseg.nets.parts import AttentionSkips, DeepSupervisionHead, Encoder, UNetDecoder, normalize_pool_sizes
from agseg.nets.registry import get_model_spec
from agseg.nets.unet import DeepSupervisionHead as HeadFromUNet

SEG_MODELS = agseg.list_models(task="segmentation")
ANISO = [(1, 2, 2), (1, 2, 2), (2, 2, 2)]


def tiny(name: str, spatial_dims: int) -> dict:
    depth = len(get_model_spec(name).defaults.get("channels", (64, 128, 256, 512, 1024)))
    return {"spatial_dims": spatial_dims, "channels": tuple(4 * 2**i for i in range(depth))}


def test_head_still_importable_from_unet():
    assert HeadFromUNet is DeepSupervisionHead


@pytest.mark.parametrize("name", agseg.list_models())
def test_every_registered_model_is_a_segmentation_net(name: str):
    depth = len(get_model_spec(name).defaults.get("channels", (64, 128, 256, 512, 1024)))
    # widths a multiple of 4: FocusNet++'s blocks split every width into 4 filter groups
    model = agseg.create_model(name, channels=tuple(4 * 2**i for i in range(depth)))
    # classifiers (Sononet, AG-Sononet) have their own suite: tests/nets/test_sononet.py
    kind = ClassificationNet if get_model_spec(name).task == "classification" else SegmentationNet
    assert isinstance(model, kind)
    assert model.task == get_model_spec(name).task


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SEG_MODELS)
def test_min_input_shape_is_the_smallest_accepted_input(name: str, spatial_dims: int):
    kw = tiny(name, spatial_dims)
    model = agseg.create_model(name, **kw).eval()
    depth = len(kw["channels"])
    assert model.min_input_shape == (2 ** (depth - 1),) * spatial_dims
    assert model.min_input_size == 2 ** (depth - 1)
    assert min_input_shape_of(model, spatial_dims) == model.min_input_shape
    with torch.no_grad():
        c = model.in_channels  # 1 for the U-Nets, 3 (RGB) for FocusNet++
        assert model(torch.randn(1, c, *model.min_input_shape)).shape[2:] == model.min_input_shape
        for axis in range(spatial_dims):
            shape = list(model.min_input_shape)
            shape[axis] -= 1
            with pytest.raises(ValueError, match="too small"):
                model(torch.randn(1, c, *shape))


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_per_axis_pooling_on_anisotropic_3d(name: str):
    channels = (4, 8, 16, 32)
    model = agseg.create_model(name, spatial_dims=3, channels=channels, pool_sizes=ANISO).eval()
    assert model.min_input_shape == (2, 8, 8)
    assert model.min_input_size == 8
    x = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        feats = model.encoder(x)
        out, maps = model.forward_with_attention(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(4, 32, 32), (4, 16, 16), (4, 8, 8), (2, 4, 4)]
    assert feats[-1].shape == (1, 32, 2, 4, 4)  # the bottleneck grid
    assert out.shape == (1, 1, 4, 32, 32)
    for key, alpha in maps.items():
        level = int(key.removeprefix("level"))
        assert alpha.shape[2:] == feats[level].shape[2:]
    # the smallest input along every axis works; one voxel less along axis 0 names that axis and its minimum
    with torch.no_grad():
        assert model(torch.randn(1, 1, 2, 8, 8)).shape == (1, 1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"axis 0 must be at least 2, got 1"):
        model(torch.randn(1, 1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"axis 2 must be at least 8, got 7"):
        model(torch.randn(1, 1, 4, 32, 7))


def test_isotropic_too_small_message_names_the_axis():
    model = agseg.create_model("unet", spatial_dims=2, channels=(4, 8, 16, 32))
    with pytest.raises(ValueError, match=r"every side must be at least 8 .*axis 1"):
        model(torch.randn(1, 1, 32, 7))


def test_gates_do_not_sub_sample_an_axis_that_is_not_pooled():
    # depth 1 with in-plane pooling only: a gate sub-sampling axis 0 by 2 could not run on it
    model = agseg.create_model(
        "attention_unet", spatial_dims=3, channels=(4, 8, 16), pool_sizes=[(1, 2, 2), (1, 2, 2)], gated_levels=(0, 1)
    ).eval()
    assert model.min_input_shape == (1, 4, 4)
    assert model.skips.gates["0"].gates[0].theta.stride == (1, 2, 2)
    with torch.no_grad():
        out, maps = model.forward_with_attention(torch.randn(2, 1, 1, 16, 12))
    assert out.shape == (2, 1, 1, 16, 12)
    assert maps["level0"].shape == (2, 1, 1, 16, 12) and maps["level1"].shape == (2, 1, 1, 8, 6)


def test_transposed_up_sampling_follows_the_pool_sizes():
    model = agseg.create_model("unet", spatial_dims=3, channels=(4, 8, 16, 32), pool_sizes=ANISO, up_mode="transpose")
    assert [up.conv.stride for up in model.decoder.ups] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    x = torch.randn(2, 1, 5, 17, 16)
    assert model.eval()(x).shape == (2, 1, 5, 17, 16)


def test_explicit_default_pooling_is_the_default_net():
    torch.manual_seed(3)
    a = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16)).eval()
    torch.manual_seed(3)
    b = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16), pool_sizes=[2, (2, 2)]).eval()
    x = torch.randn(1, 1, 19, 22)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_pool_sizes_from_json_lists_and_bad_ones():
    assert normalize_pool_sizes(3, 2, [[1, 2, 2], 3]) == ((1, 2, 2), (3, 3, 3))
    assert normalize_pool_sizes(2, 3, None) == ((2, 2),) * 3
    with pytest.raises(ValueError, match="one entry per down-sampling step"):
        agseg.create_model("unet", spatial_dims=3, channels=(4, 8, 16), pool_sizes=[2])
    with pytest.raises(ValueError, match=r"pool_sizes\[1\]"):
        agseg.create_model("unet", spatial_dims=3, channels=(4, 8, 16), pool_sizes=[2, (2, 2)])
    with pytest.raises(ValueError, match=r"pool_sizes\[0\]"):
        agseg.create_model("unet", spatial_dims=2, channels=(4, 8), pool_sizes=[0])


def test_decoder_skip_fn_changes_the_output_and_sees_levels_coarse_to_fine():
    channels = (4, 8, 16)
    enc, dec = Encoder(2, 1, channels).eval(), UNetDecoder(2, channels).eval()
    x = torch.randn(2, 1, 20, 17)
    seen: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []

    def identity(level, skip, coarse):
        seen.append((level, tuple(skip.shape), tuple(coarse.shape)))
        return skip, None

    def zeros(level, skip, coarse):
        return torch.zeros_like(skip), torch.full_like(skip[:, :1], 0.5)

    with torch.no_grad():
        feats = enc(x)
        plain = dec(feats)
        same = dec(feats, identity)
        maps: dict[str, torch.Tensor] = {}
        zeroed = dec(feats, zeros, attention=maps)
    assert [tuple(d.shape) for d in plain] == [(2, 4, 20, 17), (2, 8, 10, 8)]
    for p, s in zip(plain, same, strict=True):
        torch.testing.assert_close(p, s, rtol=0, atol=0)
    assert [s[0] for s in seen] == [1, 0]
    assert seen[0][2] == (2, 16, 5, 4) and seen[1][2] == (2, 8, 10, 8)  # bottleneck, then decoder level 1
    assert not torch.allclose(plain[0], zeroed[0]) and not torch.allclose(plain[1], zeroed[1])
    assert sorted(maps) == ["level0", "level1"]
    with pytest.raises(ValueError, match="3 feature maps"):
        dec(feats[:2])


def test_attention_skips_part_alone():
    channels = (4, 8, 16)
    skips = AttentionSkips(2, channels, gated_levels=(0, 1), gating="multi", heads=2)
    assert skips.heads == 2 and skips.gated_levels == (0, 1)
    assert [skips.gating_source(i) for i in (0, 1)] == ["decoder1", "bottleneck"]
    enc, dec = Encoder(2, 1, channels), UNetDecoder(2, channels)
    feats = enc(torch.randn(2, 1, 16, 16))
    maps: dict[str, torch.Tensor] = {}
    out = dec(feats, skips.bind(feats[-1]), attention=maps)
    assert out[0].shape == (2, 4, 16, 16)
    assert maps["level0"].shape == (2, 2, 16, 16) and maps["level1"].shape == (2, 2, 8, 8)
    with pytest.raises(ValueError, match="unknown gating"):
        AttentionSkips(2, channels, gating="double")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_resize_decoder_concatenates_the_interpolated_coarse_features(spatial_dims: int):
    """up_mode="resize" (the authors' UnetUp3_CT): no up-sampling conv; block l takes C_l + C_{l+1} channels and
    sees [skip, interpolate(coarse)] exactly."""
    c = (4, 8, 16)
    dec = UNetDecoder(spatial_dims, c, up_mode="resize")
    assert sum(p.numel() for p in dec.ups.parameters()) == 0
    assert [dec.blocks[i][0][0].in_channels for i in range(2)] == [4 + 8, 8 + 16]
    size = (16,) * spatial_dims
    feats = [torch.randn(1, ch, *(s // 2**i for s in size)) for i, ch in enumerate(c)]
    seen = []
    handle = dec.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    outs = dec(feats)
    handle.remove()
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    up = torch.nn.functional.interpolate(feats[2], size=feats[1].shape[2:], mode=mode, align_corners=False)
    assert torch.equal(seen[0], torch.cat([feats[1], up], dim=1))
    assert [tuple(o.shape) for o in outs] == [(1, 4, *size), (1, 8, *(s // 2 for s in size))]
    with pytest.raises(ValueError, match="merge"):
        UNetDecoder(spatial_dims, c, up_mode="resize", merge="add")
    with pytest.raises(ValueError, match="unknown up-sampling"):
        UNetDecoder(spatial_dims, c, up_mode="bicubic")
