"""Every registered classifier (Sononet, AG-Sononet and presets), in 2D and 3D: shapes, gradients, determinism, clear
errors, attention maps; AG-Sononet against seed 003 sec. 2.4 (the normalisation, the attention-weighted sums, the
aggregation) and Table 5 (parameters); weight transfer from Sononet."""

from __future__ import annotations

import pytest
import torch

import agseg
from agseg.blocks.attention_gate import GridAttentionGate
from agseg.nets.base import ClassificationNet
from agseg.nets.registry import get_model_spec
from agseg.nets.sononet import AGSononet, Sononet, normalise_attention, sononet_channels
from agseg.nets.summary import count_parameters, summarize
from agseg.training.checkpoint import transfer_weights

CLS_MODELS = agseg.list_models(task="classification")


def tiny(name: str, spatial_dims: int, **kw) -> dict:
    return {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 3, "channels": (4, 8, 8, 16, 16), **kw}


def make_input(spatial_dims: int, odd: bool = False, channels: int = 2) -> torch.Tensor:
    if spatial_dims == 2:
        return torch.randn(2, channels, *((35, 33) if odd else (32, 48)))
    return torch.randn(2, channels, *((17, 19, 16) if odd else (16, 32, 16)))


def outputs(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def test_the_classifiers_are_registered_as_classifiers():
    assert {"sononet", "ag_sononet", "sononet8", "sononet16", "sononet32", "ag_sononet8", "ag_sononet16",
            "ag_sononet32"} <= set(CLS_MODELS)  # fmt: skip
    for name in CLS_MODELS:
        assert get_model_spec(name).task == "classification"
        model = agseg.create_model(name)
        assert isinstance(model, ClassificationNet) and model.task == "classification"


def test_built_as_the_issue_says_with_num_classes():
    model = agseg.create_model("ag_sononet", in_channels=1, num_classes=4).eval()
    assert model.out_channels == model.num_classes == 4
    with torch.no_grad():
        assert model(torch.randn(3, 1, 64, 64)).shape == (3, 4)
    assert agseg.create_model("sononet", num_classes=3, out_channels=3).out_channels == 3
    with pytest.raises(ValueError, match="num_classes .*disagree"):
        agseg.create_model("ag_sononet", num_classes=2, out_channels=1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", CLS_MODELS)
def test_output_shapes_train_and_eval(name: str, spatial_dims: int):
    model = agseg.create_model(name, **tiny(name, spatial_dims))
    x = make_input(spatial_dims)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3)
    assert all(t.shape == (2, 3) for t in outputs(model.train()(x)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_heads_main_first(spatial_dims: int):
    model = agseg.create_model("ag_sononet", **tiny("ag_sononet", spatial_dims, deep_supervision=True))
    x = make_input(spatial_dims)
    outs = model.train()(x)
    assert isinstance(outs, list) and len(outs) == 4  # main, gate0, gate1, pooled coarsest scale
    assert all(o.shape == (2, 3) for o in outs)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)
        torch.testing.assert_close(model(x), model.classifier(_vectors(model, x)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", [*CLS_MODELS, "ag_sononet+ds", "ag_sononet+sigmoid"])
def test_every_parameter_gets_a_gradient(name: str, spatial_dims: int):
    base, _, variant = name.partition("+")
    extra = {"ds": {"deep_supervision": True}, "sigmoid": {"attention_norm": "sigmoid_sum"}}.get(variant, {})
    model = agseg.create_model(base, **tiny(base, spatial_dims, **extra)).train()
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs(model(make_input(spatial_dims))))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    zero = {n for n, p in model.named_parameters() if p.grad.abs().sum() == 0}
    # (q - min q) / sum(q - min q) does not change when psi's bias shifts q: that bias has no effect under "sum"
    shift_free = {n for n, _ in model.named_parameters() if n.endswith("psi.bias")}
    if isinstance(model, AGSononet) and model.attention_norm == "sum":
        assert not zero - shift_free, f"zero gradient for {sorted(zero - shift_free)}"
        grads = dict(model.named_parameters())
        assert all(float(grads[n].grad.abs().max()) < 1e-4 for n in shift_free)  # zero up to rounding
    else:
        assert not zero, f"zero gradient for {sorted(zero)}"


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", CLS_MODELS)
def test_eval_output_is_deterministic_and_odd_sizes_work(name: str, spatial_dims: int):
    model = agseg.create_model(name, **tiny(name, spatial_dims)).eval()
    x = make_input(spatial_dims, odd=True)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sononet", "ag_sononet"])
def test_bad_inputs_and_arguments_raise_clear_errors(name: str):
    model = agseg.create_model(name, in_channels=1, out_channels=2)
    assert model.min_input_shape == (16, 16)
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.randn(1, 1, 15, 32))
    with pytest.raises(ValueError, match="input channel"):
        model(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="4D input"):
        model(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="capacity or channels"):
        agseg.create_model(name, capacity=8, channels=(8, 16, 32, 64, 64))
    with pytest.raises(ValueError, match="convs needs one entry per level"):
        agseg.create_model(name, convs=(3, 3))
    with pytest.raises(ValueError, match="capacity"):
        agseg.create_model(name, capacity=0)


def test_ag_sononet_argument_errors():
    with pytest.raises(ValueError, match=r"gated_levels .* out of range"):
        agseg.create_model("ag_sononet", gated_levels=(2, 4))
    with pytest.raises(ValueError, match="attention_norm"):
        agseg.create_model("ag_sononet", attention_norm="softmax")


def test_capacity_is_the_number_of_initial_filters():
    assert sononet_channels(16) == (16, 32, 64, 128, 128)
    assert agseg.create_model("ag_sononet", capacity=16).channels == (16, 32, 64, 128, 128)
    assert agseg.create_model("sononet32").channels == (32, 64, 128, 256, 256)
    assert agseg.create_model("ag_sononet").channels == sononet_channels(8)


#: seed 003 Table 5 (14 classes: 13 standard planes + background; one grey-level channel), in millions
TABLE5 = {"sononet8": 0.16, "ag_sononet8": 0.18, "sononet16": 0.65, "ag_sononet16": 0.70, "sononet32": 2.58,
          "ag_sononet32": 2.79}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TABLE5))
