"""Pneumothorax shapes (the real-shape bank), their placement against the chest wall, and how
they are drawn."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

from pneumoseg.data.synth.anatomy import REAL_LUNG_BOXES, Anatomy

SHAPE_BANK_RESOURCE = "assets/shape_bank.npz"


@dataclass(frozen=True)
class ShapeBank:
    """Real pneumothorax shapes: ``crops[i, :h, :w]`` (uint8, 255 inside, soft edges) with
    ``(h, w) = crop_hw[i]``; ``boxes[i]`` = (x0, y0, x1, y1) of the original mask as fractions of
    the image; ``areas[i]`` = its area in pixels at ``source_size``."""

    crops: np.ndarray
    crop_hw: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    source_size: int

    def __len__(self) -> int:
        return len(self.crops)

    def shape(self, i: int) -> np.ndarray:
        h, w = self.crop_hw[i]
        return self.crops[i, :h, :w]


@functools.cache
def load_shape_bank() -> ShapeBank:
    """The shape bank shipped inside the package (no access to the real data needed)."""
    with resources.files("pneumoseg").joinpath(SHAPE_BANK_RESOURCE).open("rb") as f:
        data = np.load(f)
        return ShapeBank(
            crops=data["crops"],
            crop_hw=data["crop_hw"],
            boxes=data["boxes"],
            areas=data["areas"],
            source_size=int(data["source_size"]),
        )



def _outline_box(outline: np.ndarray) -> np.ndarray:
    return np.concatenate([outline.min(axis=0), outline.max(axis=0)])


def _map_box(box: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Map an (x0, y0, x1, y1) box from the frame of box ``src`` to the frame of box ``dst``."""
    scale = (dst[2:] - dst[:2]) / (src[2:] - src[:2])
    return np.concatenate(
        [dst[:2] + (box[:2] - src[:2]) * scale, dst[:2] + (box[2:] - src[:2]) * scale]
    )


def _sample_shape(
    rng: np.random.Generator, bank: ShapeBank, anatomy: Anatomy
) -> tuple[np.ndarray, np.ndarray]:
    """A bank shape and its box (unit coords) on the drawn lung: the real box, relative to the
    real lung field of its side, mapped onto the drawn lung of that side (mirrored to the other
    side half the time), jittered in position, enlarged by 0-30% (clipping to the drawn lung
    takes back about as much) and kept over the lung's bounding box."""
    i = int(rng.integers(len(bank)))
    box, shape = bank.boxes[i].copy(), bank.shape(i)
    if rng.random() < 0.5:
        box = np.array([1 - box[2], box[1], 1 - box[0], box[3]], np.float32)
        shape = shape[:, ::-1]
    side = int((box[0] + box[2]) / 2 > 0.5)
    lung_box = _outline_box(anatomy.lungs[side])
    box = _map_box(box, REAL_LUNG_BOXES[side], lung_box)
    half = (box[2:] - box[:2]) / 2 * rng.uniform(1.0, 1.3)
    half = np.minimum(half, (lung_box[2:] - lung_box[:2]) / 2)
    centre = (box[:2] + box[2:]) / 2 + rng.normal(0, 0.012, 2)
    centre = np.clip(centre, lung_box[:2] + half, lung_box[2:] - half)
    return np.ascontiguousarray(shape), np.concatenate([centre - half, centre + half])


def _shift_to_chest_wall(inside: np.ndarray, origin: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Move a shape (``inside`` at top-left ``origin`` = (x, y)) outward until it touches the
    lung's edge: a pneumothorax lies between lung and chest wall, never inside the lung."""
    size = depth.shape[0]
    h, w = inside.shape
    local = np.where(inside > 0, depth[origin[1]:origin[1] + h, origin[0]:origin[0] + w], np.inf)
    gap = float(local.min())
    if gap <= 1.0 or not np.isfinite(gap):
        return origin
    y, x = np.unravel_index(int(np.argmin(local)), local.shape)
    y, x = min(max(y + origin[1], 1), size - 2), min(max(x + origin[0], 1), size - 2)
    gradient = np.array([depth[y, x + 1] - depth[y, x - 1], depth[y + 1, x] - depth[y - 1, x]])
    norm = float(np.hypot(*gradient))
    if norm == 0.0:
        return origin
    shifted = origin - np.round(gradient / norm * (gap + 1.0)).astype(int)
    return np.clip(shifted, 0, [size - w, size - h])


def _roi(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    size = mask.shape[0]
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, size)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, size)))


