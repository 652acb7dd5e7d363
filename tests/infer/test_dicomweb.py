"""Pull mode against a real PACS (Orthanc's DICOMweb plugin): `predict --dicomweb URL --study UID`
reads the study's chest radiographs by WADO-RS (a lateral view in it is skipped), and `--stow`
stores the results back into that study; a server that is not there, or a study it does not
have, is one line."""

from __future__ import annotations

import copy
import csv

import pydicom
import pytest
from pydicom.uid import generate_uid

pytest.importorskip("dicomweb_client", reason="dicomweb-client is in the dev extra: `make test` installs it")

from pneumoseg.infer.dicomweb import store_datasets  # noqa: E402
from tests.node.orthanc import Orthanc  # noqa: E402
from tests.node.test_receiver import _free_port  # noqa: E402
from tests.train.test_cli import assert_one_line_error, run_main  # noqa: E402


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path / "orthanc", {})
    server.start()
    yield server
    server.stop()


def _lateral_copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    lateral = copy.deepcopy(ds)
    lateral.ViewPosition, lateral.SOPInstanceUID = "LL", generate_uid()
    lateral.file_meta.MediaStorageSOPInstanceUID = lateral.SOPInstanceUID
    return lateral


def test_predict_reads_a_study_by_wado_rs_and_stores_its_results_by_stow_rs(orthanc, tiny_runs, sample_dicoms,
                                                                           tmp_path, monkeypatch, capsys):
    frontal = pydicom.dcmread(sample_dicoms[0])
    store_datasets(orthanc.dicomweb, [frontal, _lateral_copy(frontal)])
    study = str(frontal.StudyInstanceUID)
    out = tmp_path / "out" / "submission.csv"
    folders = {kind: tmp_path / "out" / kind for kind in ("seg", "sr", "sc")}
    args = ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--dicomweb", orthanc.dicomweb,
            "--study", study, "--out", str(out), "--stow", orthanc.dicomweb,
            *(arg for kind, folder in folders.items() for arg in (f"--dicom-{kind}", str(folder)))]
    code, stdout, stderr = run_main(monkeypatch, capsys, *args)
    assert code == 0, stderr
    assert "1 radiographs to read, 1 other instances skipped" in stdout and "ViewPosition LL" in stdout
    with out.open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["ImageId"] == frontal.SOPInstanceUID
    positive = row["EncodedPixels"].strip() != "-1"
    modalities = sorted(tags["Modality"] for tags in orthanc.study_instances(study))
    assert modalities == sorted(["CR", "CR", "OT", *(["SEG", "SR"] if positive else [])])
    assert f"stored {2 * positive + 1} DICOM objects" in stdout
    fetched = list((tmp_path / "out" / "submission-dicomweb").rglob("*.dcm"))
    assert [p.stem for p in fetched] == [frontal.SOPInstanceUID]
    assert pydicom.dcmread(fetched[0]).pixel_array.shape == frontal.pixel_array.shape


def test_a_missing_study_or_server_is_one_line(orthanc, tiny_runs, tmp_path, monkeypatch, capsys):
    base = ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--out", str(tmp_path / "s.csv")]
    code, _, err = run_main(monkeypatch, capsys, *base, "--dicomweb", orthanc.dicomweb, "--study", "1.2.3.4")
    assert_one_line_error(code, err, orthanc.dicomweb, "no study 1.2.3.4")
    nowhere = f"http://127.0.0.1:{_free_port()}/dicom-web"
    code, _, err = run_main(monkeypatch, capsys, *base, "--dicomweb", nowhere, "--study", "1.2.3.4")
    assert_one_line_error(code, err, nowhere, "cannot reach")
    code, _, err = run_main(monkeypatch, capsys, *base, "--dicomweb", orthanc.dicomweb)
    assert_one_line_error(code, err, "--study")
    code, _, err = run_main(monkeypatch, capsys, *base, "--dicomweb", orthanc.dicomweb, "--study", "1.2",
                            "--images", str(tmp_path))
    assert_one_line_error(code, err, "one of the two")
    code, _, err = run_main(monkeypatch, capsys, *base, "--images", str(tmp_path), "--stow", orthanc.dicomweb)
    assert_one_line_error(code, err, "--stow", "--dicom-seg")
