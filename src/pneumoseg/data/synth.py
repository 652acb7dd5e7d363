"""Synthetic SIIM-style dataset: chest-radiograph-like DICOMs with pneumothorax labels.

This is the project's embedded default dataset: ``generate_dataset`` writes the released SIIM
layout (nested DICOM folders + stage-1 style ``train-rle.csv``) so the whole pipeline can be
trained and evaluated on a machine without the real data.

How an image is drawn. Everything is drawn in a *canonical frame*: the unit square, patient
facing the viewer (the patient's right lung on the image left), anatomy at the average position
of the real SIIM lung fields. Smooth structures (body, lungs, heart, mediastinum, breasts,
stomach gas) are drawn on a coarse canvas (a quarter of the size, at least 128 px) and
upsampled once; sharp structures (ribs, clavicles, vessel markings, the pneumothorax and its
pleural line) are drawn at full resolution. The canonical picture is then posed (shift, scale,
rotation) with one affine warp, windowed (exposure, contrast, gamma), given quantum noise and
sometimes a side marker.

Pneumothorax shapes come from a bank of real SIIM masks (``assets/shape_bank.npz``, built by
``tools/build_shape_bank.py``): a shape is placed at its real position relative to the lung
field, mapped onto the drawn lung, and clipped to it. Inside it the lung is darker (air) and has
no vessel markings; a thin bright visceral pleural line runs along its inner border.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from tqdm import tqdm

from pneumoseg.data.rle import EMPTY_RLE, rle_encode
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_text

__all__ = [
    "ShapeBank",
    "SynthRadiograph",
    "SynthSummary",
    "SynthUids",
    "generate_dataset",
    "load_shape_bank",
    "synth_radiograph",
    "synth_uids",
    "write_synth_dicom",
]

SHAPE_BANK_RESOURCE = "assets/shape_bank.npz"
JPEG_QUALITY = 95
TWO_INSTANCE_RATE = 0.10  # share of positive images with two pneumothorax instances
SUBPIXEL_BITS = 4  # cv2 drawing "shift": coordinates carry 4 fractional bits
SUBPIXEL = 1 << SUBPIXEL_BITS
REAL_SPACING_RANGE_MM = (0.139, 0.194)  # SIIM pixel spacing at 1024 px

# Outline of the patient's right lung (image left) in the canonical frame, clockwise from the
# apex: lateral wall, costophrenic angle, diaphragm dome, medial (mediastinal) border. The
# patient's left lung is its mirror image. Placed where the real SIIM masks put the lungs.
RIGHT_LUNG_OUTLINE = np.array(
    [
        (0.31, 0.085), (0.24, 0.105), (0.175, 0.175), (0.135, 0.29), (0.115, 0.44),
        (0.108, 0.60), (0.112, 0.73), (0.122, 0.815), (0.135, 0.805), (0.19, 0.765),
        (0.27, 0.725), (0.36, 0.73), (0.43, 0.755), (0.445, 0.62), (0.435, 0.48),
        (0.425, 0.36), (0.405, 0.22), (0.375, 0.12),
    ],
    dtype=np.float32,
)
# Mediastinal contour, clockwise from the top: aortic knob, pulmonary trunk, left ventricle
# down to the cardiac apex on the diaphragm, then back up the right atrium and superior vena cava.
MEDIASTINUM_OUTLINE = np.array(
    [
        (0.46, 0.18), (0.55, 0.18), (0.60, 0.26), (0.615, 0.31), (0.595, 0.37), (0.60, 0.45),
        (0.64, 0.53), (0.69, 0.62), (0.725, 0.73), (0.70, 0.84), (0.55, 0.87), (0.40, 0.83),
        (0.38, 0.70), (0.40, 0.57), (0.44, 0.46), (0.445, 0.32),
    ],
    dtype=np.float32,
)
HILA = ((0.405, 0.45), (0.615, 0.43))  # where the vessel trees start (the left hilum is higher)
# Where the real lung fields lie (x0, y0, x1, y1 per side: image-left lung, image-right lung), as
# the real masks of train-rle-full.csv.gz outline them: lateral, top and bottom edges at the 5th
# and 95th percentiles of the masks' box edges; medial edges where the masks' density falls off
# beside the mediastinum.
REAL_LUNG_BOXES = np.array(
    [(0.097, 0.052, 0.47, 0.845), (0.53, 0.053, 0.901, 0.892)], dtype=np.float32
)


# ----------------------------------------------------------------------------- shape bank


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


# ----------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class Anatomy:
    """One patient's anatomy in the canonical frame (unit-square coordinates)."""

    lungs: tuple[np.ndarray, np.ndarray]  # closed outlines, image-left then image-right
    mediastinum: np.ndarray  # closed outline of mediastinum and heart
    body_half_width: float
    neck_half_width: float
    rib_top: float
    rib_step: float
    breasts: bool
    arms: bool
    stomach_gas: bool


