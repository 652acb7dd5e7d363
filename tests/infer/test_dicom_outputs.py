"""`predict --findings --dicom-seg --dicom-sr --dicom-sc` on the real samples and on 12/16-bit
MONOCHROME1 films: every object passes dciodvfy, reads back in highdicom, sits in the source's
study in a series of its own, and its numbers are findings.csv's (issue 14, "Done when")."""

from __future__ import annotations

import csv
import shutil

import highdicom as hd
import pydicom
import pytest

from pneumoseg.infer.dicom_outputs import DicomOutputs
from pneumoseg.infer.predict import predict_files
from tests.helpers import dciodvfy_errors
from tests.infer.test_findings import RectanglePipeline
from tests.test_dicom_validity import _film
from tests.train.test_cli import assert_one_line_error, run_main


@pytest.fixture(scope="module")
def outputs(sample_dicoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-outputs")
    sources = root / "in"
    sources.mkdir()
    for path in sample_dicoms:
        shutil.copy(path, sources / path.name)
    for bits in (12, 16):
        shutil.copy(_film(root, bits), sources / f"mono1-{bits}.dcm")
    cr15 = pydicom.dcmread(_film(root, 16))  # a 15-bit MONOCHROME1 CR, as many archives hold
    cr15.BitsStored, cr15.HighBit = 15, 14
    cr15.PixelData = (cr15.pixel_array >> 1).astype("<u2").tobytes()
    cr15.SOPInstanceUID = cr15.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    cr15.save_as(sources / "mono1-15.dcm")
    folders = DicomOutputs(root / "seg", root / "sr", root / "sc")
    predict_files(RectanglePipeline(), sorted(sources.glob("*.dcm")), root / "sub.csv", dicom=folders,
                  findings=root / "findings.csv", progress=False)
    findings = {row["ImageId"]: row for row in csv.DictReader((root / "findings.csv").open())}
    return root, sorted(sources.glob("*.dcm")), folders, findings


def test_every_object_passes_dciodvfy(outputs):
    _, sources, folders, findings = outputs
    written = [path for folder in (folders.seg, folders.sr, folders.sc) for path in sorted(folder.glob("*.dcm"))]
    assert len(written) == 3 * len(sources) == 3 * len(findings)
    for path in written:
        assert dciodvfy_errors(path) == [], path


def test_objects_join_the_source_study_in_their_own_series(outputs):
    _, sources, folders, _ = outputs
    for source_path in sources:
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        objects = [pydicom.dcmread(folder / f"{source.SOPInstanceUID}.dcm", stop_before_pixels=True)
                   for folder in (folders.seg, folders.sr, folders.sc)]
        assert {o.StudyInstanceUID for o in objects} == {source.StudyInstanceUID}
        series = {o.SeriesInstanceUID for o in objects}
        assert len(series) == 3 and source.SeriesInstanceUID not in series
        assert len({o.SOPInstanceUID for o in objects} | {source.SOPInstanceUID}) == 4
        assert objects[2].PhotometricInterpretation == "RGB"


def test_the_sr_reads_back_with_the_numbers_of_findings_csv(outputs):
    _, _, folders, findings = outputs
    for image_id, row in findings.items():
        sr = hd.sr.srread(folders.sr / f"{image_id}.dcm")
        [group] = sr.content.get_planar_roi_measurement_groups()
        numbers = {m.name.meaning: float(m.value) for m in group.get_measurements()}
        assert numbers == pytest.approx({"Area": float(row["area_cm2"]), "Distance from chest wall":
                                         float(row["lateral_mm"]), "Apex to cupola distance": float(row["apical_mm"]),
                                         "Probability": float(row["probability"])})
        evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
        assert evaluations["Laterality"] == row["side"].capitalize()
        assert evaluations["BTS 2023 pneumothorax size"] == f"{row['bts_class'].capitalize()} pneumothorax"
        seg = pydicom.dcmread(folders.seg / f"{image_id}.dcm", stop_before_pixels=True)
        evidence = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for study in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence for item in [series]}
        assert seg.SOPInstanceUID in evidence and image_id in evidence


def test_dicom_sr_needs_the_seg_it_references(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(sample_dir / "dicom"), "--out", str(tmp_path / "o.csv"),
                            "--dicom-sr", str(tmp_path / "sr"))
    assert_one_line_error(code, err, "--dicom-sr references the DICOM SEG")


def test_the_cli_writes_valid_objects_for_every_film(tiny_runs, outputs, tmp_path, monkeypatch, capsys):
    """The issue's replay through `pneumoseg predict`: thresholds at 0 so that every film is
    outlined (the tiny test models are not trained to find anything) and every object is made."""
    _, sources, _, _ = outputs
    folder = sources[0].parent
    out = tmp_path / "o"
    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(folder), "--out", str(out / "sub.csv"), "--cls-threshold", "0",
                            "--pixel-threshold", "0", "--min-area", "0", "--findings", str(out / "findings.csv"),
                            "--dicom-seg", str(out / "seg"), "--dicom-sr", str(out / "sr"), "--dicom-sc", str(out / "sc"))
    assert code == 0, err
    findings = list(csv.DictReader((out / "findings.csv").open()))
    assert len(findings) == len(sources) and all(row["positive"] == "True" for row in findings)
    for kind in ("seg", "sr", "sc"):
        written = sorted((out / kind).glob("*.dcm"))
        assert len(written) == len(sources), kind
        for path in written:
            assert dciodvfy_errors(path) == [], path
    for path in sorted((out / "sc").glob("*.dcm")):
        image = hd.imread(path)  # highdicom reads the Secondary Capture back
        assert image.SamplesPerPixel == 3 and image.PhotometricInterpretation == "RGB"


def test_a_negative_sr_states_that_no_pneumothorax_was_detected(sample_dicoms, tmp_path):
    """What the DICOM node files for a healthy film, so that the PACS shows it was read."""
    import numpy as np

    from pneumoseg.data.dicom import read_dicom
    from pneumoseg.data.measurements import measure_mask
    from pneumoseg.infer.dicom_sr import build_measurement_sr
    from pneumoseg.io import atomic_save

    image = read_dicom(sample_dicoms[0])
    nothing = measure_mask(np.zeros(image.shape, bool), image.spacing)[0]
    path = tmp_path / "negative-sr.dcm"
    atomic_save(path, build_measurement_sr(image, None, nothing, 0.125).save_as)
    assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    [group] = sr.content.get_image_measurement_groups()
    assert [(e.name.meaning, e.value.meaning) for e in group.get_qualitative_evaluations()] == [
        ("Pneumothorax", "Absent")]
    assert [(m.name.meaning, float(m.value)) for m in group.get_measurements()] == [("Probability", 0.125)]
    assert sr.StudyInstanceUID == image.dataset.StudyInstanceUID
