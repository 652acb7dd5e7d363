"""The acquisition: pose (shift, scale, rotation), blur, exposure (window, gamma, noise),
collimation borders and side markers. The exposed film is kept at 16 bits (``uint16``, full
range); the 8-bit image and the 12/16-bit DICOM files are both made from it."""

from __future__ import annotations

import cv2
import numpy as np

COLLIMATION_RATE = 0.3  # share of films with collimation borders (1-2 straight edges)
SIDE_MARKER_RATE = 0.6  # share of films with a burned-in L/R marker
AP_MAGNIFICATION = 1.05  # AP films: source closer, chest shown larger


def _pose_matrix(rng: np.random.Generator, size: int, scale: float, ap: bool) -> np.ndarray:
    angle = rng.normal(0, 3.0 if ap else 1.8)  # AP (portable) films are less well centred
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
    """Blur, window, noise and gamma: density → 16-bit film, different for every exposure.

    Contrast (window width), brightness (window level), gamma, unsharpness and quantum noise
    are drawn per film."""
    size = density.shape[0]
    sigma = rng.uniform(0.0, 1.2) * size / 1024
    if sigma > 0.3:
        density = cv2.GaussianBlur(density, (0, 0), sigma)
    low, high = rng.uniform(-0.08, 0.08), rng.uniform(0.7, 1.05)
    scaled = (density - low) * (1.0 / (high - low))
    noise = rng.standard_normal(density.shape, dtype=np.float32)
    scaled += noise * rng.uniform(0.005, 0.022)
    film = np.clip(scaled * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    gamma = rng.uniform(0.7, 1.35)
    lut = np.clip((np.arange(65536) / 65535.0) ** gamma * 65535.0 + 0.5, 0, 65535)
    return lut.astype(np.uint16)[film]


def collimate(film: np.ndarray, rng: np.random.Generator) -> bool:
    """Collimation borders on some films (``COLLIMATION_RATE``): one or two straight, slightly
    tilted edges near the frame margins, beyond which the film is bright (unexposed) or dark
    (processed to black). In place; returns whether any was drawn."""
    if rng.random() >= COLLIMATION_RATE:
        return False
    size = film.shape[0]
    value = rng.uniform(0.85, 0.98) if rng.random() < 0.6 else rng.uniform(0.0, 0.06)
    for edge in rng.permutation(4)[: int(rng.integers(1, 3))]:
        depth = rng.uniform(0.01, 0.07) * size
        tilt = rng.normal(0, 0.015) * size
        a, b = depth, depth + tilt
        if edge in (0, 2):  # left / right: x = a..b down the image
            pts = [(0, 0), (a, 0), (b, size), (0, size)]
        else:  # top / bottom
            pts = [(0, 0), (0, a), (size, b), (size, 0)]
        pts = np.array(pts, np.float64)
        if edge == 2:
            pts[:, 0] = size - pts[:, 0]
        if edge == 3:
            pts[:, 1] = size - pts[:, 1]
        cv2.fillPoly(film, [np.round(pts).astype(np.int32)], int(value * 65535), cv2.LINE_8)
    return True


def draw_side_marker(film: np.ndarray, rng: np.random.Generator) -> None:
    """A burned-in L/R marker near the top right corner, in place."""
    size = film.shape[0]
    scale = size / 700
    layer = np.zeros(film.shape, np.uint8)
    x = int(rng.uniform(0.82, 0.9) * size)
    y = int(rng.uniform(0.05, 0.09) * size)
    cv2.putText(layer, str(rng.choice(["L", "R"])), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, round(2 * scale)), cv2.LINE_AA)
    np.maximum(film, (layer.astype(np.uint32) * 64250 // 255).astype(np.uint16), out=film)


def film_to_8bit(film: np.ndarray) -> np.ndarray:
    """The 8-bit image of a 16-bit film (rounded)."""
    return ((film.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
