"""The DICOM objects ``predict`` writes per image, in the source's study, each in a series of
its own: the SEG of a positive image, the SR of its measurements (which references that SEG),
and the RGB Secondary Capture of every image. A header that cannot carry one is a warning
naming the file: one bad header does not stop a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.measurements import Measurement

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomOutputs:
    """Folders for each kind of object (None: not written)."""

    seg: Path | None = None
    sr: Path | None = None
    sc: Path | None = None

    def __bool__(self) -> bool:
        return any((self.seg, self.sr, self.sc))


def write_dicom_outputs(folders: DicomOutputs, name: str, image: DicomImage, mask: np.ndarray,
                        measurement: Measurement, probability: float | None) -> None:
    """``mask``: the prediction at the image's own size; files are ``<folder>/<name>.dcm``."""
    from pneumoseg.infer.dicom_sc import build_secondary_capture, summary_line, write_secondary_capture
    from pneumoseg.infer.dicom_seg import build_dicom_seg, write_dicom_seg
    from pneumoseg.infer.dicom_sr import build_measurement_sr, write_measurement_sr

    if mask.any() and (folders.seg or folders.sr):
        seg = _built("DICOM SEG", image, lambda: build_dicom_seg(image, mask))
        if seg is not None and folders.seg:
            write_dicom_seg(folders.seg / f"{name}.dcm", seg)
        if seg is not None and folders.sr:
            sr = _built("DICOM SR", image, lambda: build_measurement_sr(image, seg, measurement, probability))
            if sr is not None:
                write_measurement_sr(folders.sr / f"{name}.dcm", sr)
    if folders.sc:
        sc = _built("Secondary Capture", image,
                    lambda: build_secondary_capture(image, mask, summary_line(measurement, probability)))
        if sc is not None:
            write_secondary_capture(folders.sc / f"{name}.dcm", sc)


def _built(what: str, image: DicomImage, build):
    try:
        return build()
    except Exception as exc:  # highdicom raises assorted errors on headers it cannot use
        logger.warning("%s: no %s written: %s", image.path, what, " ".join(str(exc).split()) or type(exc).__name__)
        return None
