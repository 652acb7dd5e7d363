"""Paired bootstrap confidence intervals over images.

Both systems are scored on the same images, so images are resampled together and the
interval is that of the mean per-image difference: the spread between images (some easy,
some hard for everyone) cancels out, which an unpaired comparison of two intervals ignores.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def paired_bootstrap(per_image_a: np.ndarray, per_image_b: np.ndarray, n_resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over images and its 95% percentile-bootstrap interval ``(mean, lo, hi)``.

    ``n_resamples`` resamples of the images with replacement, drawn with
    ``numpy.random.default_rng(seed)``: the same inputs always give the same interval. Pass
    zeros as ``per_image_b`` for the interval of ``a``'s own mean.
    """
    diff = np.asarray(per_image_a, np.float64) - np.asarray(per_image_b, np.float64)
    if diff.ndim != 1:
        raise ValueError(f"expected one score per image, got shapes {np.shape(per_image_a)} and {np.shape(per_image_b)}")
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)
