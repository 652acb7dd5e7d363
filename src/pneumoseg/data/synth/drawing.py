"""Drawing helpers shared by the synthetic film's layers: fixed-point cv2 drawing in unit-square
coordinates, anti-aliased fills, blurs."""

from __future__ import annotations

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 drawing "shift": coordinates carry 4 fractional bits
SUBPIXEL = 1 << SUBPIXEL_BITS


def _smooth_closed(points: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Chaikin corner cutting: a smooth closed curve through the neighbourhood of ``points``."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        cut = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1)
        points = cut.reshape(-1, 2)
    return points



def _fixed(points: np.ndarray, size: int) -> np.ndarray:
    """Unit-square points → cv2 fixed-point pixel coordinates (``SUBPIXEL_BITS`` fraction)."""
    return np.round(np.asarray(points) * size * SUBPIXEL).astype(np.int32)


def _filled(size: int, outlines) -> np.ndarray:
    """Filled closed outlines as a float layer in [0, 1], anti-aliased (OpenCV anti-aliases
    only 8-bit canvases, hence the detour)."""
    canvas = np.zeros((size, size), np.uint8)
    for outline in outlines:
        cv2.fillPoly(canvas, [_fixed(outline, size)], 255, cv2.LINE_AA, SUBPIXEL_BITS)
    return canvas.astype(np.float32) * (1.0 / 255)


def _filled_ellipses(size: int, ellipses) -> np.ndarray:
    """Filled axis-aligned ellipses ((centre, semi-axes) pairs) as a float layer in [0, 1]."""
    canvas = np.zeros((size, size), np.uint8)
    for centre, axes in ellipses:
        _ellipse(canvas, centre, axes, 255)
    return canvas.astype(np.float32) * (1.0 / 255)


def _ellipse(canvas: np.ndarray, centre, axes, value: int) -> None:
    """Fill an axis-aligned ellipse (unit-square centre and semi-axes) on a uint8 canvas."""
    size = canvas.shape[0]
    centre_px, axes_px = tuple(_fixed(centre, size)), tuple(_fixed(axes, size))
    cv2.ellipse(canvas, centre_px, axes_px, 0, 0, 360, value, -1, cv2.LINE_AA, SUBPIXEL_BITS)


def _blur(canvas: np.ndarray, sigma_frac: float) -> np.ndarray:
    """Gaussian blur with a sigma given as a fraction of the canvas size."""
    return cv2.GaussianBlur(canvas, (0, 0), max(0.5, sigma_frac * canvas.shape[0]))



def _ramp_from_edge(mask: np.ndarray, width_frac: float) -> np.ndarray:
    """0 at the edge of ``mask`` rising to 1 at ``width_frac`` of the canvas inside it: the
    thickness of a rounded body (tissue, or a lung's air) seen end-on."""
    depth = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(depth / (width_frac * mask.shape[0]), 0.0, 1.0) ** 0.6

