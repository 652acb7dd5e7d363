"""``predict --findings findings.csv``: per image, what a radiographer acts on (the verdict and
the measurements of :mod:`pneumoseg.data.measurements`), beside the SIIM CSV, which stays the
competition format."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.measurements import Measurement, image_left_is_patient_right, measure_mask
from pneumoseg.io import atomic_write_text

FIELDS = ("ImageId", "probability", "positive", "side", "side_assumed", "area_cm2", "lateral_mm", "apical_mm",
          "bts_class", "accp_class", "calibration")


def image_measurement(image: DicomImage, mask: np.ndarray) -> Measurement:
    """The whole-image measurement of ``mask`` (at the image's own size)."""
    return measure_mask(mask, image.spacing, calibration=image.spacing_source,
                        left_is_right=image_left_is_patient_right(image.dataset))[0]


def finding_row(image_id: str, probability: float | None, measurement: Measurement) -> dict[str, object]:
    row = measurement.row()
    return {"ImageId": image_id, "probability": "" if probability is None else f"{probability:.4f}",
            "positive": measurement.area_px > 0, **{k: row[k] for k in FIELDS[3:]}}


def encode_finding(row: dict[str, object]) -> str:
    """One findings row as a CSV line (kept in ``OUT.partial`` so that a resumed run has it)."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, FIELDS, lineterminator="").writerow({k: "" if row[k] is None else row[k] for k in FIELDS})
    return buffer.getvalue()


def write_findings(path: Path, lines: list[str]) -> None:
    atomic_write_text(Path(path), "\n".join([",".join(FIELDS), *lines]) + "\n")
