"""From a probability map to the final mask: threshold, then drop small connected components.

``min_area`` is always given in pixels at the SIIM reference size 1024×1024 (the talk's 3500)
and scaled to the map's own resolution, so the same setting works at 256, 512 or 1024.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pneumoseg.config import PostprocessConfig

REFERENCE_SIZE = 1024


def scaled_min_area(min_area: float, shape: tuple[int, int]) -> int:
    """``min_area`` px at 1024×1024 expressed in pixels of an image of ``shape`` (rounded up,
    so a positive area never shrinks to zero)."""
    return math.ceil(min_area * shape[0] * shape[1] / REFERENCE_SIZE**2 - 1e-9)


def component_areas(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image and per-label pixel counts (label 0 is background) of an 8-connected mask."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` with at least ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask.astype(bool)
    labels, areas = component_areas(mask)
    keep = areas >= min_pixels
    keep[0] = False
    return keep[labels]


def threshold_rule(prob: np.ndarray, pixel_threshold: float, min_area: float) -> np.ndarray:
    """The talk's rule: ``prob > pixel_threshold``, then remove components under ``min_area``."""
    return remove_small_components(prob > pixel_threshold, scaled_min_area(min_area, prob.shape))


def triplet_rule(prob: np.ndarray, top: float, min_area: float, bottom: float) -> np.ndarray:
    """The 1st-place rule: empty unless ``min_area`` pixels exceed ``top``; then ``prob > bottom``."""
    if np.count_nonzero(prob > top) < scaled_min_area(min_area, prob.shape):
        return np.zeros(prob.shape, dtype=bool)
    return prob > bottom


def postprocess(prob: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Apply the configured rule to one probability map (any resolution)."""
    if cfg.rule == "triplet":
        return triplet_rule(prob, cfg.top, cfg.min_area, cfg.bottom)
    return threshold_rule(prob, cfg.pixel_threshold, cfg.min_area)


def resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a probability map to ``shape`` (rows, columns)."""
    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
