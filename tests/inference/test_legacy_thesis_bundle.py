"""A model saved with a thesis preset before the presets took the thesis gate still loads, with its own gate."""

from __future__ import annotations

import torch

import agseg
from agseg.data.preprocess import PreprocessConfig, Preprocessor
from agseg.inference.bundle import ModelBundle, load_bundle

PRE = Preprocessor(PreprocessConfig(intensity="none")).to_dict()


def _saved_and_loaded(folder, name, kwargs, model):
    """Save ``model`` as a bundle of ``name`` with only ``kwargs`` recorded (as older saves were), load it back."""
    ModelBundle(name, kwargs, PRE).save(folder, model)
    return load_bundle(folder)


def _same_function(a, b, shape=(1, 1, 32, 32)):
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_an_old_thesis_bundle_loads_with_oktays_gate(tmp_path):
    kwargs = {"channels": [4, 8, 16, 32, 64]}
    # what the preset built before (Oktay's gate, open init) and saved with only the user's kwargs
    old = agseg.create_model("attention_unet_thesis2d_multi", gate_style="oktay", gate_init="open", **kwargs).eval()
    net, bundle = _saved_and_loaded(tmp_path / "old", "attention_unet_thesis2d_multi", kwargs, old)
    assert bundle.model_kwargs["gate_style"] == "oktay"
    _same_function(net, old)
    # a bundle saved now with the same preset has the thesis gate and loads as such
    new = agseg.create_model("attention_unet_thesis2d_multi", **kwargs).eval()
    net2, bundle2 = _saved_and_loaded(tmp_path / "new", "attention_unet_thesis2d_multi", kwargs, new)
    assert "gate_style" not in bundle2.model_kwargs
    assert isinstance(net2.skips.gates["0"].gates[0].out, torch.nn.Identity)


def test_a_thesis_single_gating_bundle_from_before_the_pooled_gating_signal_loads_as_trained(tmp_path):
    kwargs = {"channels": [4, 8, 16, 32, 64]}
    # saved when the thesis single-gating signal came from the bottleneck (its conv took 64 channels, now 32)
    old = agseg.create_model("attention_unet_thesis2d_single", gating_from="bottleneck", **kwargs).eval()
    assert old.skips.gating_signal[0].in_channels == 64
    net, bundle = _saved_and_loaded(tmp_path / "old", "attention_unet_thesis2d_single", kwargs, old)
    assert bundle.model_kwargs["gating_from"] == "bottleneck"
    _same_function(net, old)
    new = agseg.create_model("attention_unet_thesis2d_single", **kwargs).eval()
    assert new.skips.gating_signal[0].in_channels == 32
    net2, bundle2 = _saved_and_loaded(tmp_path / "new", "attention_unet_thesis2d_single", kwargs, new)
    assert "gating_from" not in bundle2.model_kwargs and net2.skips.gating_from == "pool"


def test_saves_without_the_keys_whose_shapes_cannot_tell_take_the_earlier_defaults(tmp_path):
    """Saves since the default changes name up_mode and gating_from; a save without them predates the change, so
    where the weights' shapes cannot tell (equal widths) the earlier default is the right one."""
    cases = [
        (
            "attention_unet",
            {"channels": [4, 8, 16, 16], "gating": "single", "gate_style": "thesis", "up_mode": "interp"},
            {"gating_from": "bottleneck"},
        ),
        ("unet", {"channels": [8, 8, 16]}, {"up_mode": "interp"}),  # C_0 == C_1
    ]
    for i, (name, kwargs, earlier) in enumerate(cases):
        old = agseg.create_model(name, **kwargs, **earlier).eval()
        net, bundle = _saved_and_loaded(tmp_path / str(i), name, kwargs, old)
        assert {k: bundle.model_kwargs[k] for k in earlier} == earlier
        _same_function(net, old)


def test_runs_record_the_defaults_that_changed(tmp_path):
    from agseg.nets.compat import resolved_kwargs

    net = agseg.create_model("attention_unet_thesis2d_single", channels=[4, 8, 16, 32, 64])
    assert resolved_kwargs(net, {}) == {"up_mode": "interp", "gating_from": "pool"}
    assert resolved_kwargs(agseg.create_model("unet", channels=[4, 8]), {}) == {"up_mode": "transpose"}
    assert resolved_kwargs(agseg.create_model("focusnetpp", channels=[8, 16, 32]), {}) == {}  # takes no up_mode
