"""Checkpoints with the parameter names from before the nets were split into parts still load, exactly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import agseg
from agseg.nets.base import upgrade_state_dict
from agseg.nets.compat import legacy_model_kwargs
from agseg.training.checkpoint import transfer_weights

SHIPPED = Path(agseg.__file__).resolve().parent / "assets" / "models"


def to_old_layout(key: str) -> str:
    """The pre-parts name of a current parameter name, written out by hand (independent of the nets' table)."""
    head, _, rest = key.partition(".")
    sub, _, tail = rest.partition(".")
    if head == "encoder" and sub == "blocks":
        return f"encoder.{tail}"
    if head == "decoder" and sub == "ups":
        return f"ups.{tail}"
    if head == "decoder" and sub == "blocks":
        return f"decoder.{tail}"
    if head == "skips":
        return rest  # gating_signal.* and gates.<level>.*
    return key


CASES = [
    ("unet", {"spatial_dims": 2, "channels": (4, 8, 16), "deep_supervision": True}),
    ("unet", {"spatial_dims": 3, "channels": (4, 8), "up_mode": "transpose"}),
    ("attention_unet", {"spatial_dims": 2, "channels": (4, 8, 16, 32), "attention_heads": 2, "deep_supervision": True}),
    ("attention_unet_thesis3d", {"channels": (4, 8, 16, 32)}),
]


def _randomise(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial norm statistics, so a missed buffer would show in eval mode
        for name, buf in model.named_buffers():
            if "running_var" in name:
                buf.uniform_(0.5, 2.0)
            elif "running_mean" in name:
                buf.normal_(0, 0.2)
    return model


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_old_layout_state_dict_loads_and_gives_identical_outputs(name: str, kwargs: dict):
    torch.manual_seed(1)
    src = _randomise(agseg.create_model(name, **kwargs)).eval()
    old = {to_old_layout(k): v for k, v in src.state_dict().items()}
    assert not any(k.startswith(("encoder.blocks.", "decoder.blocks.", "decoder.ups.", "skips.")) for k in old)
    assert "encoder.0.0.0.weight" in old and "ups.0.conv.weight" in old and "decoder.0.1.1.running_mean" in old
    if "attention" in name:
        assert "gating_signal.0.weight" in old and any(k.startswith("gates.1.gates.0.psi") for k in old)
    torch.manual_seed(2)
    dst = agseg.create_model(name, **kwargs)
    assert list(dst.legacy_keys(old)) == list(src.state_dict())  # same names, same order
    dst.load_state_dict(old, strict=True)
    dst.eval()
    x = torch.randn(2, 1, *([16] * src.spatial_dims))
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
        a, maps_a = dst.forward_with_attention(x)
        b, maps_b = src.forward_with_attention(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(maps_a, maps_b, rtol=0, atol=0)
    # current names pass the hook unchanged; a net inside a parent module and a deep copy load old names too
    agseg.create_model(name, **kwargs).load_state_dict(src.state_dict(), strict=True)
    parent = nn.ModuleDict({"net": agseg.create_model(name, **kwargs)})
    parent.load_state_dict({f"net.{k}": v for k, v in old.items()}, strict=True)
    twin = copy.deepcopy(agseg.create_model(name, **kwargs))
    twin.load_state_dict(old, strict=True)
    for net in (parent["net"].eval(), twin.eval()):
        with torch.no_grad():
            torch.testing.assert_close(net(x), src(x), rtol=0, atol=0)


def test_old_layout_with_a_wrong_tensor_still_fails_strictly():
    src = agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16))
    old = {to_old_layout(k): v for k, v in src.state_dict().items()}
    old["gates.9.gates.0.psi.bias"] = old.pop("gates.1.gates.0.psi.bias")
    with pytest.raises(RuntimeError, match=r"gates\.9"):
        agseg.create_model("attention_unet", spatial_dims=2, channels=(4, 8, 16)).load_state_dict(old)


@pytest.mark.parametrize("bundle", ["cxr-lungs", "hippocampus"])
def test_shipped_models_load_strictly(bundle: str):
    meta = json.loads((SHIPPED / bundle / "model.json").read_text(encoding="utf-8"))
    state = load_file(SHIPPED / bundle / "model.safetensors")
    # trained when interpolation + conv was the U-Net decoder's default; the shipped description now names it
    assert meta["model_kwargs"]["up_mode"] == "interp"
    assert legacy_model_kwargs(agseg.create_model(meta["model_name"], **meta["model_kwargs"]), meta["model_name"],
                               meta["model_kwargs"], state) is None  # fmt: skip
    # as first shipped (no up_mode): rebuilt as trained from the weights alone (what load_bundle does)
    old = {k: v for k, v in meta["model_kwargs"].items() if k != "up_mode"}
    model = agseg.create_model(meta["model_name"], **old)
    kwargs = legacy_model_kwargs(model, meta["model_name"], old, state)
    assert kwargs == {**old, "up_mode": "interp"}
    with pytest.raises(RuntimeError):
        model.load_state_dict(state, strict=True)
    model = agseg.create_model(meta["model_name"], **kwargs)
    model.load_state_dict(state, strict=True)
    model.eval()
    # re-shipped after the nets were split into parts: the current names (old names: the tests above)
    assert set(state) == set(model.state_dict())
    upgraded = upgrade_state_dict(model, state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, upgraded[key]), key
    shape = (1, 1, 64, 64) if model.spatial_dims == 2 else (1, 1, 16, 24, 16)
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (1, meta["model_kwargs"]["out_channels"], *shape[2:])
    assert torch.isfinite(out).all()


def test_unet_and_attention_unet_share_every_unet_name():
    kw = {"spatial_dims": 2, "out_channels": 3, "channels": (4, 8, 16), "deep_supervision": True}
    unet, att = agseg.create_model("unet", **kw), agseg.create_model("attention_unet", **kw)
    u, a = unet.state_dict(), att.state_dict()
    assert set(u) <= set(a)
    assert all(k.startswith("skips.") for k in set(a) - set(u))
    rep = transfer_weights(att, u)
    assert not rep.skipped and set(rep.loaded) == set(u)
    assert rep.missing and all(k.startswith("skips.") for k in rep.missing)
    torch.testing.assert_close(att.encoder.blocks[0][0][0].weight, unet.encoder.blocks[0][0][0].weight)


def test_ship_model_names_the_defaults_a_run_was_saved_under(tmp_path):
    """A run saved before up_mode was recorded (trained with interpolation, the default then) ships with
    ``up_mode: interp`` in its description, so the shipped file loads strictly as it is; machine paths are
    scrubbed from its info. Before, the description was copied as it was (no up_mode)."""
    from agseg.data.preprocess import PreprocessConfig, Preprocessor
    from agseg.inference.bundle import ModelBundle, load_bundle
    from agseg.inference.pretrained import ship_model

    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16]}
    model = agseg.create_model("attention_unet", **kwargs, up_mode="interp")
    assert agseg.create_model("attention_unet", **kwargs).decoder.up_mode != "interp"  # not today's default
    pre = Preprocessor(PreprocessConfig(target_size=(32, 32))).to_dict()
    bundle = ModelBundle("attention_unet", dict(kwargs), pre)
    bundle.save(tmp_path / "run" / "model", model)
    from safetensors.torch import save_file  # the run's weights under the names from before the split into parts

    save_file({to_old_layout(k): v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "run" / "model" / "model.safetensors"))  # fmt: skip
    pp = {"keep_largest": {"1": 2}}
    out = ship_model(tmp_path / "run", "toy", {"data": "/work/secret/toy_images"}, dest=tmp_path / "ship",
                     mirror_axes=[1], postprocess=pp)  # fmt: skip
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert meta["mirror_axes"] == [1] and meta["postprocess"] == pp
    assert meta["model_kwargs"]["up_mode"] == "interp" and kwargs.items() <= meta["model_kwargs"].items()
    assert meta["info"]["data"] == "toy_images"
    net = agseg.create_model("attention_unet", **meta["model_kwargs"])
    shipped_state = load_file(out / "model.safetensors")
    assert set(shipped_state) == set(net.state_dict())  # current names, no load-time upgrade needed
    net.load_state_dict(shipped_state, strict=True)
    shipped, shipped_bundle = load_bundle(out)
    assert shipped_bundle.mirror_axes == [1] and shipped_bundle.postprocess == pp
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32)
        torch.testing.assert_close(shipped(x), model.eval()(x))
