"""The patient: lungs, mediastinum, body, ribs, clavicles and vessel markings in the canonical frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pneumoseg.data.synth.drawing import (
    SUBPIXEL_BITS,
    _blur,
    _ellipse,
    _filled,
    _filled_ellipses,
    _fixed,
    _ramp_from_edge,
    _smooth_closed,
)

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

