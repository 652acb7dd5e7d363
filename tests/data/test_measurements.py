"""Measurements on hand-drawn masks of known geometry (issue "What a radiographer acts on")."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pneumoseg.data.measurements import UNCALIBRATED, image_left_is_patient_right, measure_mask


def _rim(shape, *, left: int, width: int, top: int, height: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + height, left:left + width] = True
    return mask


def test_a_25_mm_lateral_rim_on_a_0143_mm_grid_measures_25_mm():
    spacing = (0.143, 0.143)
    width = round(25 / 0.143)  # 175 px
    mask = _rim((2000, 2000), left=100, width=width, top=600, height=400)
    image, instance = measure_mask(mask, spacing, calibration="PixelSpacing")
    assert image.instance == 0 and instance.instance == 1
    assert instance.lateral_mm == pytest.approx(25, abs=0.5)
    assert instance.side == "right" and instance.side_assumed  # image left, no orientation in the header
    assert instance.bts_class == "large" and instance.calibration == "PixelSpacing"
    assert instance.area_cm2 == pytest.approx(width * 400 * 0.143 ** 2 / 100, abs=1e-3)


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.143, 0.143), (0.2, 0.3), (0.3, 0.2)])
@pytest.mark.parametrize("rim_mm", [8.0, 19.0, 21.0, 40.0])
def test_rim_and_class_at_several_spacings_and_sizes(spacing, rim_mm):
    row_mm, col_mm = spacing
    width = round(rim_mm / col_mm)
    height = round(10 / row_mm)  # 10 mm tall: apically small, so the lateral rim decides
    mask = _rim((1500, 1500), left=1500 - 60 - width, width=width, top=400, height=height)  # on the image's right
    image, instance = measure_mask(mask, spacing)
    assert instance.side == "left"
    assert instance.lateral_mm == pytest.approx(rim_mm, abs=max(0.5, col_mm))
    assert instance.bts_class == ("large" if rim_mm >= 20 else "small")
    assert image.lateral_mm == instance.lateral_mm and image.bts_class == instance.bts_class


def test_a_crescent_is_measured_at_its_widest_row_from_the_chest_wall():
    """A band along a curved chest wall, widest (60 px) half-way down: the rim is the widest
    horizontal run starting at the wall, not the region's bounding-box width."""
    mask = np.zeros((800, 800), dtype=bool)
    for r in range(100, 500):
        wall = 50 + int(0.0015 * (r - 300) ** 2)  # the wall bows outwards
        width = 60 - abs(r - 300) // 5
        mask[r, wall:wall + max(width, 1)] = True
    _, instance = measure_mask(mask, (0.2, 0.2))
    assert instance.lateral_px == 60
    assert instance.lateral_mm == pytest.approx(12.0)
    top_columns = np.flatnonzero(mask[100:102].any(axis=0))  # where the region reaches highest (within 1 px)
    starts = {c: int(np.argmax(mask[:, c])) for c in top_columns}
    expected_apical = max(int(np.argmin(mask[starts[c]:, c])) for c in top_columns)  # down to the first gap
    assert instance.apical_px == expected_apical and instance.apical_mm < 20
    assert instance.bts_class == "small"


@pytest.mark.parametrize(("height_px", "accp"), [(200, "small"), (220, "large")])
def test_apical_distance_and_the_accp_class(height_px, accp):
    mask = _rim((1024, 1024), left=80, width=120, top=30, height=height_px)
    _, instance = measure_mask(mask, (0.143, 0.143))
    assert instance.apical_mm == pytest.approx(height_px * 0.143, abs=0.01)  # 28.6 / 31.5 mm
    assert instance.accp_class == accp
    assert instance.bts_class == "large"  # apically >= 20 mm


def test_without_calibration_distances_stay_in_pixels_and_classes_are_unknown():
    mask = _rim((1024, 1024), left=20, width=150, top=100, height=300)
    image, instance = measure_mask(mask, None, calibration="PixelSpacing")
    assert instance.calibration == UNCALIBRATED
    assert (instance.lateral_mm, instance.apical_mm, instance.area_cm2) == (None, None, None)
    zone = round(0.3 * 1024)  # the apical zone: rows 0-306; the region starts at row 100
    assert (instance.lateral_px, instance.apical_px, instance.area_px) == (150, zone - 100, 150 * 300)
    assert instance.bts_class == instance.accp_class == image.bts_class == "unknown"


