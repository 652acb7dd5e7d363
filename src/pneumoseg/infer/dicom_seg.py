"""Predicted masks as DICOM Segmentation objects (BINARY SEG), so a PACS or viewer can show them.

One SEG per positive image: a single segment "Pneumothorax" (SCT 36118008, category
Morphologically Abnormal Structure), produced by the algorithm "pneumoseg" (family Artificial
Intelligence), referencing the source image, on the source's own pixel grid (Rows × Columns).
The 1024×1024 prediction is taken to that grid by :func:`mask_at_source_size`, the rule the
PNG overlays use.

highdicom builds the SEG straight from the source header (compressed pixel data is never
decoded). Notes on its behaviour (0.28):

- chest X-rays usually have no Frame of Reference (the SIIM files have none) or one without
  an image position; the SEG then has no Frame of Reference or plane positions either;
- when the source has PixelSpacing, highdicom would copy it into a Pixel Measures sequence
  without SliceThickness, which ``highdicom.seg.segread`` then rejects; we pass the spacing
  with a nominal SliceThickness of 1 mm instead (a projection image has no thickness);
- it reads the source's Type 2 patient and study attributes (PatientBirthDate, StudyID, ...)
  as if they were always present; a source that lacks some gets them, empty, on a copy;
- an all-empty mask is not refused by highdicom (it stores one empty frame), but a SEG that
  marks nothing says nothing: :func:`build_dicom_seg` refuses it, and ``predict`` writes SEG
  files for positive images only.
"""

from __future__ import annotations

import copy
import warnings

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

import pneumoseg
from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.preprocess import resize_mask

SEGMENT_LABEL = "Pneumothorax"
ALGORITHM_NAME = "pneumoseg"
MANUFACTURER = "pneumoseg"
SERIES_DESCRIPTION = "pneumoseg pneumothorax segmentation"
SERIES_NUMBER = 9901
DEVICE_SERIAL_NUMBER = "pneumoseg-0"


def mask_at_source_size(mask_1024: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The 1024×1024 prediction mask at an image's own ``shape`` (rows, columns): nearest
    neighbour, the same pixels the overlay outlines."""
    return resize_mask(mask_1024, shape)


def build_dicom_seg(
    source: DicomImage,
    mask: np.ndarray,
    *,
    series_number: int = SERIES_NUMBER,
    series_description: str = SERIES_DESCRIPTION,
    device_serial_number: str = DEVICE_SERIAL_NUMBER,
) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of ``mask`` (bool, the source's Rows × Columns) on ``source``.

    Raises ValueError when the mask has the wrong shape or marks no pixel."""
    ds = source.dataset
    rows, cols = int(ds.Rows), int(ds.Columns)
    mask = np.asarray(mask)
    if mask.shape != (rows, cols):
        raise ValueError(f"mask shape {mask.shape} is not the source's Rows x Columns {(rows, cols)}")
    if not mask.any():
        raise ValueError("the mask is empty: DICOM SEG objects are written for positive images only")
    spacing = _pixel_spacing(ds)
    ds = source_for_derived_object(ds, drop_spacing=spacing is None and "PixelSpacing" in ds)
    measures = None if spacing is None else hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.DCM.ArtificialIntelligence, version=pneumoseg.__version__
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Pneumothorax,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    with warnings.catch_warnings():
        # SIIM patient names are single-component strings ("17d405a3-..."); highdicom warns
        # about each one it copies, though the name is the source's and kept as it is.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=mask.astype(bool),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=pneumoseg.__version__,
            device_serial_number=device_serial_number,
            pixel_measures=measures,
            content_label="PNEUMOTHORAX",
            content_description="Pneumothorax predicted by pneumoseg",
            series_description=series_description,
        )
    # General Image, Type 2C: a projection radiograph has no Image Orientation (Patient), so the
    # SEG states the source's patient orientation (empty when the source gives none).
    seg.PatientOrientation = ds.get("PatientOrientation", "")
    return seg


def source_for_derived_object(ds: Dataset, *, drop_spacing: bool = False) -> Dataset:
    """``ds``, or a copy that highdicom accepts: the Type 2 patient and study attributes it reads
    added (empty) where missing, and an unusable PixelSpacing left out rather than copied.

    Raises ValueError when a UID the SEG must reference is missing."""
    missing = [keyword for keyword in _REQUIRED if not ds.get(keyword)]
    if missing:
        raise ValueError(f"the source image has no {', '.join(missing)}: a DICOM SEG cannot reference it")
    absent = [keyword for keyword in _TYPE2 if keyword not in ds]
    bad_age = "PatientAge" in ds and not _valid_age(ds.PatientAge)
    if not absent and not drop_spacing and not bad_age:
        return ds
    ds = copy.deepcopy(ds)
    for keyword in absent:
        setattr(ds, keyword, "")
    if drop_spacing:
        del ds.PixelSpacing
    if bad_age:  # SIIM writes "38"; the AS VR is "038Y". highdicom copies it, so fix or drop it
        age = str(ds.PatientAge).strip()
        if age.isdigit() and int(age) < 1000:
            ds.PatientAge = f"{int(age):03d}Y"
        else:
            del ds.PatientAge
    return ds


def _valid_age(value: object) -> bool:
    text = str(value)
    return len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY"


_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime")


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing as two positive numbers, else None (absent, one value, zeros, not numbers)."""
    try:
        row, column = (float(value) for value in ds.get("PixelSpacing"))
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None
