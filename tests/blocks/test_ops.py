"""agseg.blocks.ops.cat: torch.cat's values and gradients, with dense gradients for its inputs."""

from __future__ import annotations

import pytest
import torch

from agseg.blocks import ops


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_cat_matches_torch_cat_and_hands_back_dense_gradients(fmt):
    torch.manual_seed(0)
    a = torch.randn(2, 3, 5, 6).to(memory_format=fmt).requires_grad_()
    b = torch.randn(2, 4, 5, 6).to(memory_format=fmt).requires_grad_()
    seen = []
    ha, hb = a.register_hook(seen.append), b.register_hook(seen.append)
    w = torch.randn(2, 7, 5, 6)
    out = ops.cat([a, b], dim=1)
    assert torch.equal(out, torch.cat([a, b], dim=1))
    (out * w).sum().backward()
    ha.remove(), hb.remove()
    # the reference: torch.cat's gradients are the matching slices of w
    torch.testing.assert_close(a.grad, w[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(b.grad, w[:, 3:], rtol=0, atol=0)
    assert len(seen) == 2 and all(g.is_contiguous(memory_format=fmt) for g in seen)


def test_torch_cat_alone_hands_back_strided_views():
    # why ops.cat exists: plain torch.cat gives channels-last inputs gradients that are neither dense layout
    a = torch.randn(2, 3, 5, 6).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(2, 4, 5, 6).to(memory_format=torch.channels_last).requires_grad_()
    seen = []
    a.register_hook(seen.append)
    out = torch.cat([a, b], dim=1).contiguous(memory_format=torch.channels_last)
    (out * torch.randn_like(out)).sum().backward()
    g = seen[0]
    assert not g.is_contiguous() and not g.is_contiguous(memory_format=torch.channels_last)


def test_cat_in_3d_and_without_grad():
    a = torch.randn(1, 2, 3, 4, 5).to(memory_format=torch.channels_last_3d).requires_grad_()
    b = torch.randn(1, 1, 3, 4, 5)
    seen = []
    a.register_hook(seen.append)
    out = ops.cat([a, b])
    out.sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        assert torch.equal(ops.cat([a, b]), torch.cat([a, b], dim=1))