def test_two_instances_one_per_side_and_the_image_row():
    mask = _rim((1000, 1000), left=10, width=100, top=100, height=200) | _rim(
        (1000, 1000), left=900, width=50, top=100, height=100)
    image, first, second = measure_mask(mask, (0.2, 0.2))
    assert (first.instance, first.side, first.area_px) == (1, "right", 20000)  # largest first
    assert (second.instance, second.side, second.area_px) == (2, "left", 5000)
    assert image.side == "both" and image.area_px == 25000
    assert image.lateral_mm == first.lateral_mm == 20.0 and image.bts_class == "large"


def test_a_region_below_the_apical_zone_has_no_apical_distance():
    """A thin band at mid-lung (a real SIIM label looks like this): its height is not an
    apex-to-cupola distance, so only the lateral rim classes it."""
    mask = _rim((1024, 1024), left=700, width=35, top=480, height=150)
    _, instance = measure_mask(mask, (0.168, 0.168))
    assert instance.apical_px == 0 and instance.apical_mm == 0.0
    assert instance.lateral_mm == pytest.approx(35 * 0.168, abs=0.01)
    assert (instance.bts_class, instance.accp_class) == ("small", "small")


def test_patient_orientation_decides_the_side():
    mirrored, standard = Dataset(), Dataset()
    mirrored.PatientOrientation = ["R", "F"]
    standard.PatientOrientation = ["L", "F"]
    assert image_left_is_patient_right(mirrored) is False
    assert image_left_is_patient_right(standard) is True
    assert image_left_is_patient_right(Dataset()) is None
    mask = _rim((500, 500), left=10, width=40, top=50, height=80)
    _, instance = measure_mask(mask, (0.2, 0.2), left_is_right=image_left_is_patient_right(mirrored))
    assert instance.side == "left" and not instance.side_assumed


def test_an_empty_mask_is_one_image_row_saying_none():
    [image] = measure_mask(np.zeros((64, 64), bool), (0.2, 0.2))
    assert (image.side, image.area_px, image.bts_class, image.accp_class) == ("none", 0, "none", "none")


def test_measure_labels_on_the_real_sample(sample_dir):
    """Independent of the measuring code: the area is the RLE's pixel count times the header's
    PixelSpacing, read here with pydicom."""
    import pydicom

    from pneumoseg.data.measurements import measure_labels
    from pneumoseg.data.rle import rle_decode

    labels = sample_dir / "train-rle-sample.csv"
    rows, missing = measure_labels(sample_dir / "dicom", labels, progress=False)
    assert missing == []
    truth: dict[str, np.ndarray] = {}  # ImageId -> union of its instances, decoded here
    for line in labels.read_text(encoding="utf-8-sig").splitlines():
        image_id, rle = (part.strip() for part in line.split(",", 1))
        if image_id == "ImageId":  # a header line, when there is one
            continue
        union = truth.setdefault(image_id, np.zeros((1024, 1024), bool))
        if rle != "-1":
            union |= rle_decode(rle).astype(bool)
    images = {row["ImageId"]: row for row in rows if row["instance"] == 0}
    assert set(images) == set(truth)
    positives = [image_id for image_id, row in images.items() if row["area_px"]]
    assert positives and len(positives) < len(images)
    for image_id in positives:
        [path] = (sample_dir / "dicom").rglob(f"{image_id}.dcm")
        row_mm, col_mm = (float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing)
        row = images[image_id]
        assert row["area_px"] == int(truth[image_id].sum())
        assert row["calibration"] == "PixelSpacing" and row["side_assumed"]
        assert row["area_cm2"] == pytest.approx(row["area_px"] * row_mm * col_mm / 100, abs=1e-3)
        assert row["bts_class"] in {"small", "large"} and row["side"] in {"right", "left", "both"}
