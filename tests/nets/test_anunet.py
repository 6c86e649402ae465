"""ANU-Net (seed 002) and UNet++: the nested wiring, the gates, deep supervision and pruning at inference."""

from __future__ import annotations

import json

import pytest
import torch

import agseg
from agseg.losses import create_loss
from agseg.nets.anunet import ANUNet
from agseg.nets.base import prune_model, pruning_levels_of
from agseg.nets.parts import NestedDecoder
from agseg.nets.summary import count_flops, count_parameters, summarize

PAPER = (32, 64, 128, 256, 512)
TINY = (4, 8, 16, 32, 64)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norm statistics and gate biases, so a buffer or parameter that is not copied shows."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if "running_var" in name:
                buf.uniform_(0.5, 2.0)
            elif "running_mean" in name:
                buf.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def tiny(spatial_dims: int = 2, **kw) -> ANUNet:
    torch.manual_seed(0)
    kw.setdefault("channels", TINY)
    return _randomise(agseg.create_model("anunet", spatial_dims=spatial_dims, in_channels=2, out_channels=3, **kw))


def odd_input(model: ANUNet, spatial_dims: int, batch: int = 2) -> torch.Tensor:
    side = model.min_input_size
    spatial = (2 * side + 3, 2 * side + 1) if spatial_dims == 2 else (side + 3, side + 1, side + 2)
    return torch.randn(batch, model.in_channels, *spatial)


# ----------------------------------------------------------------------------------------------- registration
def test_registered_with_presets():
    names = set(agseg.list_models())
    assert {"anunet", "anunet_paper", "unetpp"} <= names
    paper = agseg.create_model("anunet_paper")
    assert paper.channels == PAPER and paper.level == 4 and paper.deep_supervision and paper.attention
    assert paper.decoder.up_mode == "resize"
    assert isinstance(paper, agseg.nets.SegmentationNet) and paper.has_gates
    unetpp = agseg.create_model("unetpp")
    assert unetpp.channels == PAPER and not unetpp.attention and not unetpp.has_gates
    assert agseg.create_model("anunet").channels == PAPER


# ------------------------------------------------------------------------------------------------ the wiring
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("up_mode", ["interp", "resize"])
def test_nested_grid_counts(depth: int, up_mode: str):
    channels = TINY[: depth + 1]
    net = agseg.create_model("anunet", channels=channels, up_mode=up_mode)
    dec = net.decoder
    # nested nodes X^{i,j}, j >= 1, i + j <= L: L (L + 1) / 2 of them; with the encoder column (L + 1)(L + 2) / 2
    expected = {(i, j) for j in range(1, depth + 1) for i in range(depth + 1 - j)}
    assert set(dec.nodes) == expected and len(dec.nodes) == depth * (depth + 1) // 2
    assert len(net.encoder.blocks) + len(dec.blocks) == (depth + 1) * (depth + 2) // 2
    assert set(dec.blocks) == set(dec.ups) == set(dec.gates) == {f"{i}_{j}" for i, j in expected}
    # a gate per (node, skip): node X^{i,j} has j gates; L (L + 1)(L + 2) / 6 in all (20 for L4)
    assert all(len(dec.gates[f"{i}_{j}"]) == j for i, j in expected)
    assert sum(len(g) for g in dec.gates.values()) == depth * (depth + 1) * (depth + 2) // 6
    # node X^{i,j} concatenates j same-row skips and the up-sampled X^{i+1,j-1}
    for i, j in expected:
        up_ch = channels[i] if up_mode == "interp" else channels[i + 1]
        assert dec.blocks[f"{i}_{j}"][0][0].in_channels == j * channels[i] + up_ch
        assert dec.blocks[f"{i}_{j}"][1][0].out_channels == channels[i]
    # heads on X^{0,1..L}, the main output's (X^{0,L}) first
    assert net.output_levels == tuple(range(1, depth + 1))
    assert len(net.head.heads) == depth and net.head.fuse is None
    assert [net.head_index(lvl) for lvl in net.output_levels] == list(range(depth - 1, -1, -1))


def test_paper_depth_has_15_nodes_and_20_gates():
    net = agseg.create_model("anunet_paper")
    assert len(net.encoder.blocks) + len(net.decoder.nodes) == 15
    assert sum(len(g) for g in net.decoder.gates.values()) == 20


