"""Pneumothorax shapes (the real-shape bank), their placement against the chest wall, and how
they are drawn."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

from pneumoseg.data.synth.anatomy import REAL_LUNG_BOXES, Anatomy
from pneumoseg.data.synth.real_stats import REAL_STATS

SHAPE_BANK_RESOURCE = "assets/shape_bank.npz"
# Linear scale on the sampled shape box: clipping to the drawn lung and closing the gap to the
# chest wall change the area; this keeps the generated quantiles on the real ones.
AREA_COMPENSATION = 1.2
PARTIAL_RATE = 0.3  # share of pneumothoraces of which one part fades out


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


def sample_instance_area(rng: np.random.Generator) -> float:
    """An instance area (fraction of the image) drawn from the real label file's distribution:
    inverse CDF through its 5 % quantiles, interpolated in log area."""
    table = np.log(np.asarray(REAL_STATS["instance_area_quantiles_px"], np.float64))
    u = rng.uniform(0.0, 1.0) * (len(table) - 1)
    k = min(int(u), len(table) - 2)
    return float(np.exp(table[k] + (u - k) * (table[k + 1] - table[k]))) / 1024**2


def _sample_shape(
    rng: np.random.Generator, bank: ShapeBank, anatomy: Anatomy, target_area: float
) -> tuple[np.ndarray, np.ndarray]:
    """A bank shape and its box (unit coords) on the drawn lung: one of the bank shapes nearest
    in area to ``target_area`` (fraction of the image), its real box, relative to the real lung
    field of its side, mapped onto the drawn lung of that side (mirrored to the other side half
    the time), scaled to the target area (the bank holds no shape under 0.2 % of the image; most
    real ones are a little larger than their bank neighbour anyway), jittered in position and
    kept over the lung's bounding box."""
    rank = int(np.searchsorted(bank.areas, target_area * bank.source_size**2))
    i = int(np.clip(rank + rng.integers(-12, 13), 0, len(bank) - 1))
    box, shape = bank.boxes[i].copy(), bank.shape(i)
    if rng.random() < 0.5:
        box = np.array([1 - box[2], box[1], 1 - box[0], box[3]], np.float32)
        shape = shape[:, ::-1]
    side = int((box[0] + box[2]) / 2 > 0.5)
    lung_box = _outline_box(anatomy.lungs[side])
    box = _map_box(box, REAL_LUNG_BOXES[side], lung_box)
    scale = np.sqrt(target_area * bank.source_size**2 / float(bank.areas[i])) * AREA_COMPENSATION
    half = (box[2:] - box[:2]) / 2 * scale
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
    # At least ~16 px: at small sizes the smallest real shapes would vanish (a resolution
    # floor; at 256 px and up it is below every real quantile and changes nothing).
    target_area = max(sample_instance_area(rng), 16.0 / size**2)
    for _ in range(tries):
        shape, box = _sample_shape(rng, bank, anatomy, target_area)
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


def sample_conspicuity(rng: np.random.Generator) -> float:
    """How visible one pneumothorax is, 0 (barely) .. 1 (obvious); most are subtle."""
    return float(rng.beta(1.5, 2.5))


def _dashes(shape: tuple[int, int], keep: float, scale_px: float,
            rng: np.random.Generator) -> np.ndarray:
    """A smooth 0..1 field that is 1 on about ``keep`` of the area, in blobs ~``scale_px``
    across: where a pleural line shows and where it breaks."""
    lo = (max(2, round(shape[0] / scale_px)), max(2, round(shape[1] / scale_px)))
    field = cv2.resize(rng.standard_normal(lo).astype(np.float32), (shape[1], shape[0]),
                       interpolation=cv2.INTER_CUBIC)
    threshold = float(np.quantile(field, 1.0 - keep))
    return np.clip((field - threshold) * 2.0 + 0.5, 0.0, 1.0)


def render_pneumothorax(density: np.ndarray, vessel_visibility: np.ndarray, air_deficit: np.ndarray,
                        mask: np.ndarray, lung_mask: np.ndarray, depth: np.ndarray,
                        rng: np.random.Generator) -> float:
    """Draw one pneumothorax into the full-resolution layers, in place; returns its conspicuity.

    The pleural space is filled with air, so it shows the full-thickness darkness the thin lung
    edge lacked (a fraction of ``air_deficit``) and a little more: only slightly darker than
    the aerated lung beside it. It has no vessel markings (always: that and the line are the
    real cues). The visceral pleural line is a thin faint bright line along the border facing
    the lung, broken in places; just inside it the collapsed lung is slightly denser. The
    conspicuity (rim contrast, line strength and continuity) is drawn per case, and part of a
    pneumothorax can fade out (``PARTIAL_RATE``)."""
    size = mask.shape[0]
    conspicuity = sample_conspicuity(rng)
    roi = _roi(mask, margin=max(4, size // 25))
    m, lung, d = mask[roi], lung_mask[roi].astype(bool), depth[roi]
    soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(0.5, size / 900))
    vessel_visibility[roi] *= 1.0 - soft
    visible = np.ones(m.shape, np.float32)
    if rng.random() < PARTIAL_RATE:  # one end fades out (overlying ribs, soft tissue, apex)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]].astype(np.float32)
        ramp = np.cos(angle) * xx / m.shape[1] + np.sin(angle) * yy / m.shape[0]
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        visible = np.clip(ramp * 1.6 - 0.2, rng.uniform(0.0, 0.3), 1.0)

    darkening = 0.004 + 0.028 * conspicuity
    fill = rng.uniform(0.15, 0.35) + 0.35 * conspicuity
    density[roi] -= (darkening + fill * air_deficit[roi]) * soft * visible

    kernel = np.ones((3, 3), np.uint8)
    line_px = max(1, round(size / 700))
    ring = (cv2.dilate(m, kernel, iterations=line_px) > m) & lung
    pleura = _facing_lung(ring, m, d, 2 * line_px + 5).astype(np.float32)
    keep = 0.45 + 0.5 * conspicuity + rng.uniform(0.0, 0.1)
    pleura *= _dashes(m.shape, min(keep, 1.0), max(4.0, size / 40), rng)
    pleura = cv2.GaussianBlur(pleura, (0, 0), max(0.5, size / 1400))
    density[roi] += (0.012 + 0.07 * conspicuity) * pleura * visible

    band_px = max(2, size // 60)
    band = (cv2.dilate(m, kernel, iterations=band_px) > m) & lung
    band = _facing_lung(band, m, d, 2 * band_px + 1).astype(np.float32)
    band = cv2.GaussianBlur(band, (0, 0), max(1.0, size / 120))
    density[roi] += (0.004 + 0.02 * conspicuity) * band * visible
    return conspicuity
