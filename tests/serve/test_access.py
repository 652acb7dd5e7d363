"""Who may use the viewer: token, Host, Origin/CORS, unguessable result ids, and no 500 on a
header that cannot carry a SEG (issue "Nothing mixed, nothing lost, nobody let in", item 8)."""

from __future__ import annotations

import io

import pydicom
import pytest
from fastapi.testclient import TestClient

from pneumoseg.errors import PneumosegError
from pneumoseg.serve.app import create_app
from pneumoseg.serve.security import check_bind, host_name
from tests.serve.test_api import client_for, upload

TOKEN = "s3cret-token-of-the-ward-0123456789"


@pytest.fixture(scope="module")
def locked(positive_pipeline) -> TestClient:
    return client_for(positive_pipeline, token=TOKEN)


def test_with_a_token_every_api_call_needs_it(locked, sample_dicoms):
    data = sample_dicoms[0].read_bytes()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = locked.post("/api/predict", files={"file": ("x.dcm", data)}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
    good = {"Authorization": f"Bearer {TOKEN}"}
    body = locked.post("/api/predict", files={"file": ("x.dcm", data)}, headers=good).json()
    for url in (f"/api/overlay/{body['id']}.png", f"/api/seg/{body['id']}.dcm", "/api/openapi.json"):
        assert locked.get(url).status_code == 401, url
        assert locked.get(url, headers=good).status_code == 200, url
    # the page, its files and /health stay open, so the page can ask for the token
    assert locked.get("/").status_code == 200 and locked.get("/static/app.js").status_code == 200
    assert locked.get("/health").json()["token_required"] is True


def test_host_header_must_be_an_allowed_name(pipeline):
    default = TestClient(create_app(pipeline))  # loopback names only
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert default.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example:8000", "", "testserver"):
        response = default.get("/health", headers={"Host": host})
        assert response.status_code == 400 and "--allowed-hosts" in response.json()["detail"], host
    named = TestClient(create_app(pipeline, allowed_hosts=["viewer.hospital.org"]))
    assert named.get("/health", headers={"Host": "viewer.hospital.org:8443"}).status_code == 200
    assert named.get("/health", headers={"Host": "localhost"}).status_code == 400


@pytest.mark.parametrize(("header", "expected"), [("[::1]:8000", "::1"), ("a.b:80", "a.b"), ("a.b", "a.b"),
                                                  ("::1", "::1"), ("", "")])
def test_host_name_drops_the_port(header, expected):
    assert host_name(header) == expected


def test_cross_origin_calls_are_refused_unless_their_origin_is_listed(pipeline, sample_dicoms):
    client = client_for(pipeline)
    data = sample_dicoms[0].read_bytes()
    evil = client.post("/api/predict", files={"file": ("x.dcm", data)}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    same = client.post("/api/predict", files={"file": ("x.dcm", data)}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers  # no CORS by default

    partner = "https://pacs-viewer.hospital.org"
    cors = client_for(pipeline, cors_origins=[partner], token=TOKEN)
    preflight = cors.options("/api/predict", headers={"Origin": partner, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == partner
    answer = cors.post("/api/predict", files={"file": ("x.dcm", data)},
                       headers={"Origin": partner, "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == partner
    assert cors.get("/health", headers={"Origin": "https://evil.example"}).status_code == 403


def test_results_live_under_random_ids_and_a_reused_uid_replaces_nothing(positive_pipeline, sample_dicoms):
    client = client_for(positive_pipeline)
    data = sample_dicoms[0].read_bytes()
    first, second = (upload(client, data).json() for _ in range(2))
    assert first["image_id"] == second["image_id"] == sample_dicoms[0].stem
    assert first["id"] != second["id"] and len(first["id"]) >= 20 and first["image_id"] not in first["id"]
    assert client.get(f"/api/overlay/{first['image_id']}.png").status_code == 404  # a UID opens nothing
    for body in (first, second):  # both uploads keep their own results
        assert client.get(f"/api/overlay/{body['id']}.png").status_code == 200
        assert client.get(f"/api/seg/{body['id']}.dcm").status_code == 200


def test_a_positive_upload_without_study_uid_gets_a_reason_not_a_500(positive_pipeline, sample_dicoms):
    ds = pydicom.dcmread(sample_dicoms[0])
    del ds.StudyInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    client = client_for(positive_pipeline)
    body = upload(client, buffer.getvalue()).json()
    assert body["positive"]
    response = client.get(f"/api/seg/{body['id']}.dcm")
    assert response.status_code == 422
    assert "StudyInstanceUID" in response.json()["detail"]
    assert client.get(f"/api/overlay/{body['id']}.png").status_code == 200


def test_no_token_no_network(tmp_path, monkeypatch, capsys):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(PneumosegError, match="--host 0.0.0.0 would open the viewer to the network without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(PneumosegError, match="at least 16 characters"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)

    from tests.train.test_cli import assert_one_line_error, run_main

    code, _, err = run_main(monkeypatch, capsys, "serve", "--cls", str(tmp_path), "--seg", str(tmp_path),
                            "--host", "192.168.1.20")
    assert_one_line_error(code, err, "without a token")
    monkeypatch.setenv("PNEUMOSEG_TOKEN", "short")  # the environment variable is read like --token
    code, _, err = run_main(monkeypatch, capsys, "serve", "--cls", str(tmp_path), "--seg", str(tmp_path),
                            "--host", "192.168.1.20")
    assert_one_line_error(code, err, "--token must be at least 16 characters")


def test_no_header_element_left_out_makes_a_500(positive_pipeline, sample_dicoms):
    """Each top-level element of a real SIIM header removed in turn (and the file meta's
    transfer syntax): every request is answered below 500."""
    client = client_for(positive_pipeline, cache_size=4)
    source = pydicom.dcmread(sample_dicoms[0])
    keywords = [element.keyword for element in source if element.keyword and element.keyword != "PixelData"]
    assert len(keywords) > 20
    for keyword in keywords:
        ds = pydicom.dcmread(sample_dicoms[0])
        delattr(ds, keyword)
        buffer = io.BytesIO()
        ds.save_as(buffer)
        response = upload(client, buffer.getvalue())
        assert response.status_code < 500, (keyword, response.text)
        if response.status_code == 200:
            result_id = response.json()["id"]
            for url in (f"/api/overlay/{result_id}.png", f"/api/seg/{result_id}.dcm"):
                assert client.get(url).status_code < 500, (keyword, url)
