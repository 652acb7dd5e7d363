"""Pneumothorax look-alikes and foreign bodies, drawn on negatives and positives alike, never
in the label mask.

Rates (share of films with at least one), negatives / positives, in ``LOOKALIKE_RATES``, the one
place they are set. Tubes are more common on positives, as on the real SIIM films (a chest
drain is the treatment), so a model can learn the shortcut; the dataset card reports the rates
as generated.

- ``skin_fold``: a long curved edge over the lateral lung, running off the lung edge, with a
  denser band fading away on one side and a thin lucent band on the other. The classic mimic:
  unlike a pleural line, vessel markings continue across it.
- ``scapula``: the medial border of the scapula, a curved line over the upper lateral lung
  with slightly denser bone lateral to it (common on AP films).
- ``bulla``: a round lucent area without markings and with a thin wall, inside the lung.
- ``chest_drain``: a wide tube from the lateral chest wall curving up into the lung, with a
  radiopaque stripe.
- ``central_line``: a thin tube from the neck or subclavian region down to the superior vena
  cava.
- ``ecg_leads``: small round electrodes with wires.
- ``text_label``: burned-in text ("PORTABLE", "AP SUPINE", ...), drawn after exposure.
"""

from __future__ import annotations

import cv2
import numpy as np

from pneumoseg.data.synth.drawing import SUBPIXEL_BITS, _fixed

# kind: (rate on negative films, rate on positive films)
LOOKALIKE_RATES: dict[str, tuple[float, float]] = {
    "skin_fold": (0.10, 0.10),
    "scapula": (0.30, 0.30),
    "bulla": (0.05, 0.06),
    "chest_drain": (0.07, 0.35),
    "central_line": (0.12, 0.20),
    "ecg_leads": (0.20, 0.25),
    "text_label": (0.35, 0.35),
}
LOOKALIKE_KINDS = tuple(LOOKALIKE_RATES)
TEXT_LABELS = ("PORTABLE", "AP SUPINE", "ERECT", "SEMI-ERECT", "PA", "AP", "SITTING", "INSP")


def choose_lookalikes(rng: np.random.Generator, positive: bool) -> dict[str, bool]:
    """Which look-alikes a film shows (one draw per kind, always in the same order)."""
    draws = rng.random(len(LOOKALIKE_KINDS))
    return {kind: bool(u < LOOKALIKE_RATES[kind][int(positive)])
            for kind, u in zip(LOOKALIKE_KINDS, draws)}


def _bezier(points, n: int = 40) -> np.ndarray:
    p = np.asarray(points, np.float64)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2]
            + t**3 * p[3])


def _line_layer(size: int, curve: np.ndarray, width_frac: float, value: int = 255) -> np.ndarray:
    layer = np.zeros((size, size), np.uint8)
    cv2.polylines(layer, [_fixed(curve, size)], False, value, max(1, round(width_frac * size)),
                  cv2.LINE_AA, SUBPIXEL_BITS)
    return layer


def _side_band(size: int, curve: np.ndarray, offset: np.ndarray, width: float) -> np.ndarray:
    """A float layer: 1 on ``curve`` fading linearly to 0 at ``width`` (unit) toward ``offset``
    (a unit direction): a density edge that is sharp on one side and fades on the other."""
    far = curve + offset * width
    band = np.zeros((size, size), np.uint8)
    cv2.fillPoly(band, [_fixed(np.concatenate([curve, far[::-1]]), size)], 255, cv2.LINE_AA,
                 SUBPIXEL_BITS)
    line = np.full((size, size), 255, np.uint8)
    cv2.polylines(line, [_fixed(curve, size)], False, 0, 1, cv2.LINE_8, SUBPIXEL_BITS)
    distance = cv2.distanceTransform(line, cv2.DIST_L2, 3)
    fade = np.clip(1.0 - distance / (width * size), 0.0, 1.0)
    return fade * (band.astype(np.float32) / 255)