def _record(net: ANUNet, x: torch.Tensor):
    """Inputs and outputs of every up-sampling, gate and block of one eval forward pass, by module."""
    seen: dict[str, tuple] = {}
    hooks = []
    for kind in ("ups", "blocks"):
        for key, mod in getattr(net.decoder, kind).items():
            hooks.append(
                mod.register_forward_hook(lambda _m, args, out, k=f"{kind}.{key}": seen.__setitem__(k, (args, out)))
            )
    for key, gates in net.decoder.gates.items():
        for k, gate in enumerate(gates):
            hooks.append(
                gate.register_forward_hook(lambda _m, args, out, n=f"gates.{key}.{k}": seen.__setitem__(n, (args, out)))
            )
    feats = []
    hooks.append(net.encoder.register_forward_hook(lambda _m, _a, out: feats.extend(out)))
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    return seen, feats


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_skip_is_gated_by_the_nodes_up_sampled_input(spatial_dims: int):
    """The wiring of seed 002: node X^{i,j} = block([A(X^{i,0}; u), ..., A(X^{i,j-1}; u), u]), u = up(X^{i+1,j-1});
    each gate sees the same-row skip X^{i,k} as its features and u, the tensor also concatenated, as its signal."""
    net = tiny(spatial_dims, channels=TINY[:4])
    x = odd_input(net, spatial_dims, batch=1)
    seen, feats = _record(net, x)
    node = {(i, 0): f for i, f in enumerate(feats)}
    for i, j in net.decoder.nodes:  # computation order: every input exists before it is used
        node[(i, j)] = seen[f"blocks.{i}_{j}"][1]
    for i, j in net.decoder.nodes:
        (coarse, size), u = seen[f"ups.{i}_{j}"]
        assert coarse is node[(i + 1, j - 1)] and tuple(size) == tuple(node[(i, 0)].shape[2:])
        (cat,), _ = seen[f"blocks.{i}_{j}"]
        c = net.channels[i]
        for k in range(j):
            (skip, signal), (gated, alpha) = seen[f"gates.{i}_{j}.{k}"]
            assert skip is node[(i, k)], f"gate {k} of X{i}{j} does not gate X{i}{k}"
            assert signal is u, f"gate {k} of X{i}{j} is not driven by up(X{i + 1}{j - 1})"
            assert alpha.shape == (1, 1, *node[(i, 0)].shape[2:])
            torch.testing.assert_close(cat[:, k * c : (k + 1) * c], gated, rtol=0, atol=0)
        torch.testing.assert_close(cat[:, j * c :], u, rtol=0, atol=0)


