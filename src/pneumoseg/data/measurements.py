"""What a radiographer acts on, measured from a pneumothorax mask at the image's own size:
side, area, lateral rim, apical distance and the BTS / ACCP size classes (docs/measurements.md).

Distances are in mm only when the image is calibrated (``spacing``, with the header it came
from); otherwise they are in pixels and the size classes are "unknown", never a guess in mm.
One :class:`Measurement` per instance (8-connected component) and one for the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from dataclasses import asdict, dataclass

import cv2
import numpy as np

BTS_LARGE_MM = 20.0  # BTS 2023: a visible rim >= 2 cm (laterally, or apically) is large
ACCP_LARGE_MM = 30.0  # ACCP (Baumann et al., Chest 2001): apex to cupola >= 3 cm is large
APICAL_ZONE = 0.3  # the top 30% of a frontal film holds the lung apices and the cupola
UNCALIBRATED = "none (distances in pixels)"


@dataclass(frozen=True)
class Measurement:
    instance: int
    """1, 2, ... for each connected region; 0 for the whole image."""
    side: str
    """"right" or "left" (the patient's); for the whole image also "both"; "none" when nothing is outlined."""
    side_assumed: bool
    """True when the header gave no orientation and the frontal-film convention was assumed."""
    area_px: int
    area_cm2: float | None
    lateral_mm: float | None
    apical_mm: float | None
    lateral_px: int
    apical_px: int
    bts_class: str
    """"large", "small", "none" (nothing outlined) or "unknown" (no calibration)."""
    accp_class: str
    calibration: str

    def row(self) -> dict[str, object]:
        return asdict(self)


def image_left_is_patient_right(dataset) -> bool | None:
    """From PatientOrientation (the patient direction of increasing column, then row): "L"
    first means the image's left is the patient's right, the radiographic convention; "R"
    first means the film is mirrored. None when the header does not say."""
    orientation = getattr(dataset, "PatientOrientation", None) if dataset is not None else None
    if orientation is None or len(orientation) < 1:
        return None
    first = str(orientation[0]).upper()[:1]
    return {"L": True, "R": False}.get(first)


def measure_mask(mask: np.ndarray, spacing: tuple[float, float] | None, *, calibration: str | None = None,
                 left_is_right: bool | None = None) -> list[Measurement]:
    """The image's measurement first (instance 0), then one per instance, largest first.

    ``spacing``: (row, column) mm per pixel at the patient, or None. ``left_is_right``: whether
    the image's left half is the patient's right (None: assumed, as on a standard frontal film)."""
    mask = np.asarray(mask, dtype=bool)
    assumed = left_is_right is None
    left_is_right = True if left_is_right is None else left_is_right
    calibration = (calibration or "header spacing") if spacing is not None else UNCALIBRATED
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])
    instances = [_measure_region(labels == k, i + 1, spacing, calibration, left_is_right, assumed)
                 for i, k in enumerate(order)]
    return [_combine(instances, spacing, calibration, assumed), *instances]


def _measure_region(region: np.ndarray, instance: int, spacing, calibration: str, left_is_right: bool,
                    assumed: bool) -> Measurement:
    cols = np.flatnonzero(region.any(axis=0))
    centre = (cols[0] + cols[-1]) / 2
    on_image_left = centre < region.shape[1] / 2
    side = "right" if on_image_left == left_is_right else "left"
    lateral_px = _rim(region, from_left=on_image_left)
    apical_px = _apical(region)
    return _measurement(instance, side, assumed, int(region.sum()), lateral_px, apical_px, spacing, calibration)


def _rim(region: np.ndarray, *, from_left: bool) -> int:
    """The longest run of the region that starts at its outer edge, over the rows of
    ``region``: the lateral rim, measured horizontally from the chest-wall side."""
    best = 0
    for row in region[:, ::1 if from_left else -1]:
        on = np.flatnonzero(row)
        if on.size == 0:
            continue
        gaps = np.flatnonzero(np.diff(on) > 1)
        run = (gaps[0] + 1) if gaps.size else on.size
        best = max(best, int(run))
    return best


def _apical(region: np.ndarray) -> int:
    """The vertical thickness of the region at the apex: the longest run down from its top edge
    in the columns where it reaches highest (within one pixel), counted inside the apical zone
    (the top :data:`APICAL_ZONE` of the film) only; 0 for a region below that zone. Without a
    lung segmentation the apex itself is unknown (docs/measurements.md)."""
    zone = region[:int(round(APICAL_ZONE * region.shape[0]))]
    rows_any = zone.any(axis=1)
    if not rows_any.any():
        return 0
    top = int(np.flatnonzero(rows_any)[0])
    columns = np.flatnonzero(zone[top:top + 2].any(axis=0))
    return _rim(zone[:, columns].T, from_left=True)


def _measurement(instance: int, side: str, assumed: bool, area_px: int, lateral_px: int, apical_px: int,
                 spacing, calibration: str) -> Measurement:
    if spacing is None:
        area_cm2 = lateral_mm = apical_mm = None
        bts = accp = "unknown" if area_px else "none"
    else:
        row_mm, col_mm = spacing
        area_cm2 = round(area_px * row_mm * col_mm / 100.0, 3)
        lateral_mm, apical_mm = round(lateral_px * col_mm, 2), round(apical_px * row_mm, 2)
        bts = _size_class(area_px, max(lateral_mm, apical_mm) >= BTS_LARGE_MM)
        accp = _size_class(area_px, apical_mm >= ACCP_LARGE_MM)
    return Measurement(instance, side if area_px else "none", assumed, area_px, area_cm2, lateral_mm, apical_mm,
                       lateral_px, apical_px, bts, accp, calibration)


def _size_class(area_px: int, large: bool) -> str:
    return "none" if not area_px else "large" if large else "small"


def _combine(instances: Sequence[Measurement], spacing, calibration: str, assumed: bool) -> Measurement:
    """The image: its total area, and the largest rim and apical distance of any instance."""
    sides = {m.side for m in instances}
    side = "none" if not sides else sides.pop() if len(sides) == 1 else "both"
    return _measurement(0, side, assumed, sum(m.area_px for m in instances),
                        max((m.lateral_px for m in instances), default=0),
                        max((m.apical_px for m in instances), default=0), spacing, calibration)


def measure_labels(images: Path, labels: Path, *, progress: bool = True) -> tuple[list[dict[str, object]], list[str]]:
    """Measure the ground-truth masks of a label file on their images' own grids and spacing:
    rows (ImageId + :class:`Measurement` fields; image row first, then instances) for every
    labelled image found under ``images``, and the label ImageIds with no image file."""
    from tqdm.auto import tqdm

    from pneumoseg.data.dicom import read_header
    from pneumoseg.data.index import index_images
    from pneumoseg.data.intensity import pixel_spacing
    from pneumoseg.data.labels import label_mask, read_labels

    index, _ = index_images(images)
    label_set = read_labels(labels)
    rows, missing = [], []
    for image_id in tqdm(sorted(label_set.images), desc="measure", unit="img", disable=not progress):
        if image_id not in index:
            missing.append(image_id)
            continue
        ds = read_header(index[image_id])
        spacing = pixel_spacing(ds)
        mask = label_mask(label_set[image_id], (int(ds.Rows), int(ds.Columns)))
        for m in measure_mask(mask, spacing.mm if spacing else None, calibration=spacing.source if spacing else None,
                              left_is_right=image_left_is_patient_right(ds)):
            rows.append({"ImageId": image_id, **m.row()})
    return rows, missing
