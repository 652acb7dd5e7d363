"""Turning a decoded X-ray into model input: resize to the working resolution, normalise.

Grey pixels are replicated to three channels and normalised with the ImageNet statistics
that timm/smp encoders expect, so pretrained weights can be used unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_to_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize float pixels in [0, 1] to ``size``×``size`` uint8 (area interpolation when shrinking)."""
    interpolation = cv2.INTER_AREA if max(pixels.shape) > size else cv2.INTER_LINEAR
    resized = cv2.resize(pixels.astype(np.float32), (size, size), interpolation=interpolation)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool mask to ``size``×``size``: a pixel is on when at least half of its area is."""
    resized = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return resized >= 0.5


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 grey ``(H, W)`` or ``(N, H, W)`` → normalised float tensor ``(3, H, W)`` or ``(N, 3, H, W)``."""
    grey = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (grey.unsqueeze(-3) - mean) / std