def test_gates_change_the_output_and_unetpp_has_none():
    torch.manual_seed(1)
    gated = agseg.create_model("anunet", channels=(4, 8, 16), gate_init="default").eval()
    plain = agseg.create_model("anunet", channels=(4, 8, 16), attention=False).eval()
    assert not any("gate" in n for n, _ in plain.named_parameters())
    assert len(plain.decoder.gates) == 0
    # without the gates the two nets have the same parameter names (weight transfer from UNet++ works)
    names = {n for n, _ in gated.named_parameters()}
    assert {n for n, _ in plain.named_parameters()} == {n for n in names if not n.startswith("decoder.gates.")}
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("decoder.gates.")})
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        out, maps = plain.forward_with_attention(x)
        assert maps == {} and out.shape == (1, 1, 16, 16)
        assert not torch.allclose(gated(x), plain(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attention_maps_name_every_gate_and_start_open(spatial_dims: int):
    net = tiny(spatial_dims, channels=TINY[:4], attention_heads=2)
    x = odd_input(net, spatial_dims)
    with torch.no_grad():
        out, maps = net.forward_with_attention(x)
        torch.testing.assert_close(out, net(x), rtol=0, atol=0)
    expected = {NestedDecoder.gate_name(i, j, k) for i, j in net.decoder.nodes for k in range(j)}
    assert set(maps) == expected and len(maps) == 10
    grids = [tuple(x.shape[2:])]
    for _ in range(3):
        grids.append(tuple(s // 2 for s in grids[-1]))
    for name, alpha in maps.items():
        row = int(name.removeprefix("node").split("_")[0])
        assert alpha.shape == (2, 2, *grids[row])
        assert alpha.min() >= 0.9 and alpha.max() <= 1, f"{name}: gates must start open"
    closed = agseg.create_model("anunet", channels=(4, 8, 16), gate_init="default").eval()
    with torch.no_grad():
        _, maps = closed.forward_with_attention(torch.randn(2, 1, 16, 16))
    assert max(float(m.max()) for m in maps.values()) < 0.9


# --------------------------------------------------------------------------------------- deep supervision
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_list_main_first_then_decreasing_level(spatial_dims: int):
    net = tiny(spatial_dims)
    x = odd_input(net, spatial_dims)
    torch.manual_seed(5)
    outs = net.train()(x)
    levels = net.forward_levels(x)  # training mode too: batch statistics of the same input
    assert isinstance(outs, list) and len(outs) == 4
    assert sorted(levels) == [1, 2, 3, 4]
    for out, lvl in zip(outs, [4, 3, 2, 1], strict=True):
        assert out.shape == (2, 3, *x.shape[2:])
        torch.testing.assert_close(out, levels[lvl], rtol=0, atol=0)
    net.eval()
    with torch.no_grad():
        y = net(x)
        assert isinstance(y, torch.Tensor)
        torch.testing.assert_close(y, net.forward_levels(x)[4], rtol=0, atol=0)
    single = tiny(spatial_dims, deep_supervision=False).train()
    assert isinstance(single(x), torch.Tensor) and single.output_levels == (4,)
    assert len(single.head.heads) == 1


def test_anunet_hybrid_trains_a_tiny_3d_net():
    torch.manual_seed(0)
    net = agseg.create_model("anunet", spatial_dims=3, channels=(4, 8, 16), out_channels=1).train()
    grid = torch.stack(torch.meshgrid(*(torch.arange(16.0),) * 3, indexing="ij"))
    centres = torch.tensor([[6.0, 8.0, 9.0], [9.0, 7.0, 6.0]])
    target = torch.stack([((grid - c.view(3, 1, 1, 1)) ** 2).sum(0) < 16 for c in centres]).float()  # spheres
    x = (target + 0.3 * torch.randn_like(target))[:, None]
    loss_fn = create_loss("anunet_hybrid")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        outs = net(x)
        assert isinstance(outs, list) and len(outs) == 2
        loss = loss_fn(outs, target[:, None])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[-3:]) < sum(losses[:3])


# --------------------------------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("attention", [True, False])
def test_pruned_output_equals_the_full_nets_head_exactly(spatial_dims: int, attention: bool):
    net = tiny(spatial_dims, attention=attention).eval()
    x = odd_input(net, spatial_dims)
    with torch.no_grad():
        full = net.forward_levels(x)
        main = net(x)
        for level in (1, 2, 3, 4):
            pruned = net.prune(level)
            assert not pruned.training
            y = pruned(x)
            assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *x.shape[2:])
            torch.testing.assert_close(y, full[level], rtol=0, atol=0)
        torch.testing.assert_close(net.prune(4)(x), main, rtol=0, atol=0)
    # the levels differ from each other (the test above could not pass by returning one head for all)
    assert not torch.allclose(full[1], full[4])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pruned_net_holds_only_its_nodes(spatial_dims: int):
    net = tiny(spatial_dims)
    full_state = net.state_dict()
    for level in (1, 2, 3, 4):
        pruned = net.prune(level)
        assert isinstance(pruned, ANUNet) and isinstance(pruned, agseg.nets.SegmentationNet)
        assert pruned.level == level and pruned.output_levels == (level,) and not pruned.deep_supervision
        assert pruned.channels == TINY[: level + 1]
        assert (pruned.spatial_dims, pruned.in_channels, pruned.out_channels) == (spatial_dims, 2, 3)
        assert pruned.min_input_shape == (2**level,) * spatial_dims
        # encoder rows 0..level, the nodes X^{i,j} with i + j <= level, their gates, one head
        assert len(pruned.encoder.blocks) == level + 1
        assert set(pruned.decoder.nodes) == {(i, j) for i, j in net.decoder.nodes if i + j <= level}
        assert sum(len(g) for g in pruned.decoder.gates.values()) == level * (level + 1) * (level + 2) // 6
        assert len(pruned.head.heads) == 1
        # the same values under the same names (the head: the level's head of the full net), in new storage
        main = f"head.heads.{net.head_index(level)}."
        full_ptrs = {t.data_ptr() for t in full_state.values()}
        for key, value in pruned.state_dict().items():
            src = main + key.removeprefix("head.heads.0.") if key.startswith("head.heads.") else key
            torch.testing.assert_close(value, full_state[src], rtol=0, atol=0)
            assert value.data_ptr() not in full_ptrs, f"{key} shares storage with the full net"


def test_pruned_net_is_standalone():
    net = tiny(2).eval()
    x = odd_input(net, 2)
    pruned = net.prune(2)
    with torch.no_grad():
        before = pruned(x)
        for p in net.parameters():  # training the full net further must not touch the pruned one
            p.add_(1.0)
        torch.testing.assert_close(pruned(x), before, rtol=0, atol=0)
    assert not any(m is n for m in pruned.modules() for n in net.modules())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_parameter_of_a_pruned_net_gets_a_gradient(spatial_dims: int):
    net = tiny(spatial_dims)
    for level in (1, 3):
        pruned = net.prune(level).train()
        out = pruned(odd_input(pruned, spatial_dims))
        assert isinstance(out, torch.Tensor)
        (out * torch.randn_like(out)).sum().backward()
        missing = [n for n, p in pruned.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert not missing, f"level {level}: unused parameters {missing}"


@pytest.mark.parametrize("name", ["anunet", "anunet_paper", "unetpp"])
def test_levels_cost_strictly_more_from_l1_to_l4_at_256(name: str):
    """Parameters and forward FLOPs of the pruned nets at 1x1x256x256 (2D, 1 -> 1 channel, the paper's widths):
    strictly increasing from L1 to L4, each pruned net smaller than the full one, and L1/L3 as seed 002 reports
    (L1 98.8 % and L3 75.5 % fewer parameters than L4)."""
    net = agseg.create_model(name, spatial_dims=2, in_channels=1, out_channels=1)
    shape = (1, 1, 256, 256)
    pruned = {lvl: net.prune(lvl) for lvl in (1, 2, 3, 4)}
    params = {lvl: count_parameters(p) for lvl, p in pruned.items()}
    flops = {lvl: count_flops(p, shape) for lvl, p in pruned.items()}
    assert [params[lvl] for lvl in (1, 2, 3, 4)] == sorted(set(params.values()))
    assert [flops[lvl] for lvl in (1, 2, 3, 4)] == sorted(set(flops.values()))
    assert params[4] < count_parameters(net)  # the full net also holds the heads of L1..L3
    assert flops[4] == count_flops(net, shape) == summarize(name, shape).flops  # eval computes Y_4 only
    for lvl, p in pruned.items():  # the pruned net is the registered net with the pruned arguments
        kwargs = net.pruned_kwargs(lvl)
        assert p.init_kwargs == kwargs
        assert params[lvl] == summarize(name, shape, **kwargs).params
    assert abs((1 - params[1] / params[4]) - 0.988) < 0.005
    assert abs((1 - params[3] / params[4]) - 0.755) < 0.02


def test_pruned_kwargs_rebuild_the_pruned_net_through_json():
    aniso = [(1, 2, 2), (2, 2, 2), 2]
    net = _randomise(
        agseg.create_model("anunet", spatial_dims=3, channels=(4, 8, 16, 32), pool_sizes=aniso, up_mode="transpose")
    ).eval()
    pruned = net.prune(2)
    assert pruned.pool_sizes == ((1, 2, 2), (2, 2, 2)) and pruned.min_input_shape == (2, 4, 4)
    kwargs = json.loads(json.dumps(pruned.init_kwargs))  # what a bundle's model.json holds
    rebuilt = agseg.create_model("anunet", **kwargs)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.randn(1, 1, 5, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), pruned(x), rtol=0, atol=0)
        torch.testing.assert_close(pruned(x), net.forward_levels(x)[2], rtol=0, atol=0)
        # the pruned net accepts inputs too small for the full net
        assert pruned(torch.randn(1, 1, 2, 4, 4)).shape == (1, 1, 2, 4, 4)
    with pytest.raises(ValueError, match="too small"):
        net(torch.randn(1, 1, 2, 4, 4))


def test_prune_keeps_device_dtype_and_mode():
    net = tiny(2).double().train()
    pruned = net.prune(3)
    assert pruned.training and all(p.dtype == torch.float64 for p in pruned.parameters())
    net.eval()
    x = odd_input(net, 2).double()
    with torch.no_grad():
        torch.testing.assert_close(net.prune(3)(x), net.forward_levels(x)[3], rtol=0, atol=0)


def test_pruning_a_pruned_net_and_bad_levels():
    net = tiny(2).eval()
    x = odd_input(net, 2)
    pruned = net.prune(3)
    again = pruned.prune(3)  # its own level: a copy
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"no head on X\^\{0,2\}.*prune the full net"):
        pruned.prune(2)
    with pytest.raises(ValueError, match=r"no head on X\^\{0,1\}"):
        tiny(2, deep_supervision=False).prune(1)
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match="out of range.*levels 1, 2, 3, 4"):
            net.prune(bad)
    with pytest.raises(TypeError, match="an int"):
        net.prune(2.0)  # type: ignore[arg-type]