def _smooth_closed(points: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Chaikin corner cutting: a smooth closed curve through the neighbourhood of ``points``."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        cut = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1)
        points = cut.reshape(-1, 2)
    return points


def _jittered_lung(rng: np.random.Generator, mirror: bool) -> np.ndarray:
    outline = RIGHT_LUNG_OUTLINE + rng.normal(0.0, 0.008, RIGHT_LUNG_OUTLINE.shape).astype(
        np.float32
    )
    # Inspiration depth: stretch the lung vertically from its apex.
    stretch = rng.uniform(0.9, 1.07)
    outline[:, 1] = outline[0, 1] + (outline[:, 1] - outline[0, 1]) * stretch
    if mirror:
        outline[:, 0] = 1.0 - outline[:, 0]
        outline[:, 1] += 0.015  # the left hemidiaphragm sits a little lower
    return _smooth_closed(outline)


def _jittered_mediastinum(rng: np.random.Generator, heart_scale: float) -> np.ndarray:
    """Mediastinum and heart: widened sideways below the hila by ``heart_scale`` (the
    cardiothoracic ratio varies; AP films magnify the heart)."""
    jitter = rng.normal(0.0, 0.005, MEDIASTINUM_OUTLINE.shape).astype(np.float32)
    outline = MEDIASTINUM_OUTLINE + jitter
    heart = outline[:, 1] > 0.5
    outline[heart, 0] = 0.53 + (outline[heart, 0] - 0.53) * heart_scale
    return _smooth_closed(outline)


def sample_anatomy(rng: np.random.Generator, view: str = "PA") -> Anatomy:
    """Random patient: lung shapes, heart, body habitus, ribs and optional features."""
    ap = view == "AP"
    return Anatomy(
        lungs=(_jittered_lung(rng, mirror=False), _jittered_lung(rng, mirror=True)),
        mediastinum=_jittered_mediastinum(
            rng, heart_scale=rng.uniform(0.92, 1.1) * (1.06 if ap else 1.0)
        ),
        body_half_width=rng.uniform(0.43, 0.52),
        neck_half_width=rng.uniform(0.10, 0.13),
        rib_top=rng.uniform(0.075, 0.10),
        rib_step=rng.uniform(0.060, 0.070),
        breasts=bool(rng.random() < 0.35),
        arms=bool(rng.random() < 0.3),
        stomach_gas=bool(rng.random() < 0.6),
    )


# ----------------------------------------------------------------------------- drawing helpers


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


# ----------------------------------------------------------------------------- smooth layers


def _body_outline(anatomy: Anatomy) -> np.ndarray:
    """Neck, sloping shoulders and torso, as one closed outline running off the bottom edge."""
    w, n = anatomy.body_half_width, anatomy.neck_half_width
    half = np.array(
        [(n, -0.05), (n, 0.04), (n + 0.10, 0.07), (0.38, 0.095), (w, 0.15), (w + 0.01, 0.35),
         (w - 0.015, 0.70), (w, 1.05)],
        dtype=np.float32,
    )
    right = np.column_stack([0.5 + half[:, 0], half[:, 1]])
    left = np.column_stack([0.5 - half[::-1, 0], half[::-1, 1]])
    return np.concatenate([left, right])


def _ramp_from_edge(mask: np.ndarray, width_frac: float) -> np.ndarray:
    """0 at the edge of ``mask`` rising to 1 at ``width_frac`` of the canvas inside it: the
    thickness of a rounded body (tissue, or a lung's air) seen end-on."""
    depth = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(depth / (width_frac * mask.shape[0]), 0.0, 1.0) ** 0.6


def _lung_zones(lo: int) -> np.ndarray:
    """How much air shows through, by height: less at the apex (neck soft tissue, first ribs)
    and at the bases (breasts, pectorals, diaphragm domes seen obliquely)."""
    y = np.linspace(0.0, 1.0, lo, dtype=np.float32)[:, None]
    apex = np.clip((0.2 - y) / 0.12, 0.0, 1.0)
    base = np.clip((y - 0.5) / 0.3, 0.0, 1.0)
    return np.broadcast_to(1.0 - 0.35 * apex - 0.2 * base, (lo, lo))


def draw_smooth_layers(anatomy: Anatomy, rng: np.random.Generator, lo: int) -> np.ndarray:
    """Low-resolution layers, stacked as channels: density (brightness before windowing), body,
    vessel visibility, rib visibility, and the lungs' air deficit (how much less air shows than
    through a full-thickness lung at that height: the lung thins toward its edges, a
    pneumothorax does not)."""
    torso = [_body_outline(anatomy)]
    if anatomy.arms:
        for side in (-1, 1):
            x = 0.5 + side * (anatomy.body_half_width + 0.065)
            arm = [(x - 0.035, 0.16), (x + 0.035, 0.16), (x + 0.04, 1.05), (x - 0.04, 1.05)]
            torso.append(np.array(arm))
    body = _filled(lo, torso)
    tissue = _ramp_from_edge(body, 0.12)
    body = _blur(body, 0.004)
    mediastinum = _filled(lo, [anatomy.mediastinum])
    lungs = _blur(np.clip(_filled(lo, anatomy.lungs) - mediastinum, 0.0, 1.0), 0.004)
    air = _ramp_from_edge(lungs, 0.09)

    density = body * (0.18 + 0.38 * _blur(tissue, 0.02))
    density += 0.02 * _blur(mediastinum, 0.01)
    spine = np.zeros((lo, lo), np.float32)
    cv2.rectangle(spine, (round(0.468 * lo), 0), (round(0.532 * lo), lo), 1.0, -1)
    density += 0.05 * _blur(spine, 0.008) * body
    trachea = np.zeros((lo, lo), np.uint8)
    cv2.polylines(trachea, [_fixed([(0.5, 0.0), (0.5, 0.26), (0.47, 0.33)], lo)], False, 255,
                  max(1, round(0.03 * lo)), cv2.LINE_AA, SUBPIXEL_BITS)
    density -= (0.06 / 255) * _blur(trachea.astype(np.float32), 0.008)
    density += 0.06 * _blur(_filled_ellipses(lo, [(hilum, (0.035, 0.06)) for hilum in HILA]), 0.02)
    if anatomy.breasts:
        breasts = [((0.5 + side * 0.26, 0.80), (0.18, 0.12)) for side in (-1, 1)]
        density += 0.07 * _blur(_filled_ellipses(lo, breasts), 0.03)
    if anatomy.stomach_gas:
        gas = ((0.68 + rng.normal(0, 0.02), 0.87 + rng.normal(0, 0.02)), (0.07, 0.04))
        density -= 0.12 * _blur(_filled_ellipses(lo, [gas]), 0.012)

    # Lungs: air removes density, most where the lung is thickest; parenchymal texture on top.
    texture = _blur(rng.standard_normal((lo, lo)).astype(np.float32), 0.01)
    texture *= 0.015 / max(float(texture.std()), 1e-6)
    zones = _lung_zones(lo)
    density -= lungs * ((0.12 + 0.34 * air) * zones - texture)
    air_deficit = lungs * zones * 0.34 * (1.0 - air)
    vessel_visibility = lungs * (0.3 + 0.7 * air)
    rib_visibility = 0.15 * body + 0.85 * lungs
    return np.dstack([density, body, vessel_visibility, rib_visibility, air_deficit])


# ----------------------------------------------------------------------------- sharp layers


def _rib_centrelines(anatomy: Anatomy, side: int, wall: float) -> tuple[np.ndarray, np.ndarray]:
    """Centrelines (n_ribs, n_points, 2) of the posterior and anterior ribs of one side.

    A posterior rib leaves the spine, peaks a quarter of the way out, then sweeps down ever more
    steeply to the chest wall; there it turns into the anterior rib, which runs obliquely down
    toward the midline and fades (its cartilage does not show)."""
    t = np.linspace(0.0, 1.0, 24, dtype=np.float32)
    spine = 0.5 + side * 0.035
    posterior, anterior = [], []
    for k in range(10):
        top = anatomy.rib_top + k * anatomy.rib_step
        reach = min(abs(wall - spine), 0.12 + 0.08 * k)
        drop = min(0.05 + 0.03 * k, 0.14)
        descent = np.clip((t - 0.25) / 0.75, 0.0, 1.0) ** 2.8
        rise = np.clip((0.25 - t) / 0.25, 0.0, 1.0) ** 2
        posterior.append(
            np.column_stack([spine + side * reach * t, top + drop * descent + 0.015 * rise])
        )
        end = posterior[-1][-1]
        anterior.append(np.column_stack([end[0] - side * 0.26 * t, end[1] + 0.13 * t**0.8]))
    return np.array(posterior), np.array(anterior)


def draw_ribs(anatomy: Anatomy, size: int) -> np.ndarray:
    """Posterior ribs (with cortical edges brighter than the marrow between them) and fainter,
    wider anterior ribs; uint8."""
    ribs = np.zeros((size, size), np.uint8)
    left_lung, right_lung = anatomy.lungs
    walls = (float(left_lung[:, 0].min()) - 0.012, float(right_lung[:, 0].max()) + 0.012)
    for side, wall in ((-1, walls[0]), (1, walls[1])):
        posterior, anterior = _rib_centrelines(anatomy, side, wall)
        cv2.polylines(ribs, list(_fixed(anterior, size)), False, 70, max(1, round(0.026 * size)),
                      cv2.LINE_AA, SUBPIXEL_BITS)
        for value, width in ((190, 0.022), (130, 0.010)):
            thickness = max(1, round(width * size))
            cv2.polylines(ribs, list(_fixed(posterior, size)), False, value, thickness,
                          cv2.LINE_AA, SUBPIXEL_BITS)
    return ribs


def draw_shoulder_girdle(anatomy: Anatomy, size: int) -> np.ndarray:
    """Clavicles (S-shaped, sternal end to acromion, cortical edges) and humeral heads; uint8."""
    bone = np.zeros((size, size), np.uint8)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for side in (-1, 1):
        _ellipse(bone, (0.5 + side * (anatomy.body_half_width - 0.01), 0.16), (0.05, 0.055), 110)
        points = np.array([(0.5 + side * 0.045, 0.175), (0.5 + side * 0.16, 0.15),
                           (0.5 + side * 0.26, 0.15), (0.5 + side * 0.39, 0.09)])
        clavicle = ((1 - t) ** 3 * points[0] + 3 * (1 - t) ** 2 * t * points[1]
                    + 3 * (1 - t) * t**2 * points[2] + t**3 * points[3])
        for value, width in ((150, 0.030), (105, 0.016)):
            cv2.polylines(bone, [_fixed(clavicle, size)], False, value, max(1, round(width * size)),
                          cv2.LINE_AA, SUBPIXEL_BITS)
    return bone


def _vessel_tree(rng: np.random.Generator, hilum: tuple[float, float], trunk_angles: np.ndarray,
                 size: int) -> list[tuple[np.ndarray, int, int]]:
    """A branching tree, generation by generation: (segments (n, 2, 2) unit coords, thickness
    px, brightness). Each segment forks into a near-straight and a wider-angled branch; children
    are shorter, thinner and fainter, so markings fade toward the lung periphery."""
    angle = trunk_angles + rng.normal(0, 0.1, len(trunk_angles))
    start = np.tile(np.asarray(hilum, np.float32), (len(angle), 1))
    length, width, brightness = 0.06, 0.011, 255.0
    generations = []
    for _ in range(6):
        seg = length * rng.uniform(0.7, 1.2, len(angle))
        end = start + seg[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        segments = np.stack([start, end], axis=1)
        generations.append((segments, max(1, round(width * size)), round(brightness)))
        sign = rng.choice((-1.0, 1.0), len(angle))
        forks = np.column_stack([sign * rng.uniform(0.05, 0.25, len(angle)),
                                 -sign * rng.uniform(0.35, 0.7, len(angle))]).ravel()
        angle = np.repeat(angle, 2) + forks
        start = np.repeat(end, 2, axis=0)
        length, width, brightness = length * 0.8, width * 0.68, brightness * 0.8
    return generations


def draw_vessels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vessel markings radiating from both hila, slightly blurred; uint8."""
    vessels = np.zeros((size, size), np.uint8)
    # Trunks fan out down, lateral and up; for the image-left lung, mirrored for the other.
    angles = np.linspace(np.pi / 2 + 0.2, 3 * np.pi / 2 - 0.1, 6)
    for hilum, trunk_angles in ((HILA[0], angles), (HILA[1], np.pi - angles)):
        for segments, thickness, brightness in _vessel_tree(rng, hilum, trunk_angles, size):
            cv2.polylines(vessels, list(_fixed(segments, size)), False, brightness, thickness,
                          cv2.LINE_AA, SUBPIXEL_BITS)
    return cv2.GaussianBlur(vessels, (0, 0), max(0.5, size / 700))


def draw_lung_mask(anatomy: Anatomy, size: int) -> np.ndarray:
    """Hard full-resolution mask (uint8 0/1) of the aerated lung fields, heart carved out."""
    lungs = np.zeros((size, size), np.uint8)
    for outline in anatomy.lungs:
        cv2.fillPoly(lungs, [_fixed(outline, size)], 1, cv2.LINE_8, SUBPIXEL_BITS)
    mediastinum = np.zeros_like(lungs)
    cv2.fillPoly(mediastinum, [_fixed(anatomy.mediastinum, size)], 1, cv2.LINE_8, SUBPIXEL_BITS)
    return lungs & (1 - mediastinum)


# ----------------------------------------------------------------------------- pneumothorax


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


# ----------------------------------------------------------------------------- pose and exposure


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


# ----------------------------------------------------------------------------- one radiograph


@dataclass(frozen=True)
class SynthRadiograph:
    """One synthetic chest radiograph: the 8-bit image, one bool mask per pneumothorax instance,
    and the drawn lung fields (bool) in image coordinates."""

    image: np.ndarray
    instances: tuple[np.ndarray, ...]
    lungs: np.ndarray
    view: str
    pixel_spacing_mm: float

    @property
    def mask(self) -> np.ndarray:
        """Union of the instances (the image's label mask)."""
        union = np.zeros(self.image.shape, bool)
        for instance in self.instances:
            union |= instance
        return union

    @property
    def n_instances(self) -> int:
        return len(self.instances)


def synth_radiograph(rng: np.random.Generator, size: int = 1024, n_pneumothorax: int = 0,
                     bank: ShapeBank | None = None) -> SynthRadiograph:
    """Draw one chest radiograph with ``n_pneumothorax`` pneumothorax instances (0 = negative).

    Fewer instances can come back (rarely): when one cannot be placed apart from the others, or
    when the pose moves it out of the frame."""
    view = "AP" if rng.random() < 0.45 else "PA"
    anatomy = sample_anatomy(rng, view)
    lo = min(size, max(128, size // 4))
    smooth = cv2.resize(draw_smooth_layers(anatomy, rng, lo), (size, size),
                        interpolation=cv2.INTER_LINEAR)
    density, body, vessel_visibility, rib_visibility, air_deficit = (
        np.ascontiguousarray(smooth[..., c]) for c in range(smooth.shape[2]))
    lung_mask = draw_lung_mask(anatomy, size)

    instances: list[np.ndarray] = []
    taken = np.zeros((size, size), np.uint8)
    depth = cv2.distanceTransform(lung_mask, cv2.DIST_L2, 5) if n_pneumothorax else None
    for _ in range(n_pneumothorax):
        mask = place_pneumothorax(rng, bank or load_shape_bank(), anatomy, lung_mask, depth, taken)
        if mask is None:
            break
        render_pneumothorax(density, vessel_visibility, air_deficit, mask, lung_mask, depth, rng)
        instances.append(mask)
        taken |= mask

    density += (0.10 / 255) * rib_visibility * draw_ribs(anatomy, size)
    density += (0.12 / 255) * body * draw_shoulder_girdle(anatomy, size)
    density += (0.10 / 255) * vessel_visibility * draw_vessels(rng, size)

    # Patient size and detector field: a larger pixel spacing shows the chest smaller.
    spacing_1024 = float(rng.uniform(*REAL_SPACING_RANGE_MM))
    scale = float(np.clip((0.165 / spacing_1024) ** 0.5 * rng.normal(1.0, 0.03), 0.9, 1.1))
    matrix = _pose_matrix(rng, size, scale)
    image = expose(_warp(density, matrix, nearest=False), rng)
    if rng.random() < 0.6:
        _draw_side_marker(image, rng)
    # A pose can push a small apical pneumothorax out of the frame.
    posed = (_warp(m, matrix, nearest=True).astype(bool) for m in instances)
    return SynthRadiograph(
        image=image,
        instances=tuple(m for m in posed if m.any()),
        lungs=_warp(lung_mask, matrix, nearest=True).astype(bool),
        view=view,
        pixel_spacing_mm=spacing_1024 * 1024 / size,
    )


# ----------------------------------------------------------------------------- DICOM writing


@dataclass(frozen=True)
class SynthUids:
    study: str
    series: str
    sop: str


def synth_uids(seed: int, split: str, index: int) -> SynthUids:
    """Deterministic UIDs: the same (seed, split, index) always gives the same three UIDs."""
    key = ["pneumoseg-synth", str(seed), split, str(index)]
    levels = ("study", "series", "sop")
    return SynthUids(*(generate_uid(entropy_srcs=[*key, level]) for level in levels))


def write_synth_dicom(path: Path, image: np.ndarray, uids: SynthUids, *, patient_number: int,
                      view: str, pixel_spacing_mm: float, sex: str, age: int) -> None:
    """Write ``image`` (uint8, square) as a SIIM-like DICOM: CR, MONOCHROME2, 8-bit, JPEG Baseline.

    Like the SIIM release: Secondary Capture SOP class with Modality CR, JPEG quality 95."""
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise PneumosegError(f"JPEG encoding failed for {path}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uids.sop
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uids.sop
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = f"Synthetic^{patient_number:04d}"
    ds.PatientID = f"synthetic-{patient_number:04d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}", f"{pixel_spacing_mm:.6g}"]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate_dataset`` wrote."""

    out: Path
    size: int
    seed: int
    n_train: int
    n_test: int
    n_positive_train: int
    n_positive_test: int
    n_instances_train: int
    n_instances_test: int
    train_csv: Path
    test_csv: Path | None
    seconds: float

    def render(self) -> str:
        """A short multi-line report for the command line."""
        lines = [f"Synthetic dataset in {self.out} ({self.size}x{self.size}, seed {self.seed}, "
                 f"{self.seconds:.1f} s)"]
        for split, n, positive, instances, csv_path in (
            ("train", self.n_train, self.n_positive_train, self.n_instances_train, self.train_csv),
            ("test", self.n_test, self.n_positive_test, self.n_instances_test, self.test_csv),
        ):
            if n:
                images = self.out / f"dicom-images-{split}"
                lines.append(f"  {split}: {n} images, {positive} with pneumothorax "
                             f"({instances} instances); images in {images}, labels in {csv_path}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _SplitResult:
    n_images: int
    n_positive: int
    n_instances: int


# Separate random streams per split, so adding test images changes no training image.
SPLIT_STREAMS = {"train": 0, "test": 1}


def _planned_instances(rng: np.random.Generator, n: int, positive_rate: float) -> np.ndarray:
    """Instances per image: exactly round(n * positive_rate) positives, ~10% of them doubles."""
    counts = np.zeros(n, np.int64)
    positives = rng.permutation(n)[: round(n * positive_rate)]
    counts[positives] = 1 + (rng.random(len(positives)) < TWO_INSTANCE_RATE)
    return counts


def _clear_previous(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier dataset in ``out`` unless asked to replace it."""
    previous = [out / name for split in SPLIT_STREAMS
                for name in (f"dicom-images-{split}", f"{split}-rle.csv")]
    found = [p for p in previous if p.exists()]
    if found and not overwrite:
        raise PneumosegError(
            f"{out} already holds a dataset ({found[0].name}); pass overwrite=True to replace it"
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _generate_split(out: Path, split: str, n: int, first_patient: int, *, seed: int, size: int,
                    positive_rate: float, progress: bool) -> _SplitResult:
    folder = out / f"dicom-images-{split}"
    stream = SPLIT_STREAMS[split]
    plan = _planned_instances(np.random.default_rng([seed, stream]), n, positive_rate)
    bank = load_shape_bank()
    rows = ["ImageId, EncodedPixels"]  # stage-1 style: a space after each comma
    n_positive = n_instances = 0
    for index in tqdm(range(n), desc=f"synth {split}", disable=not progress, unit="img"):
        rng = np.random.default_rng([seed, stream, index])
        radiograph = synth_radiograph(rng, size, int(plan[index]), bank)
        uids = synth_uids(seed, split, index)
        write_synth_dicom(
            folder / uids.study / uids.series / f"{uids.sop}.dcm", radiograph.image, uids,
            patient_number=first_patient + index, view=radiograph.view,
            pixel_spacing_mm=radiograph.pixel_spacing_mm, sex=str(rng.choice(["M", "F"])),
            age=int(rng.integers(16, 90)),
        )
        rows += [f"{uids.sop}, {rle_encode(m, fmt='relative')}" for m in radiograph.instances]
        if not radiograph.instances:
            rows.append(f"{uids.sop}, {EMPTY_RLE}")
        n_positive += radiograph.n_instances > 0
        n_instances += radiograph.n_instances
    atomic_write_text(out / f"{split}-rle.csv", "\n".join(rows) + "\n")
    return _SplitResult(n, n_positive, n_instances)


def generate_dataset(
    out: Path,
    n: int,
    *,
    test_n: int = 0,
    seed: int = 0,
    size: int = 1024,
    positive_rate: float = 0.23,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Write a synthetic SIIM-layout dataset of ``n`` training (and ``test_n`` test) images.

    Layout: ``out/dicom-images-train/<Study>/<Series>/<SOP>.dcm`` and ``out/train-rle.csv``
    (stage-1 style: ``ImageId, EncodedPixels``, one row per pneumothorax instance, ``-1`` for
    negatives); likewise ``dicom-images-test/`` and ``test-rle.csv`` when ``test_n > 0``.
    Exactly ``round(n * positive_rate)`` training images are positive (likewise for test).
    Deterministic: the same arguments give byte-identical files. An earlier dataset in ``out``
    is an error unless ``overwrite`` (then it is deleted first).
    """
    if n < 1 or test_n < 0 or size < 64 or not 0.0 <= positive_rate <= 1.0:
        raise PneumosegError(
            f"invalid synthetic dataset request: n={n} (>= 1), test_n={test_n} (>= 0), "
            f"size={size} (>= 64), positive_rate={positive_rate} (0..1)"
        )
    started = time.perf_counter()
    out = Path(out)
    _clear_previous(out, overwrite)
    common = dict(seed=seed, size=size, positive_rate=positive_rate, progress=progress)
    train = _generate_split(out, "train", n, 0, **common)
    test = _generate_split(out, "test", test_n, n, **common) if test_n else _SplitResult(0, 0, 0)
    return SynthSummary(
        out=out, size=size, seed=seed,
        n_train=train.n_images, n_test=test.n_images,
        n_positive_train=train.n_positive, n_positive_test=test.n_positive,
        n_instances_train=train.n_instances, n_instances_test=test.n_instances,
        train_csv=out / "train-rle.csv", test_csv=out / "test-rle.csv" if test_n else None,
        seconds=time.perf_counter() - started,
    )
