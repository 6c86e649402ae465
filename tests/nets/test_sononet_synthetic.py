"""Issue 12's synthetic acceptance: on images where a shape is drawn at a random place on noise (class 1) or not
(class 0), a short training makes both Sononet and AG-Sononet beat chance clearly, and AG-Sononet's boxes
(:func:`agseg.localise` on its attention maps, seed 003 appendix) overlap the drawn shape with IoU > 0.5 on most
images. Tiny images (64 x 64, shapes of 20-28 pixels), capacity 4, 10 epochs of SGD with Nesterov momentum: seconds on
one core.

AG-Sononet trains with its per-scale heads (deep supervision, equal weights), as seed 003 does: "having a loss term
defined at each scale ensures that the network learns to attend at each scale". Without them the finer gate often
never looks at the shape (its attention mass inside the shapes stayed at chance in 3 of 6 seeds we tried), and the
coarse gate alone (1/8 of the input) cannot draw a tight box; with them IoU > 0.5 held on 88-100 % of the shapes for
each of 6 data/initialisation seeds (the ``slow`` test repeats two of them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import agseg
from agseg.data.synthetic import shape_images
from agseg.inference.localise import Box, mass_inside

SIZE, SHAPE_SIZE, N_TRAIN, N_TEST, EPOCHS = 64, (20, 28), 256, 64, 10


def make_data(seed: int):
    images, labels, masks, boxes = shape_images(
        N_TRAIN + N_TEST, SIZE, shapes=("none", "square"), shape_size=SHAPE_SIZE, rng=seed
    )
    train = (torch.from_numpy(images[:N_TRAIN])[:, None], torch.from_numpy(labels[:N_TRAIN]).float())
    test = (torch.from_numpy(images[N_TRAIN:])[:, None], labels[N_TRAIN:], masks[N_TRAIN:], boxes[N_TRAIN:])
    return train, test


def train(name: str, data, seed: int = 0) -> torch.nn.Module:
    """SGD with Nesterov momentum (seed 003's optimiser), one thread; AG-Sononet with its per-scale heads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        kw = {"deep_supervision": True} if name == "ag_sononet" else {}
        net = agseg.create_model(name, in_channels=1, out_channels=1, capacity=4, **kw)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        x, y = data
        gen = torch.Generator().manual_seed(seed)
        for _ in range(EPOCHS):
            net.train()
            for idx in torch.randperm(len(x), generator=gen).split(32):
                out = net(x[idx])
                loss = sum(F.binary_cross_entropy_with_logits(o[:, 0], y[idx]) for o in outputs(out))
                opt.zero_grad()
                loss.backward()
                opt.step()
        return net.eval()
    finally:
        torch.set_num_threads(threads)


def outputs(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


@pytest.fixture(scope="module")
def trained():
    data, test = make_data(0)
    return {name: train(name, data) for name in ("sononet", "ag_sononet")}, test


@pytest.mark.parametrize("name", ["sononet", "ag_sononet"])
def test_both_nets_beat_chance_clearly(trained, name):
    nets, (x, labels, _, _) = trained
    with torch.no_grad():
        accuracy = float(((nets[name](x)[:, 0] > 0).long().numpy() == labels).mean())
    assert accuracy >= 0.85, f"{name}: accuracy {accuracy:.2f} on {len(labels)} test images (chance 0.5)"


def test_ag_sononet_boxes_overlap_the_drawn_shape(trained):
    nets, test = trained
    check_boxes(nets["ag_sononet"], test)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_ag_sononet_boxes_for_other_seeds(seed):
    data, test = make_data(seed)
    check_boxes(train("ag_sononet", data, seed), test)


def check_boxes(net, test) -> None:
    x, labels, masks, boxes = test
    with torch.no_grad():
        _, maps = net.forward_with_attention(x)
    found = agseg.localise(maps, shape=(SIZE, SIZE))
    with_shape = np.flatnonzero(labels == 1)
    ious = np.array([found[i].box.iou(Box.from_tuple(boxes[i])) if found[i].box else 0.0 for i in with_shape])
    assert np.mean(ious > 0.5) >= 0.7, f"IoU > 0.5 on {np.mean(ious > 0.5):.0%} of the shapes (IoUs {ious.round(2)})"
    assert np.mean([found[i].consistent for i in with_shape]) >= 0.9
    # the attention is where the shape is: the finer gate's mass inside the shapes is several times their area
    fine = F.interpolate(maps["gate0"], size=(SIZE, SIZE), mode="bilinear")[:, 0].numpy()
    inside = np.mean([mass_inside(fine[i], masks[i]) for i in with_shape])
    assert inside > 2.5 * masks[with_shape].mean(), (inside, masks[with_shape].mean())
