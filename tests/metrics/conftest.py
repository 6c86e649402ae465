"""Random blobs for the metric tests: smoothed noise thresholded at a quantile (ragged, several components)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage


def make_blob(
    rng: np.random.Generator, shape: tuple[int, ...], fraction: float = 0.3, sigma: float = 2.0
) -> np.ndarray:
    """Boolean mask covering about ``fraction`` of ``shape``."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1.0 - fraction)


@pytest.fixture
def blobs() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``blobs(shape, seed)`` -> two overlapping random masks (the second a perturbed copy of the first)."""

    def _make(shape: tuple[int, ...], seed: int = 0, fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        a = make_blob(rng, shape, fraction)
        noise = make_blob(rng, shape, 0.15, sigma=1.5)
        b = (a ^ noise) if seed % 2 else ndimage.binary_dilation(a) & ~make_blob(rng, shape, 0.1)
        return a, b

    return _make
