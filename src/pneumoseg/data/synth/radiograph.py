"""One synthetic chest radiograph, from anatomy to the posed, exposed 8-bit image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from pneumoseg.data.synth.acquisition import (
    AP_MAGNIFICATION,
    SIDE_MARKER_RATE,
    _pose_matrix,
    _warp,
    collimate,
    draw_side_marker,
    expose,
    film_to_8bit,
)
from pneumoseg.data.synth.anatomy import (
    draw_lung_mask,
    draw_ribs,
    draw_shoulder_girdle,
    draw_smooth_layers,
    draw_vessels,
    sample_anatomy,
)
from pneumoseg.data.synth.lookalikes import (
    LOOKALIKE_KINDS,
    choose_lookalikes,
    draw_lookalikes,
    draw_text_label,
)
from pneumoseg.data.synth.pneumothorax import (
    ShapeBank,
    load_shape_bank,
    place_pneumothorax,
    render_pneumothorax,
)

REAL_SPACING_RANGE_MM = (0.139, 0.194)  # SIIM pixel spacing at 1024 px


@dataclass(frozen=True)
class SynthRadiograph:
    """One synthetic chest radiograph: the 8-bit image (and the 16-bit film it was made from),
    one bool mask per pneumothorax instance, the drawn lung fields (bool) in image coordinates,
    the look-alikes drawn (kinds, and where they lie: bool) and each instance's conspicuity."""

    image: np.ndarray
    instances: tuple[np.ndarray, ...]
    lungs: np.ndarray
    view: str
    pixel_spacing_mm: float
    film: np.ndarray
    lookalikes: tuple[str, ...] = ()
    lookalike_mask: np.ndarray | None = None
    conspicuity: tuple[float, ...] = ()
    collimated: bool = False

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
                     bank: ShapeBank | None = None,
                     lookalikes: Mapping[str, bool] | None = None) -> SynthRadiograph:
    """Draw one chest radiograph with ``n_pneumothorax`` pneumothorax instances (0 = negative).

    Look-alikes are drawn at ``LOOKALIKE_RATES`` (for a negative or a positive film) from a
    random stream of their own; ``lookalikes`` (kind → bool) overrides the draw for the kinds it
    names and changes nothing else in the film. Fewer instances can come back (rarely): when
    one cannot be placed apart from the others, or when the pose moves it out of the frame."""
    view = "AP" if rng.random() < 0.45 else "PA"
    look_rng = np.random.default_rng(rng.integers(2**63))
    chosen = {**choose_lookalikes(look_rng, n_pneumothorax > 0), **(lookalikes or {})}
    anatomy = sample_anatomy(rng, view)
    lo = min(size, max(128, size // 4))
    smooth = cv2.resize(draw_smooth_layers(anatomy, rng, lo), (size, size),
                        interpolation=cv2.INTER_LINEAR)
    density, body, vessel_visibility, rib_visibility, air_deficit = (
        np.ascontiguousarray(smooth[..., c]) for c in range(smooth.shape[2]))
    lung_mask = draw_lung_mask(anatomy, size)

    instances: list[np.ndarray] = []
    conspicuity: list[float] = []
    taken = np.zeros((size, size), np.uint8)
    depth = cv2.distanceTransform(lung_mask, cv2.DIST_L2, 5) if n_pneumothorax else None
    for _ in range(n_pneumothorax):
        mask = place_pneumothorax(rng, bank or load_shape_bank(), anatomy, lung_mask, depth, taken)
        if mask is None:
            break
        conspicuity.append(render_pneumothorax(density, vessel_visibility, air_deficit, mask,
                                               lung_mask, depth, rng))
        instances.append(mask)
        taken |= mask
    footprint = draw_lookalikes(density, vessel_visibility, chosen, anatomy.lungs, lung_mask,
                                taken, look_rng)

    density += (0.10 / 255) * rib_visibility * draw_ribs(anatomy, size)
    density += (0.12 / 255) * body * draw_shoulder_girdle(anatomy, size)
    density += (0.10 / 255) * vessel_visibility * draw_vessels(rng, size)

    # Patient size and detector field: a larger pixel spacing shows the chest smaller.
    spacing_1024 = float(rng.uniform(*REAL_SPACING_RANGE_MM))
    scale = float(np.clip((0.165 / spacing_1024) ** 0.5 * rng.normal(1.0, 0.03), 0.9, 1.1))
    scale *= AP_MAGNIFICATION if view == "AP" else 1.0
    matrix = _pose_matrix(rng, size, scale, ap=view == "AP")
    film = expose(_warp(density, matrix, nearest=False), rng)
    collimated = collimate(film, rng)
    if rng.random() < SIDE_MARKER_RATE:
        draw_side_marker(film, rng)
    if chosen["text_label"]:
        draw_text_label(film, look_rng, peak=int(rng.uniform(0.85, 1.0) * 65535))
    # A pose can push a small apical pneumothorax out of the frame.
    posed = [(_warp(m, matrix, nearest=True).astype(bool), c)
             for m, c in zip(instances, conspicuity)]
    posed = [(m, c) for m, c in posed if m.any()]
    return SynthRadiograph(
        image=film_to_8bit(film),
        instances=tuple(m for m, _ in posed),
        lungs=_warp(lung_mask, matrix, nearest=True).astype(bool),
        view=view,
        pixel_spacing_mm=spacing_1024 * 1024 / size,
        film=film,
        lookalikes=tuple(kind for kind in LOOKALIKE_KINDS if chosen[kind]),
        lookalike_mask=_warp(footprint, matrix, nearest=True).astype(bool),
        conspicuity=tuple(c for _, c in posed),
        collimated=collimated,
    )