def test_clear_errors_for_wrong_inputs():
    net = agseg.create_model("anunet", channels=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.randn(1, 1, 7, 32))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="4D input"):
        net(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="unknown up-sampling mode"):
        agseg.create_model("anunet", channels=(4, 8), up_mode="pixelshuffle")
    with pytest.raises(ValueError, match="at least 2 rows"):
        agseg.create_model("anunet", channels=(4,))


def test_pruning_through_the_net_contract():
    net = tiny(2).eval()
    wrapped = torch.nn.DataParallel(net)  # the helpers look through DDP/DataParallel/compile wrappers
    assert pruning_levels_of(wrapped) == (1, 2, 3, 4) == net.pruning_levels
    assert pruning_levels_of(net.prune(2)) == (2,)
    x = odd_input(net, 2)
    with torch.no_grad():
        torch.testing.assert_close(prune_model(wrapped, 2)(x), net.forward_levels(x)[2], rtol=0, atol=0)
    unet = agseg.create_model("unet", channels=(4, 8))
    assert pruning_levels_of(unet) == () and pruning_levels_of(torch.nn.Conv2d(1, 1, 1)) == ()
    with pytest.raises(ValueError, match="UNet cannot be pruned"):
        prune_model(unet, 1)
    with pytest.raises(ValueError, match="cannot be pruned"):
        unet.prune(1)


