"""One synthetic chest radiograph, from anatomy to the posed, exposed 8-bit image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pneumoseg.data.synth.acquisition import _draw_side_marker, _pose_matrix, _warp, expose
from pneumoseg.data.synth.anatomy import (
    draw_lung_mask,
    draw_ribs,
    draw_shoulder_girdle,
    draw_smooth_layers,
    draw_vessels,
    sample_anatomy,
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

