"""Pictures a person looks at: the X-ray with the predicted region outlined, and the
probability map, as PNG. ``predict --overlays/--probs`` and the web viewer draw with these, so
every output outlines the same pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.preprocess import resize_mask
from pneumoseg.io import atomic_write_bytes


def save_overlay(path: Path, image: DicomImage, mask_1024: np.ndarray, probability: float | None) -> None:
    """The X-ray at its own size with the predicted region outlined in red."""
    write_png(path, draw_overlay(image, mask_1024, probability))


RED, GREEN, YELLOW = (0, 0, 255), (0, 255, 0), (0, 255, 255)  # BGR, as OpenCV draws


def outline(bgr: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], *, thickness: int = 2,
            fill: float = 0.0) -> np.ndarray:
    """Draw ``mask``'s outline on ``bgr`` (in place, and returned), tinting its inside by ``fill``
    (0: outline only). Every picture of a mask is drawn this way: overlays, the viewer, the
    report's panels."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return bgr
    if fill:
        tinted = bgr.copy()
        tinted[mask] = colour
        cv2.addWeighted(tinted, fill, bgr, 1.0 - fill, 0.0, dst=bgr)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(bgr, contours, -1, colour, thickness)
    return bgr


def draw_overlay(image: DicomImage, mask_1024: np.ndarray, probability: float | None) -> np.ndarray:
    """The X-ray at its own size (BGR uint8) with the predicted region outlined in red and a
    one-line label (the verdict and, when given, the classifier probability)."""
    grey = np.clip(np.rint(image.pixels * 255), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    rows, cols = image.shape
    mask = resize_mask(mask_1024, (rows, cols))
    outline(bgr, mask, RED, thickness=max(2, round(max(rows, cols) / 300)))
    label = "pneumothorax" if mask.any() else "no pneumothorax"
    if probability is not None:
        label += f"  p={probability:.2f}"
    scale = max(rows, cols) / 1400
    cv2.putText(bgr, label, (int(20 * scale), int(50 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, YELLOW,
                max(1, round(2 * scale)), cv2.LINE_AA)
    return bgr


def save_probability_map(path: Path, seg_prob: np.ndarray) -> None:
    write_png(path, np.clip(np.rint(seg_prob * 255), 0, 255).astype(np.uint8))


def write_png(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(image, name=str(path)))


def encode_png(image: np.ndarray, *, name: str = "image") -> bytes:
    """PNG bytes of a grey or BGR uint8 array (``name`` is used in the error message)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode {name} as PNG")
    return encoded.tobytes()
