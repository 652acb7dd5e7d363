"""Writing a synthetic film as a SIIM-like DICOM file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from pneumoseg.errors import PneumosegError

JPEG_QUALITY = 95


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
                      view: str, pixel_spacing_mm: float, sex: str, age: int,
                      bits_stored: int = 8) -> None:
    """Write ``image`` as a DICOM file: CR, Secondary Capture SOP class, square.

    ``bits_stored`` 8 (``image`` uint8): like the SIIM release, MONOCHROME2, JPEG Baseline,
    quality 95. 12 or 16 (``image`` the uint16 film, full 16-bit range): like many other
    archives, uncompressed explicit VR little endian, BitsAllocated 16, MONOCHROME1 (stored
    values inverted: bright = air), PixelRepresentation 0, a window over the whole range."""
    if bits_stored not in (8, 12, 16):
        raise PneumosegError(f"bits_stored must be 8, 12 or 16, not {bits_stored}")
    if bits_stored == 8:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise PneumosegError(f"JPEG encoding failed for {path}")
    elif image.dtype != np.uint16:
        raise PneumosegError(f"a {bits_stored}-bit file needs the uint16 film, not {image.dtype}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uids.sop
    meta.TransferSyntaxUID = JPEGBaseline8Bit if bits_stored == 8 else ExplicitVRLittleEndian
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
    ds.PhotometricInterpretation = "MONOCHROME2" if bits_stored == 8 else "MONOCHROME1"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}", f"{pixel_spacing_mm:.6g}"]
    ds.PixelRepresentation = 0
    if bits_stored == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([jpeg.tobytes()])
        ds["PixelData"].VR = "OB"
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        top = (1 << bits_stored) - 1
        # The window a modality sends with a display-ready film: the whole stored range
        # (PS3.3 C.11.2.1.2.1: centre (top + 1) / 2 and width top + 1 map value v to v / top).
        ds.WindowCenter, ds.WindowWidth = (top + 1) // 2, top + 1
        values = (image.astype(np.uint32) * top + 32767) // 65535
        ds.PixelData = (top - values).astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)

