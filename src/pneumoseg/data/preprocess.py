"""Turning a decoded X-ray into model input: resize to the working resolution, normalise.

Grey pixels are replicated to three channels, scaled to [0, 1] and normalised with the mean
and std of the encoder's pretrained weights (a :class:`Normalisation`; which one a model uses
is decided by :mod:`pneumoseg.models.normalisation` and recorded with every run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from pneumoseg.errors import PneumosegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalisation:
    """``x[c] = (grey / 255 - mean[c]) / std[c]``; ``source`` says where the numbers came from."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""

    def __post_init__(self) -> None:
        values = (*self.mean, *self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in values) \
                or min(self.std) <= 0:
            raise ValueError(f"normalisation needs 3 finite means and 3 positive stds, got {self.mean}, {self.std}")

    def to_json(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Normalisation:
        """Read a :meth:`to_json` dict; ``where`` names the file in the one-line error."""
        try:
            return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                       str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise PneumosegError(f"{where}: bad normalisation entry ({exc})") from None


IMAGENET = Normalisation(IMAGENET_MEAN, IMAGENET_STD, "ImageNet")
LEGACY = Normalisation(IMAGENET_MEAN, IMAGENET_STD, "ImageNet: the run records none (made before pneumoseg did)")
"""What runs that record no normalisation were trained with."""


def resize_to_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize float pixels in [0, 1] to ``size``×``size`` uint8 (area interpolation when shrinking)."""
    interpolation = cv2.INTER_AREA if max(pixels.shape) > size else cv2.INTER_LINEAR
    resized = cv2.resize(pixels.astype(np.float32), (size, size), interpolation=interpolation)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The one rule for resizing a mask to ``shape`` (rows, columns), as bool: an output pixel is
    on when at least half of the input area it covers is. Shrinking, that is an area average
    (training labels, 1024 -> 512); enlarging, each output pixel lies in one input pixel, which
    is nearest-neighbour (a 1024² prediction on a larger film). Overlays, DICOM SEG and labels
    all go through it, so every output outlines the same pixels."""
    rows, cols = shape
    if mask.shape == (rows, cols):
        return mask.astype(bool)
    if rows <= mask.shape[0] and cols <= mask.shape[1]:
        return cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA) >= 0.5
    return cv2.resize(mask.astype(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)


def to_model_input(images: np.ndarray, normalisation: Normalisation) -> torch.Tensor:
    """uint8 grey ``(H, W)`` or ``(N, H, W)`` → normalised float tensor ``(3, H, W)`` or ``(N, 3, H, W)``."""
    grey = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    mean = torch.tensor(normalisation.mean).view(3, 1, 1)
    std = torch.tensor(normalisation.std).view(3, 1, 1)
    return (grey.unsqueeze(-3) - mean) / std
