"""A DICOM Structured Report of the measurements (TID 1500 Measurement Report, as a
Comprehensive 3D SR, highdicom ``sr``): one planar ROI group that references the source image
and the DICOM SEG's segment, with the side as a qualitative evaluation, the area, lateral rim
and apical distance as coded numeric items with UCUM units, the BTS and ACCP classes, and the
algorithm named with its version. It joins the source's study in a series of its own."""

from __future__ import annotations

import warnings

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

import pneumoseg
from pneumoseg.data.dicom import DicomImage
from pneumoseg.data.measurements import Measurement
from pneumoseg.infer.dicom_seg import ALGORITHM_NAME, MANUFACTURER, source_for_derived_object

SERIES_NUMBER = 9903
SCHEME = "99PNSEG"  # a private coding scheme for what no standard code names
APICAL = hd.sr.CodedConcept("apex-cupola", SCHEME, "Apex to cupola distance")
BTS_CLASS = hd.sr.CodedConcept("bts-2023-class", SCHEME, "BTS 2023 pneumothorax size")
ACCP_CLASS = hd.sr.CodedConcept("accp-2001-class", SCHEME, "ACCP 2001 pneumothorax size")
SIZE = {name: hd.sr.CodedConcept(name, SCHEME, f"{name.capitalize()} pneumothorax") for name in ("large", "small")}
SIDE = {"right": codes.SCT.Right, "left": codes.SCT.Left,
        "both": hd.sr.CodedConcept("51440002", "SCT", "Right and left")}


def build_measurement_sr(image: DicomImage, seg: Dataset | None, measurement: Measurement,
                         probability: float | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR of ``measurement`` (the image's, instance 0) on ``image`` and its ``seg``; with
    no ``seg`` (nothing outlined), an SR stating that no pneumothorax was detected, so that a
    PACS shows the image was read. ``probability``: the classifier's, reported as well."""
    source = source_for_derived_object(image.dataset)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=pneumoseg.__version__)
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="pneumothorax")
    scores = [] if probability is None else [hd.sr.Measurement(
        name=codes.DCM.Probability, value=float(probability), unit=codes.UCUM.NoUnits, algorithm_id=algorithm)]
    if seg is None:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=codes.SCT.Pneumothorax, measurements=scores or None,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.SCT.Pneumothorax, codes.SCT.Absent)])
    else:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=1,
                segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID)),
            finding_type=codes.SCT.Pneumothorax,
            measurements=_measurements(measurement, algorithm) + scores,
            qualitative_evaluations=_evaluations(measurement),
        )
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=ALGORITHM_NAME,
                                                       manufacturer_name=MANUFACTURER, model_name=pneumoseg.__version__)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ChestImaging,
                                     imaging_measurements=[group])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source] if seg is None else [source, seg], content=report[0], series_instance_uid=hd.UID(), series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
            series_description="pneumoseg pneumothorax measurements (AI aid, not a diagnosis)")
    _frame_references_only(sr)
    return sr


def _frame_references_only(ds: Dataset) -> None:
    """PS3.3 C.18.3.1.1: a reference to SEG frames carries Referenced Frame Number and no
    Referenced Segment Number (the frame fixes the segment); highdicom writes both."""
    for item in ds.get("ContentSequence", []):
        for reference in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in reference and "ReferencedSegmentNumber" in reference:
                del reference.ReferencedSegmentNumber
        _frame_references_only(item)


def _measurements(m: Measurement, algorithm: hd.sr.AlgorithmIdentification) -> list[hd.sr.Measurement]:
    """The calibrated numbers only: without spacing there are no mm to report (the classes say
    "unknown" in findings.csv, and the SR carries the side alone)."""
    if m.area_cm2 is None:
        return []
    values = ((codes.SCT.Area, m.area_cm2, codes.UCUM.SquareCentimeter),
              (codes.DCM.DistanceFromChestWall, m.lateral_mm, codes.UCUM.Millimeter),
              (APICAL, m.apical_mm, codes.UCUM.Millimeter))
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)
            for name, value, unit in values]


def _evaluations(m: Measurement) -> list[hd.sr.QualitativeEvaluation]:
    found = [hd.sr.QualitativeEvaluation(codes.SCT.Laterality, SIDE[m.side])] if m.side in SIDE else []
    for name, value in ((BTS_CLASS, m.bts_class), (ACCP_CLASS, m.accp_class)):
        if value in SIZE:
            found.append(hd.sr.QualitativeEvaluation(name, SIZE[value]))
    return found
