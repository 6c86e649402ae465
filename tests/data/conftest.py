"""Fixtures for the data tests: tiny synthetic datasets written in real formats and layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from agseg.data import Geometry, write_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only synthetic datasets, one folder per kind (tests must not modify them)."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root / "cxr", "cxr", n=4, size=64, seed=1)
    write_dataset(root / "montgomery", "montgomery", n=3, size=64, seed=2)
    write_dataset(root / "volumes", "volumes", n=3, size=(12, 20, 24), seed=3, spacing=(0.8, 0.9, 2.5))
    write_dataset(root / "msd", "msd", n=3, size=(12, 20, 24), seed=4)
    write_dataset(root / "luna16", "luna16", n=2, size=(12, 24, 24), seed=5)
    write_dataset(root / "dsb", "dsb", n=3, size=48, seed=6)
    write_dataset(root / "brats", "brats", n=4, size=(12, 20, 24), seed=7)
    return root


@pytest.fixture
def rotated_geometry() -> Geometry:
    """Anisotropic spacing and a non-identity (right-handed) direction, as in an oblique MR or tilted CT."""
    r = Rotation.from_euler("zyx", [25, 10, -15], degrees=True).as_matrix()
    return Geometry((0.7, 0.9, 2.5), (12.5, -30.0, 101.0), tuple(r.ravel()), (14, 22, 26), "mhd", "int16")


@pytest.fixture
def sphere_volume(rotated_geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``(image int16 (14, 22, 26), mask uint8)``: an ellipsoid (label 1) with a core (label 2)."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in rotated_geometry.shape], indexing="ij")
    r = np.sqrt(z**2 + y**2 + x**2)
    mask = np.zeros(rotated_geometry.shape, np.uint8)
    mask[r < 0.7] = 1
    mask[r < 0.35] = 2
    rng = np.random.default_rng(0)
    image = (mask * 100 + rng.normal(0, 5, mask.shape)).astype(np.int16)
    return image, mask