def _fill_to_chest_wall(
    mask: np.ndarray, lung_mask: np.ndarray, free: np.ndarray, gap_px: int
) -> np.ndarray:
    """Close gaps narrower than ~2 * ``gap_px`` between the mask and the lung's edge: a real
    shape rarely follows the drawn chest wall exactly, and no lung is left outside the air."""
    roi = _roi(mask, margin=2 * gap_px)
    m = mask[roi]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap_px + 1, 2 * gap_px + 1))
    closed = cv2.morphologyEx(m | (1 - lung_mask[roi]), cv2.MORPH_CLOSE, kernel)
    filled = mask.copy()
    filled[roi] = m | (closed & cv2.dilate(m, kernel) & free[roi])
    return filled


def place_pneumothorax(
    rng: np.random.Generator,
    bank: ShapeBank,
    anatomy: Anatomy,
    lung_mask: np.ndarray,
    depth: np.ndarray,
    taken: np.ndarray,
    tries: int = 25,
) -> np.ndarray | None:
    """A pneumothorax mask (uint8 0/1) from the bank, against the chest wall, clipped to
    ``lung_mask`` and apart from ``taken``. ``depth`` is the lung's distance transform.
    Placements that lose more than 40% of the shape to clipping are redrawn; after ``tries``
    the largest placement found is kept (None if there was none)."""
    size = lung_mask.shape[0]
    near_taken = cv2.dilate(taken, np.ones((5, 5), np.uint8), iterations=max(1, size // 256))
    free = lung_mask & (1 - near_taken)
    best: np.ndarray | None = None
    best_area = 0
    for _ in range(tries):
        shape, box = _sample_shape(rng, bank, anatomy)
        x0, y0, x1, y1 = np.round(box * size).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        scaled = cv2.resize(shape, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        inside = (scaled > 127).astype(np.uint8)
        x0, y0 = _shift_to_chest_wall(inside, np.array([x0, y0]), depth)
        y1, x1 = y0 + inside.shape[0], x0 + inside.shape[1]
        mask = np.zeros_like(lung_mask)
        mask[y0:y1, x0:x1] = inside & free[y0:y1, x0:x1]
        if mask.any():
            mask = _fill_to_chest_wall(mask, lung_mask, free, gap_px=max(2, size // 50))
        area, wanted = int(mask.sum()), int(inside.sum())
        if area >= 0.6 * wanted and area > 0:
            return mask
        if area > best_area:
            best, best_area = mask, area
    return best


def _facing_lung(ring: np.ndarray, mask: np.ndarray, depth: np.ndarray, window: int) -> np.ndarray:
    """The part of ``ring`` (pixels around ``mask``) deeper in the lung than the mask pixels near
    it: the border toward the collapsed lung, not the one along the chest wall."""
    m = mask.astype(np.float32)
    near = cv2.boxFilter(m, -1, (window, window), normalize=False)
    depth_sum = cv2.boxFilter(depth * m, -1, (window, window), normalize=False)
    mask_depth = depth_sum / np.maximum(near, 1e-6)
    return ring & (near > 0) & (depth > mask_depth)


def render_pneumothorax(density: np.ndarray, vessel_visibility: np.ndarray, air_deficit: np.ndarray,
                        mask: np.ndarray, lung_mask: np.ndarray, depth: np.ndarray,
                        rng: np.random.Generator) -> None:
    """Draw one pneumothorax into the full-resolution layers, in place: air (as dark as a
    full-thickness lung and darker still, with no vessel markings), the thin bright visceral
    pleural line along the border facing the lung, and a band of slightly denser collapsed lung
    just inside that line."""
    size = mask.shape[0]
    roi = _roi(mask, margin=max(4, size // 25))
    m, lung, d = mask[roi], lung_mask[roi].astype(bool), depth[roi]
    soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(0.5, size / 900))
    vessel_visibility[roi] *= 1.0 - soft
    # Conspicuity varies from subtle to obvious between cases.
    darkening = rng.uniform(0.03, 0.06)
    density[roi] -= (darkening + rng.uniform(0.55, 0.9) * air_deficit[roi]) * soft

    kernel = np.ones((3, 3), np.uint8)
    line_px = max(1, round(size / 400))
    ring = (cv2.dilate(m, kernel, iterations=line_px) > m) & lung
    pleura = _facing_lung(ring, m, d, 2 * line_px + 5).astype(np.float32)
    pleura = cv2.GaussianBlur(pleura, (0, 0), max(0.5, size / 1400))
    density[roi] += rng.uniform(0.09, 0.15) * pleura

    band_px = max(2, size // 60)
    band = (cv2.dilate(m, kernel, iterations=band_px) > m) & lung
    band = _facing_lung(band, m, d, 2 * band_px + 1).astype(np.float32)
    density[roi] += 0.35 * darkening * cv2.GaussianBlur(band, (0, 0), max(1.0, size / 120))