def test_parameter_counts_match_seed003_table5(name: str):
    model = agseg.create_model(name, in_channels=1, out_channels=14)
    assert round(count_parameters(model) / 1e6, 2) == TABLE5[name]


def test_sononet_parameters_by_hand():
    # capacity 1 (widths 1-2-4-8-8), convs 3-3-3-2-2, 1 -> 3 classes: conv (no bias) + BN (2 per channel) per layer
    def layer(i, o, k=3):
        return i * o * k * k + 2 * o

    feats = layer(1, 1) + 2 * layer(1, 1) + layer(1, 2) + 2 * layer(2, 2) + layer(2, 4) + 2 * layer(4, 4)
    feats += layer(4, 8) + layer(8, 8) + 2 * layer(8, 8)
    adaptation = layer(8, 4, 1) + layer(4, 3, 1)
    assert count_parameters(agseg.create_model("sononet", capacity=1, out_channels=3)) == feats + adaptation
    # AG: per gate theta (C_l x 8, no bias) + phi (8 x 8 + 8) + psi (8 + 1); classifier on 4 + 8 + 8 features
    gates = (4 * 8 + 72 + 9) + (8 * 8 + 72 + 9)
    fc = (4 + 8 + 8) * 3 + 3
    assert count_parameters(agseg.create_model("ag_sononet", capacity=1, out_channels=3)) == feats + gates + fc


def test_flops_and_output_shapes_on_the_meta_device():
    s = summarize("ag_sononet8", (1, 1, 64, 64), out_channels=2)
    assert s.output_shapes == [(1, 2)] and s.flops > 0
    assert (
        summarize("ag_sononet8", (1, 1, 64, 64), out_channels=2, deep_supervision=True).train_output_shapes
        == [(1, 2)] * 4
    )


# ------------------------------------------------------------------------------------- AG-Sononet vs seed 003
def test_normalisation_is_min_subtracted_and_divided_by_the_sum():
    q = torch.tensor([[[[1.0, 3.0], [2.0, 6.0]]]])
    w, m = normalise_attention(q)
    torch.testing.assert_close(w, torch.tensor([[[[0.0, 2.0], [1.0, 5.0]]]]) / 8)
    torch.testing.assert_close(m, torch.tensor([[[[0.0, 0.4], [0.2, 1.0]]]]))
    s = torch.sigmoid(q)
    w2, _ = normalise_attention(q, "sigmoid_sum")
    torch.testing.assert_close(w2, (s - s.min()) / (s - s.min()).sum())
    # shift invariant (why psi's bias has no gradient), and a flat map gives zero weights, not NaN
    torch.testing.assert_close(normalise_attention(q + 5)[0], w)
    flat, scaled = normalise_attention(torch.ones(2, 1, 3, 3))
    assert flat.abs().sum() == 0 and scaled.abs().sum() == 0