def draw_lookalikes(density: np.ndarray, vessel_visibility: np.ndarray, chosen: dict[str, bool],
                    lungs: tuple[np.ndarray, np.ndarray], lung_mask: np.ndarray,
                    taken: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw the chosen look-alikes (except text) into the full-resolution density, in place;
    returns where they lie (uint8 0/1). ``taken`` (the pneumothorax masks) is kept clear of
    bullae and skin folds."""
    size = density.shape[0]
    footprint = np.zeros((size, size), np.uint8)
    side = int(rng.integers(2))  # which lung the one-sided features go to
    lung = lungs[side]
    sign = -1.0 if side == 0 else 1.0  # outward (lateral) direction in x
    x_wall = float(lung[:, 0].min() if side == 0 else lung[:, 0].max())
    if chosen["skin_fold"]:
        x = x_wall - sign * rng.uniform(0.02, 0.07)
        y0, y1 = rng.uniform(0.2, 0.4), rng.uniform(0.75, 1.0)
        curve = _bezier([(x - sign * 0.02, y0), (x + sign * rng.uniform(0.0, 0.04), y0 + 0.15),
                         (x + sign * rng.uniform(-0.01, 0.05), y1 - 0.15),
                         (x + sign * rng.uniform(0.02, 0.08), y1)])
        fade = _side_band(size, curve, np.array([-sign, 0.0]), rng.uniform(0.03, 0.08))
        lucent = _side_band(size, curve, np.array([sign, 0.0]), 0.006)
        density += rng.uniform(0.025, 0.06) * fade - rng.uniform(0.01, 0.025) * lucent
        footprint |= (fade > 0.05).astype(np.uint8)
    if chosen["scapula"]:
        for s, lg in ((-1.0, lungs[0]), (1.0, lungs[1])):
            xw = float(lg[:, 0].min() if s < 0 else lg[:, 0].max())
            x = xw - s * rng.uniform(0.03, 0.08)
            curve = _bezier([(x + s * 0.03, 0.12), (x - s * 0.02, 0.25), (x - s * 0.01, 0.4),
                             (x + s * 0.06, 0.52)])
            bone = _side_band(size, curve, np.array([s, 0.0]), rng.uniform(0.04, 0.08))
            edge = _line_layer(size, curve, 0.003).astype(np.float32) / 255
            density += rng.uniform(0.02, 0.05) * np.sqrt(bone) + 0.02 * edge
            footprint |= (bone > 0.05).astype(np.uint8)
    if chosen["bulla"]:
        ys, xs = np.nonzero(lung_mask & (1 - taken))
        if len(ys):
            k = int(rng.integers(len(ys)))
            r = rng.uniform(0.015, 0.05)
            disc = np.zeros((size, size), np.uint8)
            cv2.circle(disc, (int(xs[k]) << SUBPIXEL_BITS, int(ys[k]) << SUBPIXEL_BITS),
                       round(r * size * (1 << SUBPIXEL_BITS)), 255, -1, cv2.LINE_AA,
                       SUBPIXEL_BITS)
            disc &= (lung_mask & (1 - taken)) * 255
            soft = disc.astype(np.float32) / 255
            wall = cv2.morphologyEx(disc, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
            vessel_visibility *= 1.0 - soft
            density += -rng.uniform(0.01, 0.03) * soft + 0.04 * (wall.astype(np.float32) / 255)
            footprint |= (disc > 0).astype(np.uint8)
    if chosen["chest_drain"]:
        y_in = rng.uniform(0.55, 0.75)
        end = (0.5 + sign * rng.uniform(0.15, 0.3), rng.uniform(0.12, 0.3))
        curve = _bezier([(x_wall + sign * 0.12, y_in + 0.1), (x_wall - sign * 0.01, y_in),
                         (x_wall - sign * 0.05, 0.35), end])
        _tube(density, footprint, curve, rng.uniform(0.009, 0.014), stripe=True)
    if chosen["central_line"]:
        s = -1.0 if rng.random() < 0.7 else 1.0
        start = (0.5 + s * rng.uniform(0.15, 0.3), rng.uniform(0.0, 0.12))
        curve = _bezier([start, (0.5 + s * 0.1, 0.16), (0.45, 0.2),
                         (0.44 + rng.normal(0, 0.01), rng.uniform(0.3, 0.4))])
        _tube(density, footprint, curve, rng.uniform(0.003, 0.005), stripe=False)
    if chosen["ecg_leads"]:
        for _ in range(int(rng.integers(2, 6))):
            c = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.1, 0.75)])
            disc = np.zeros((size, size), np.uint8)
            r = rng.uniform(0.008, 0.013)
            cv2.circle(disc, tuple(_fixed(c, size)), round(r * size * 16), 160, -1, cv2.LINE_AA,
                       SUBPIXEL_BITS)
            cv2.circle(disc, tuple(_fixed(c, size)), round(0.35 * r * size * 16), 255, -1,
                       cv2.LINE_AA, SUBPIXEL_BITS)
            wire = _bezier([c, c + rng.normal(0, 0.08, 2), c + rng.normal(0, 0.15, 2),
                            c + rng.normal(0, 0.3, 2)])
            cv2.polylines(disc, [_fixed(wire, size)], False, 150, max(1, round(0.003 * size)),
                          cv2.LINE_AA, SUBPIXEL_BITS)
            density += (0.25 / 255) * disc
            footprint |= (disc > 0).astype(np.uint8)
    return footprint


def _tube(density: np.ndarray, footprint: np.ndarray, curve: np.ndarray, width: float,
          stripe: bool) -> None:
    """A plastic tube: slightly dense walls, a lumen, and (``stripe``) a radiopaque line."""
    size = density.shape[0]
    outer = _line_layer(size, curve, width).astype(np.float32) / 255
    inner = _line_layer(size, curve, width * 0.55).astype(np.float32) / 255
    density += 0.05 * outer - 0.025 * inner
    if stripe:
        density += 0.25 * _line_layer(size, curve, max(0.0025, width * 0.22)).astype(np.float32) / 255
    footprint |= (outer > 0).astype(np.uint8)


def draw_text_label(image: np.ndarray, rng: np.random.Generator, peak: int) -> None:
    """Burn a text label into a corner of the exposed image (any integer dtype), in place."""
    size = image.shape[0]
    scale = size / rng.uniform(900, 1400)
    text = str(rng.choice(TEXT_LABELS))
    layer = np.zeros(image.shape, np.uint8)
    x = int(rng.uniform(0.03, 0.6) * size)
    y = int((rng.uniform(0.04, 0.08) if rng.random() < 0.5 else rng.uniform(0.93, 0.97)) * size)
    cv2.putText(layer, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, round(2 * scale)), cv2.LINE_AA)
    value = (layer.astype(np.float32) / 255) * peak * rng.uniform(0.85, 1.0)
    np.maximum(image, value.astype(image.dtype), out=image)
