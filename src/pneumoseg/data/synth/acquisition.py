"""The acquisition: pose (shift, scale, rotation), exposure, noise and markers."""

from __future__ import annotations

import cv2
import numpy as np


def _pose_matrix(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    angle = rng.normal(0, 2.0)
    shift = np.array([rng.normal(0, 0.02), rng.normal(0.01, 0.03)]) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += shift
    return matrix


def _warp(layer: np.ndarray, matrix: np.ndarray, nearest: bool) -> np.ndarray:
    size = layer.shape[0]
    if nearest:
        return cv2.warpAffine(layer, matrix, (size, size), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(layer, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Window, noise and gamma: density → 8-bit image, different for every 'exposure'."""
    low, high = rng.uniform(-0.06, 0.06), rng.uniform(0.75, 1.0)
    scaled = (density - low) * (1.0 / (high - low))
    noise = rng.standard_normal(density.shape, dtype=np.float32)
    scaled += noise * rng.uniform(0.006, 0.018)
    image = np.clip(scaled * 255.0, 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.75, 1.3)
    lut = np.clip((np.arange(256) / 255.0) ** gamma * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def _draw_side_marker(image: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    scale = size / 700
    x = int(rng.uniform(0.82, 0.9) * size)
    y = int(rng.uniform(0.05, 0.09) * size)
    cv2.putText(image, str(rng.choice(["L", "R"])), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 250,
                max(1, round(2 * scale)), cv2.LINE_AA)

