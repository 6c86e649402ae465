"""Seeded 2D/3D augmentation: shapes, determinism, labels stay labels, foreground-balanced crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agseg.data import AugmentConfig, Augmenter


def _sample(nd: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (40, 48) if nd == 2 else (20, 24, 28)
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(s // 4, s // 2) for s in shape)] = 1
    label[tuple(slice(s // 2, s // 2 + 3) for s in shape)] = 2
    return rng.random((2, *shape)).astype(np.float32), label


@pytest.mark.parametrize("nd", [2, 3])
def test_shapes_dtypes_and_labels(nd: int) -> None:
    image, label = _sample(nd)
    cfg = AugmentConfig(affine_prob=1.0, flip_axes=tuple(range(nd)), noise_std=0.1, noise_prob=1.0)
    img, lab = Augmenter(cfg, nd)(image, label, seed=1)
    assert img.shape == image.shape and img.dtype == torch.float32
    assert lab.shape == label.shape and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(img, torch.from_numpy(image))


@pytest.mark.parametrize("nd", [2, 3])
def test_seeded_and_varied(nd: int) -> None:
    image, label = _sample(nd)
    aug = Augmenter(AugmentConfig(affine_prob=1.0, patch_size=(16,) * nd), nd)
    a1, l1 = aug(image, label, seed=7)
    aug(image, label, seed=8)
    a2, l2 = aug(image, label, seed=7)
    assert torch.equal(a1, a2) and torch.equal(l1, l2)
    b, _ = Augmenter(AugmentConfig(affine_prob=1.0, patch_size=(16,) * nd), nd)(image, label, seed=7)
    assert torch.equal(a1, b)  # same seed, fresh augmenter: same sample
    c, _ = aug(image, label, seed=9)
    assert not torch.equal(a1, c)


def test_foreground_balanced_crops_find_small_structures() -> None:
    image = np.zeros((1, 40, 40, 40), np.float32)
    label = np.zeros((40, 40, 40), np.uint8)
    label[30:33, 5:8, 33:36] = 1  # 27 voxels in 64000
    aug = Augmenter(AugmentConfig(patch_size=(16, 16, 16), pos_fraction=1.0, affine_prob=0), 3)
    assert all(aug(image, label, seed=s)[1].any() for s in range(10))
    half = Augmenter(AugmentConfig(patch_size=(16, 16, 16), pos_fraction=0.5, affine_prob=0), 3)
    hits = sum(bool(half(image, label, seed=s)[1].any()) for s in range(30))
    assert 6 <= hits <= 24


def test_small_images_are_padded_and_no_label() -> None:
    aug = Augmenter(AugmentConfig(patch_size=(32, 32)), 2)
    img, lab = aug(np.ones((1, 20, 40), np.float32), None, seed=0)
    assert img.shape == (1, 32, 32) and lab is None
    # without affine and intensity changes the content is kept as it is: 20 rows padded to 32 with zero rows,
    # 40 columns cropped to a window of 32 consecutive ones (pixel value = column index + 1, never 0)
    src = np.tile(np.arange(1, 41, dtype=np.float32), (20, 1))[None]
    plain = Augmenter(AugmentConfig(patch_size=(32, 32), affine_prob=0, intensity_prob=0), 2)
    for seed in range(3):
        a = plain(src, None, seed=seed)[0][0].numpy()
        kept = a.any(axis=1)
        assert a.shape == (32, 32) and int(kept.sum()) == 20 and (a[~kept] == 0).all()
        start = int(a[kept][0, 0]) - 1
        np.testing.assert_array_equal(a[kept], src[0, :, start : start + 32])
    with pytest.raises(ValueError, match="3D"):
        Augmenter(AugmentConfig(patch_size=(8, 8)), 3)
    assert AugmentConfig.from_dict(AugmentConfig(flip_axes=(1,)).to_dict()) == AugmentConfig(flip_axes=(1,))