def test_seed002_fig4_gate_norm_option():
    """gate_norm=True: conv + BN on each gate input (theta on the skip, phi on the gating signal) and before the
    sigmoid (psi), as seed 002 Fig. 4 draws it; the default keeps agseg's grid gate without those norms."""
    kw = {"channels": (4, 8, 16)}
    plain = agseg.create_model("anunet", **kw)
    normed = agseg.create_model("anunet", gate_norm=True, **kw).eval()
    g0, g1 = plain.decoder.gates["0_1"][0].gates[0], normed.decoder.gates["0_1"][0].gates[0]
    assert not g0.gate_norm and g1.gate_norm
    for part in (g1.theta, g1.phi, g1.psi):
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in part.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g0.psi.modules())
    # the gate computes sigmoid(BN(psi(relu(BN(theta x) + BN(phi g))))) (eval mode, random statistics)
    torch.manual_seed(0)
    for m in g1.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x, g = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)  # u^{0,1}: up-sampled to row 0 (width 4)
    with torch.no_grad():
        _, alpha = g1(x, g)
        ref = torch.sigmoid(g1.psi(torch.relu(g1.theta(x) + g1.phi(g))))
    torch.testing.assert_close(alpha, ref)
    # pruning keeps the gate: the level-1 net's state matches the full net's
    small = normed.prune(1)
    gate_keys = [k for k in small.state_dict() if k.startswith("decoder.gates.0_1.")]
    assert any(".psi.1." in k for k in gate_keys)  # psi's batch norm survives pruning, with the full net's values
    assert all(torch.equal(small.state_dict()[k], normed.state_dict()[k]) for k in gate_keys)
    assert normed(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)
