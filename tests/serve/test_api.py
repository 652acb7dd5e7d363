"""The viewer's HTTP API on FastAPI's TestClient: tiny trained runs, real SIIM sample DICOMs."""

from __future__ import annotations

import io
import logging
import re
import tempfile

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from pneumoseg.cli import app as cli_app
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.rle import rle_decode
from pneumoseg.serve.app import SUMMARY_FIELDS, create_app
from pneumoseg.serve.uploads import PATIENT_IDENTIFIERS


def client_for(pipeline, **kwargs) -> TestClient:
    """A client of the app; TestClient sends ``Host: testserver``, so that name is allowed."""
    return TestClient(create_app(pipeline, **{"allowed_hosts": ["testserver"], **kwargs}))


@pytest.fixture(scope="module")
def client(pipeline) -> TestClient:
    return client_for(pipeline)


def upload(client: TestClient, data: bytes, filename: str = "xray.dcm"):
    return client.post("/api/predict", files={"file": (filename, data, "application/dicom")})


def test_predict_answers_the_summary_fields(client, sample_dicoms):
    path = sample_dicoms[0]
    response = upload(client, path.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert tuple(body) == SUMMARY_FIELDS
    assert body["image_id"] == path.stem  # the SOPInstanceUID
    assert isinstance(body["probability"], float) and 0.0 <= body["probability"] <= 1.0
    assert isinstance(body["positive"], bool)
    assert isinstance(body["area_px"], int) and body["area_px"] >= 0
    assert isinstance(body["area_mm2"], float)
    assert isinstance(body["rle"], str)
    assert set(body["measurements"]) >= {"side", "lateral_mm", "apical_mm", "bts_class", "accp_class", "calibration"}
    assert (body["rle"] == "-1") == (not body["positive"])
    assert rle_decode(body["rle"]).sum() == body["area_px"]  # the sample is 1024x1024: the source size
    row_mm, col_mm = read_dicom(path).spacing
    assert body["area_mm2"] == pytest.approx(body["area_px"] * row_mm * col_mm, abs=0.01)


def test_positive_image_reports_area_in_px_and_mm2_and_serves_a_dicom_seg(positive_pipeline, sample_dicoms):
    client = client_for(positive_pipeline)
    path = sample_dicoms[0]
    source = read_dicom(path)
    body = upload(client, path.read_bytes()).json()
    rows, cols = source.shape
    assert body["positive"] is True and body["area_px"] == rows * cols
    assert body["area_mm2"] == pytest.approx(rows * cols * source.spacing[0] * source.spacing[1], abs=0.01)
    assert body["rle"] == f"0 {rows * cols}"

    response = client.get(f"/api/seg/{body['id']}.dcm")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert f'filename="{body["image_id"]}-seg.dcm"' in response.headers["content-disposition"]
    seg = hd.seg.segread(io.BytesIO(response.content))
    assert seg.Modality == "SEG"
    assert (seg.Rows, seg.Columns) == (rows, cols)
    assert seg.StudyInstanceUID == source.dataset.StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.image_id
    assert seg.SegmentSequence[0].SegmentLabel == "Pneumothorax"
    assert seg.pixel_array.astype(bool).all()
    assert client.get(f"/api/seg/{body['id']}.dcm").content == response.content  # built once, kept


def test_negative_image_has_no_dicom_seg(negative_pipeline, sample_dicoms):
    client = client_for(negative_pipeline)
    body = upload(client, sample_dicoms[1].read_bytes()).json()
    assert body["positive"] is False and body["area_px"] == 0 and body["rle"] == "-1"
    response = client.get(f"/api/seg/{body['id']}.dcm")
    assert response.status_code == 404
    assert "no pneumothorax" in response.json()["detail"].lower()
    assert client.get(f"/api/overlay/{body['id']}.png").status_code == 200


def test_overlay_is_the_xray_at_its_own_size(client, sample_dicoms, tiny_data):
    small = sorted(tiny_data.images.rglob("*.dcm"))[0]  # a 64x64 synthetic image: not the 1024 of the mask
    for path in (sample_dicoms[2], small):
        body = upload(client, path.read_bytes()).json()
        response = client.get(f"/api/overlay/{body['id']}.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        png = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert png.shape[:2] == read_dicom(path).shape
        assert png.shape[2] == 3


def test_synthetic_image_area_is_counted_at_its_own_size(positive_pipeline, tiny_data):
    path = sorted(tiny_data.images.rglob("*.dcm"))[0]
    body = upload(client_for(positive_pipeline), path.read_bytes()).json()
    assert body["area_px"] == 64 * 64
    assert body["rle"] == f"0 {1024 * 1024}"  # the RLE stays at the submission's 1024x1024


def test_upload_over_the_limit_is_413(pipeline, sample_dicoms):
    client = client_for(pipeline, max_upload_mb=0.05)  # 51 KB; the samples are 115-130 KB
    data = sample_dicoms[0].read_bytes()
    response = upload(client, data)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]

    # No Content-Length (chunked): the body is counted as it arrives.
    boundary = "pneumosegboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.dcm\"\r\n"
            "Content-Type: application/dicom\r\n\r\n").encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    response = client.post("/api/predict", content=chunks(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413

    # Just under the limit in bytes but over it as a file: still refused.
    client = client_for(pipeline, max_upload_mb=len(data) / 1024 / 1024 - 0.001)
    assert upload(client, data).status_code == 413
    client = client_for(pipeline, max_upload_mb=len(data) / 1024 / 1024 + 0.001)
    assert upload(client, data).status_code == 200


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_non_dicom_and_broken_dicom_are_refused_with_a_readable_reason(client, sample_dicoms):
    response = upload(client, b"patient notes, not an image\n" * 20, "notes.txt")
    assert response.status_code == 415
    assert "not a DICOM file" in response.json()["detail"]

    truncated = sample_dicoms[0].read_bytes()[:3000]
    response = upload(client, truncated)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("This DICOM file cannot be read: ")
    assert "upload-" not in detail and "\n" not in detail

    response = upload(client, b"")
    assert response.status_code == 422 and "empty" in response.json()["detail"]

    response = client.post("/api/predict", files={"other": ("x.dcm", b"abc")})
    assert response.status_code == 422 and "'file'" in response.json()["detail"]

    response = client.post("/api/predict", content=sample_dicoms[0].read_bytes(),
                           headers={"content-type": "application/dicom"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def _with_identity(path, **values) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00091010, "LO", "private note about Jane Doe")  # a private tag (group 0009)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_no_patient_identifier_in_any_response_or_log(positive_pipeline, sample_dicoms, caplog):
    path = sample_dicoms[3]
    original = pydicom.dcmread(path, stop_before_pixels=True)
    identity = {"PatientName": "Doe^Jane", "PatientID": "PID-8675309", "PatientBirthDate": "19700521",
                "OtherPatientIDs": "ALT-4242", "AccessionNumber": "ACC-5551234"}
    data = _with_identity(path, **identity)
    caplog.clear()  # only what the app logs counts
    secrets = [*identity.values(), "Jane Doe", str(original.PatientName), str(original.PatientID)]
    secrets = [s for s in secrets if s]

    caplog.set_level(logging.DEBUG)
    client = client_for(positive_pipeline)
    bodies = []
    response = upload(client, data, filename="Doe_Jane_PID-8675309.dcm")
    assert response.status_code == 200
    body = response.json()
    assert tuple(body) == SUMMARY_FIELDS
    for url in (f"/api/overlay/{body['id']}.png", f"/api/seg/{body['id']}.dcm", "/health",
                "/api/overlay/nope.png"):
        bodies.append(client.get(url))
    bodies.append(upload(client, data[:4000], filename="Doe_Jane.dcm"))  # an error answer too
    bodies.append(response)

    assert bodies[1].status_code == 200
    seg = pydicom.dcmread(io.BytesIO(bodies[1].content))
    for keyword in PATIENT_IDENTIFIERS:
        assert not seg.get(keyword), keyword
    assert not any(element.tag.is_private for element in seg)
    everything = b"".join(r.content + str(r.headers).encode() for r in bodies)
    for secret in secrets:
        for variant in {secret, secret.replace("^", " "), secret.replace("^", ", ")}:
            assert variant.encode() not in everything, variant
            assert variant not in caplog.text, variant
    assert "Doe_Jane" not in caplog.text  # the upload's file name is not logged either
    assert body["image_id"] in caplog.text  # but the result is


def test_unknown_or_path_like_ids_are_404(client, sample_dicoms):
    upload(client, sample_dicoms[0].read_bytes())
    for url in ("/api/overlay/unknown.png", "/api/seg/unknown.dcm", "/api/overlay/..%2F..%2Fetc%2Fpasswd.png",
                "/api/overlay/%2e%2e.png", "/api/seg/....%2Fapp.py.dcm", "/api/overlay/../../etc/passwd.png"):
        response = client.get(url)
        assert response.status_code == 404, url
    detail = client.get("/api/overlay/unknown.png").json()["detail"]
    assert "upload the file again" in detail


def test_cache_keeps_only_the_latest_uploads(pipeline, sample_dicoms):
    client = client_for(pipeline, cache_size=2)
    ids = [upload(client, path.read_bytes()).json()["id"] for path in sample_dicoms[:3]]
    assert len(set(ids)) == 3
    assert client.get(f"/api/overlay/{ids[0]}.png").status_code == 404
    assert client.get(f"/api/overlay/{ids[1]}.png").status_code == 200
    assert client.get(f"/api/overlay/{ids[2]}.png").status_code == 200
    assert len(client.app.state.viewer.cache) == 2


def test_an_id_is_made_for_a_file_without_sop_instance_uid(client, sample_dicoms):
    ds = pydicom.dcmread(sample_dicoms[0])
    del ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    body = upload(client, buffer.getvalue()).json()
    assert re.fullmatch(r"upload-[0-9a-f]{16}", body["image_id"])
    assert client.get(f"/api/overlay/{body['id']}.png").status_code == 200


def test_large_uncompressed_upload_leaves_no_temporary_file(client, sample_dicoms, tmp_path, monkeypatch):
    ds = pydicom.dcmread(sample_dicoms[0])
    ds.decompress(generate_instance_uid=False)  # 1 MiB of native pixels: Starlette spools the form part to a temporary file
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert len(buffer.getvalue()) > 1024 * 1024
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    body = upload(client, buffer.getvalue()).json()
    assert body["image_id"] == sample_dicoms[0].stem
    assert list(spool.iterdir()) == []


def test_health_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "max_upload_mb": 64, "token_required": False}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert not re.search(r"https?://", response.text), f"{asset} loads something from outside"
    assert not re.search(r"(src|href)=\"https?://", page.text)


def test_serve_command_is_listed():
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--cls", "--seg", "--host", "--port"):
        assert option in result.output


def test_serve_without_the_serve_extra_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from typer.testing import CliRunner

    from pneumoseg.errors import PneumosegError

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if fastapi were not installed
    monkeypatch.delitem(sys.modules, "pneumoseg.serve.app", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--cls", str(tmp_path), "--seg", str(tmp_path)])
    assert isinstance(result.exception, PneumosegError)
    assert 'pip install "pneumoseg[serve]"' in str(result.exception)


def test_concurrent_uploads_all_get_their_own_answer(pipeline, sample_dicoms):
    from concurrent.futures import ThreadPoolExecutor

    client = client_for(pipeline)
    paths = sample_dicoms[:6]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda path: upload(client, path.read_bytes()), paths))
    assert [r.status_code for r in responses] == [200] * len(paths)
    assert [r.json()["image_id"] for r in responses] == [p.stem for p in paths]
    expected = pipeline.predict([read_dicom(p).pixels for p in paths])
    assert [r.json()["probability"] for r in responses] == pytest.approx([e.probability for e in expected], abs=1e-6)
