"""Test-time augmentation: average a model's logits over the image and its horizontal mirror."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def hflip_tta(forward: Forward) -> Forward:
    """Wrap ``forward`` (N,3,H,W → logits) so it also runs on the mirrored batch and averages.

    Spatial outputs (N,C,H,W) are mirrored back before averaging; per-image outputs are not.
    """

    def averaged(x: np.ndarray) -> np.ndarray:
        plain = forward(x)
        mirrored = forward(np.ascontiguousarray(x[..., ::-1]))
        if mirrored.ndim == 4:
            mirrored = mirrored[..., ::-1]
        return (plain + mirrored) / 2

    return averaged
