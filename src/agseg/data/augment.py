"""Seeded data augmentation for 2D and 3D, built from MONAI dictionary transforms.

Order: pad to the patch size -> random crop (foreground-balanced: a fraction ``pos_fraction`` of the patches is
centred on a foreground voxel, so small structures are seen) -> random affine (rotation, scaling; image bilinear,
label nearest) -> random flips -> intensity jitter (scale, shift, Gaussian noise; image only).

The same code serves 2D and 3D (MONAI picks the dimensionality from the array). Randomness comes from one
``numpy.random.RandomState`` per :class:`Augmenter`; pass ``seed=`` to a call to make that sample reproducible
regardless of worker processes (the torch dataset does this per ``(seed, epoch, index)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (frozen, YAML-friendly via ``to_dict``/``from_dict``).

    Attributes:
        rotate_deg: Maximum rotation in degrees (about every axis in 3D); 0 disables.
        scale: Maximum relative zoom: factors drawn from ``[1 - scale, 1 + scale]``; 0 disables.
        affine_prob: Probability of applying the affine (rotation + scale) to a sample.
        flip_axes: Spatial axes (array order, 0 = first spatial axis) that may be flipped. Default none, because
            flips change laterality (left/right lungs, heart side); e.g. ``(1,)`` flips 2D images left-right.
        flip_prob: Probability of flipping each axis in ``flip_axes``.
        patch_size: Random crop size (array order); ``None`` keeps the full image.
        pos_fraction: Fraction of crops centred on foreground (label > 0); the rest on background.
        intensity_scale: Maximum relative intensity scaling (``x * (1 + u)``, ``|u| <= intensity_scale``).
        intensity_shift: Maximum additive shift (in the units of the normalised image).
        intensity_prob: Probability of each of scaling and shifting.
        noise_std: Maximum standard deviation of additive Gaussian noise; 0 disables.
        noise_prob: Probability of adding noise.
    """

    rotate_deg: float = 15.0
    scale: float = 0.15
    affine_prob: float = 0.5
    flip_axes: tuple[int, ...] = ()
    flip_prob: float = 0.5
    patch_size: tuple[int, ...] | None = None
    pos_fraction: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    intensity_prob: float = 0.5
    noise_std: float = 0.0
    noise_prob: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        if not 0 <= self.pos_fraction <= 1:
            raise ValueError(f"pos_fraction must be in [0, 1], got {self.pos_fraction}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale must be in [0, 1), got {self.scale}")
        for name in ("affine_prob", "flip_prob", "intensity_prob", "noise_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("rotate_deg", "intensity_scale", "intensity_shift", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        return cls(**dict(d))


class Augmenter:
    """Random augmentation of ``(image, label)`` pairs in 2D or 3D.

    Args:
        config: Settings (default :class:`AugmentConfig`).
        spatial_dims: 2 or 3.
        seed: Seed of the augmenter's own random state (used when a call passes no ``seed``).

    Example:
        >>> aug = Augmenter(AugmentConfig(patch_size=(64, 64, 64)), spatial_dims=3, seed=0)
        >>> image, label = aug(image, label, seed=123)   # (C, 64, 64, 64) float32, (64, 64, 64) int64
    """

    def __init__(self, config: AugmentConfig | None = None, spatial_dims: int = 2, seed: int | None = 0) -> None:
        self.config = config or AugmentConfig()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if self.config.patch_size is not None and len(self.config.patch_size) != spatial_dims:
            raise ValueError(f"patch_size {self.config.patch_size} is not {spatial_dims}D")
        self.spatial_dims = spatial_dims
        self._with_label = self._build(True)
        self._without_label = self._build(False)
        if seed is not None:
            self._with_label.set_random_state(seed)
            self._without_label.set_random_state(seed)

    def __repr__(self) -> str:
        return f"Augmenter({self.config}, spatial_dims={self.spatial_dims})"

    def _build(self, with_label: bool) -> Compose:
        c, nd = self.config, self.spatial_dims
        keys = ["image", "label"] if with_label else ["image"]
        t: list[Any] = []
        if c.patch_size is not None:
            t.append(SpatialPadd(keys, spatial_size=c.patch_size))
            if with_label and c.pos_fraction > 0:
                pos, neg = c.pos_fraction, 1.0 - c.pos_fraction
                t.append(RandCropByPosNegLabeld(keys, "label", c.patch_size, pos=pos, neg=neg, num_samples=1))
            else:
                t.append(RandSpatialCropd(keys, roi_size=c.patch_size, random_size=False))
        if c.affine_prob > 0 and (c.rotate_deg > 0 or c.scale > 0):
            rot = math.radians(c.rotate_deg)
            t.append(
                RandAffined(
                    keys,
                    prob=c.affine_prob,
                    rotate_range=(rot,) * (1 if nd == 2 else 3) if rot > 0 else None,
                    scale_range=(c.scale,) * nd if c.scale > 0 else None,
                    mode=("bilinear", "nearest")[: len(keys)],
                    padding_mode="zeros",
                )
            )
        for ax in c.flip_axes:
            t.append(RandFlipd(keys, prob=c.flip_prob, spatial_axis=ax % nd))
        if c.intensity_scale > 0:
            t.append(RandScaleIntensityd("image", factors=c.intensity_scale, prob=c.intensity_prob))
        if c.intensity_shift > 0:
            t.append(RandShiftIntensityd("image", offsets=c.intensity_shift, prob=c.intensity_prob))
        if c.noise_std > 0:
            t.append(RandGaussianNoised("image", prob=c.noise_prob, std=c.noise_std))
        return Compose(t)

    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        label: np.ndarray | torch.Tensor | None = None,
        *,
        seed: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment one sample.

        Args:
            image: ``(C, *spatial)``.
            label: ``(*spatial)`` integer labels, or ``None``.
            seed: Reseed the random state for this call (reproducible per sample).

        Returns:
            ``(image, label)``: float32 ``(C, *spatial')`` and int64 ``(*spatial')`` (or ``None``); ``spatial'`` is
            ``patch_size`` when set.
        """
        nd = self.spatial_dims
        img = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image)
        if img.ndim != nd + 1:
            raise ValueError(f"image must be (C, *spatial) with {nd} spatial dims, got {tuple(img.shape)}")
        data: dict[str, Any] = {"image": img.float()}
        if label is not None:
            lab = torch.as_tensor(np.asarray(label)) if isinstance(label, np.ndarray) else label
            data["label"] = lab.reshape(1, *lab.shape[-nd:]).to(torch.float32)
        tf = self._with_label if label is not None else self._without_label
        if seed is not None:
            tf.set_random_state(seed=int(seed) % (2**32))
        out = tf(data)
        if isinstance(out, list):  # RandCropByPosNegLabeld returns a list of samples
            out = out[0]
        img_out = _plain(out["image"]).float().contiguous()
        lab_out = _plain(out["label"])[0].round().long().contiguous() if label is not None else None
        return img_out, lab_out


def _plain(x: Any) -> torch.Tensor:
    """MONAI MetaTensor -> plain torch.Tensor (collates and pickles cheaply)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
