"""The DICOM objects made per image, in the source's study, each in a series of its own: the
SEG of a positive image, the SR of its measurements (which references that SEG), and the RGB
Secondary Capture of every image. ``predict`` writes them (a header that cannot carry one is a
warning naming the file: one bad header does not stop a run); the DICOM node sends them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.measurements import Measurement
from pneumoseg.io import atomic_save

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomOutputs:
    """Folders for each kind of object (None: not written)."""

    seg: Path | None = None
    sr: Path | None = None
    sc: Path | None = None

    def __bool__(self) -> bool:
        return any((self.seg, self.sr, self.sc))


def build_dicom_objects(image: DicomImage, mask: np.ndarray, measurement: Measurement, probability: float | None,
                        *, kinds: Collection[str] = ("seg", "sr", "sc"), negative_sr: bool = False,
                        guard: Callable[[str, Callable[[], Dataset]], Dataset | None] | None = None) -> dict[str, Dataset]:
    """The DICOM objects of one image by kind ("seg", "sr", "sc"), ``mask`` at its own size.

    A SEG and an SR for a finding (the SR references the SEG); for a healthy film an SR stating
    that nothing was found only with ``negative_sr``; a Secondary Capture of every image.
    ``guard(what, build)`` may catch a failed build and return None (that object is left out);
    without it a failure raises."""
    from pneumoseg.infer.dicom_sc import build_secondary_capture, summary_line
    from pneumoseg.infer.dicom_seg import build_dicom_seg
    from pneumoseg.infer.dicom_sr import build_measurement_sr

    build = guard or (lambda what, make: make())
    objects: dict[str, Dataset] = {}
    seg = build("DICOM SEG", lambda: build_dicom_seg(image, mask)) if mask.any() and {"seg", "sr"} & set(kinds) else None
    if seg is not None and "seg" in kinds:
        objects["seg"] = seg
    if "sr" in kinds and (seg is not None or (negative_sr and not mask.any())):
        sr = build("DICOM SR", lambda: build_measurement_sr(image, seg, measurement, probability))
        if sr is not None:
            objects["sr"] = sr
    if "sc" in kinds:
        sc = build("Secondary Capture",
                   lambda: build_secondary_capture(image, mask, summary_line(measurement, probability)))
        if sc is not None:
            objects["sc"] = sc
    return objects


def write_dicom_outputs(folders: DicomOutputs, name: str, image: DicomImage, mask: np.ndarray,
                        measurement: Measurement, probability: float | None) -> None:
    """``mask``: the prediction at the image's own size; files are ``<folder>/<name>.dcm``."""
    places = {kind: folder for kind, folder in (("seg", folders.seg), ("sr", folders.sr), ("sc", folders.sc)) if folder}

    def warned(what: str, make: Callable[[], Dataset]) -> Dataset | None:
        try:
            return make()
        except Exception as exc:  # highdicom raises assorted errors on headers it cannot use
            reason = " ".join(str(exc).split()) or type(exc).__name__
            logger.warning("%s: no %s written: %s", image.path, what, reason)
            return None

    for kind, dataset in build_dicom_objects(image, mask, measurement, probability, kinds=places,
                                             guard=warned).items():
        atomic_save(places[kind] / f"{name}.dcm", dataset.save_as)
