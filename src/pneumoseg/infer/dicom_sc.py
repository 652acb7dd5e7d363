"""An RGB Secondary Capture of the prediction: the X-ray with the region outlined and a one-line
burned-in summary, for the PACS that cannot show a DICOM SEG. It joins the source's study in a
series of its own (highdicom ``SCImage.from_ref_dataset``)."""

from __future__ import annotations

import warnings

import cv2
import highdicom as hd
import numpy as np

import pneumoseg
from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.measurements import Measurement
from pneumoseg.infer.dicom_seg import MANUFACTURER, source_for_derived_object
from pneumoseg.infer.drawing import RED, YELLOW, outline

SERIES_NUMBER = 9902
SERIES_DESCRIPTION = "pneumoseg overlay (AI aid, not a diagnosis)"


def summary_line(measurement: Measurement, probability: float | None) -> str:
    """E.g. "Right pneumothorax, lateral rim 24 mm, BTS large, p=0.97, pneumoseg 0.1.0 - AI aid,
    not a diagnosis" (pixels and "size unknown" without calibration)."""
    if measurement.area_px == 0:
        finding = "No pneumothorax outlined"
    else:
        side = {"both": "Bilateral"}.get(measurement.side, measurement.side.capitalize())
        rim = (f"lateral rim {measurement.lateral_mm:.0f} mm, BTS {measurement.bts_class}"
               if measurement.lateral_mm is not None else
               f"lateral rim {measurement.lateral_px} px (no calibration), size unknown")
        finding = f"{side} pneumothorax{' (side assumed)' if measurement.side_assumed else ''}, {rim}"
    p = "" if probability is None else f", p={probability:.2f}"
    return f"{finding}{p}, pneumoseg {pneumoseg.__version__} - AI aid, not a diagnosis"


def overlay_rgb(image: DicomImage, mask: np.ndarray, text: str) -> np.ndarray:
    """The X-ray (RGB uint8, its own size) with ``mask`` outlined in red and ``text`` burned in
    on a dark band at the top, so it stays legible on any film."""
    grey = np.clip(np.rint(image.pixels * 255), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    rows, cols = image.shape
    outline(bgr, mask, RED, thickness=max(2, round(max(rows, cols) / 300)))
    scale = cols / 1600
    thickness = max(1, round(2 * scale))
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if width > cols * 0.96:  # long text on a narrow film: shrink it to fit
        scale *= cols * 0.96 / width
        (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = int(height * 2.2)
    bgr[:band] = (bgr[:band] * 0.3).astype(np.uint8)
    cv2.putText(bgr, text, (int(cols * 0.02), int(height * 1.6)), cv2.FONT_HERSHEY_SIMPLEX, scale, YELLOW,
                thickness, cv2.LINE_AA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def build_secondary_capture(image: DicomImage, mask: np.ndarray, text: str) -> hd.sc.SCImage:
    """An RGB Secondary Capture of ``image`` with ``mask`` (bool, its own Rows × Columns)."""
    ds = source_for_derived_object(image.dataset)
    orientation = tuple(str(v) for v in ds.get("PatientOrientation", [])) or ("L", "F")  # the frontal convention
    with warnings.catch_warnings():
        # SIIM patient names are single-component strings; highdicom warns about each copy
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ds,
            pixel_array=overlay_rgb(image, mask, text),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_orientation=orientation[:2],
            series_description=SERIES_DESCRIPTION,
        )
    sc.Laterality = ds.get("Laterality", "")  # General Series, Type 2C: the chest is not a paired part
    return sc