def _vectors(model: AGSononet, x: torch.Tensor) -> torch.Tensor:
    """The concatenated feature vector by hand: attention-weighted sums per gated level, global mean of the last."""
    feats = model.features(x)
    g = feats[-1]
    parts = []
    for lvl, gate in zip(model.gated_levels, model.gates, strict=True):
        xl = feats[lvl]
        alpha = gate.attention(xl, g)  # the tested block: sigmoid(q) on x's grid
        q = torch.logit(alpha.double(), eps=0).float() if model.attention_norm == "sum" else alpha
        a = q - q.amin(dim=tuple(range(2, q.ndim)), keepdim=True)
        a = a / a.sum(dim=tuple(range(2, q.ndim)), keepdim=True)
        parts.append((a * xl).sum(dim=tuple(range(2, xl.ndim))))
    parts.append(g.mean(dim=tuple(range(2, g.ndim))))
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("norm", ["sum", "sigmoid_sum"])
def test_logits_are_a_linear_layer_on_the_attended_sums_and_the_pooled_coarsest_scale(norm: str):
    torch.manual_seed(0)
    model = agseg.create_model("ag_sononet", capacity=2, out_channels=3, attention_norm=norm).eval()
    x = torch.randn(2, 1, 48, 64)
    with torch.no_grad():
        want = model.classifier(_vectors(model, x))
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_scores_are_the_gates_compatibility_before_the_sigmoid():
    model = agseg.create_model("ag_sononet", capacity=2).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        feats = model.features(x)
        for lvl, gate in zip(model.gated_levels, model.gates, strict=True):
            assert isinstance(gate, GridAttentionGate) and gate.sub_sample == 1
            assert gate.inter_channels == model.channels[-1]  # F_int = the gating signal's width (Table 5 counts)
            q = model.scores(gate, feats[lvl], feats[-1])
            torch.testing.assert_close(torch.sigmoid(q), gate.attention(feats[lvl], feats[-1]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attention_maps_on_the_gated_levels_in_0_1(spatial_dims: int):
    model = agseg.create_model("ag_sononet", **tiny("ag_sononet", spatial_dims)).eval()
    x = make_input(spatial_dims, odd=True)
    with torch.no_grad():
        out, maps = model.forward_with_attention(x)
        torch.testing.assert_close(out, model(x))
    assert sorted(maps) == ["gate0", "gate1"]
    feats = model.features(x)
    assert maps["gate0"].shape == (2, 1, *feats[2].shape[2:]) and maps["gate1"].shape == (2, 1, *feats[3].shape[2:])
    for m in maps.values():
        assert m.min() >= 0 and m.max() <= 1
        torch.testing.assert_close(m.flatten(2).amax(-1), torch.ones(2, 1))  # scaled by the maximum per image
    assert agseg.create_model("sononet", **tiny("sononet", spatial_dims)).forward_with_attention(x)[1] == {}


def test_bf16_autocast_keeps_the_normalisation_in_float32():
    torch.manual_seed(0)
    model = agseg.create_model("ag_sononet", capacity=4).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, maps = model.forward_with_attention(x)
    assert maps["gate0"].dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    # bf16 features: the maps stay maps (a bf16 min-subtraction of q would quantise them to a few levels)
    assert maps["gate0"].unique().numel() > 50


def test_ag_sononet_starts_from_a_trained_sononet():
    torch.manual_seed(1)
    sono = agseg.create_model("sononet", capacity=4, out_channels=2)
    ag = agseg.create_model("ag_sononet", capacity=4, out_channels=2)
    report = transfer_weights(ag, sono.state_dict())
    feature_keys = [k for k in ag.state_dict() if k.startswith("features.")]
    assert set(feature_keys) <= set(report.loaded)
    assert not [k for k in report.loaded if not k.startswith("features.")]
    for k in feature_keys:
        torch.testing.assert_close(ag.state_dict()[k], sono.state_dict()[k])
    assert isinstance(sono, Sononet)
