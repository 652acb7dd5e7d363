"""The viewer page in a real browser: Debian's chromium driven by Python playwright.

`make test` installs chromium when it is missing (apt-get); the tests skip only when no
chromium executable can be found at all. Screenshots are saved under each test's tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pneumoseg.serve.app import create_app

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
uvicorn = pytest.importorskip("uvicorn")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
TIMEOUT_MS = 60_000


def _chromium() -> str:
    for candidate in (os.environ.get("PNEUMOSEG_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no chromium executable found (/usr/bin/chromium): `make test` installs it with "
                "`apt-get install -y chromium`, or set PNEUMOSEG_CHROMIUM")


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a background thread; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound here, handed to uvicorn: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def browser_page(tmp_path: Path):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1360, "height": 900}, accept_downloads=True)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _wait_for_overlay(page) -> None:
    page.wait_for_selector("#canvas", state="visible")
    page.wait_for_function("document.getElementById('canvas').width > 0 && !document.getElementById('busy').offsetParent")
    page.wait_for_timeout(100)  # the next animation frame draws it


# Reads the canvas back: how many pixels are outline-red, and the mean grey.
CANVAS_STATS = """() => {
  const c = document.getElementById('canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let red = 0, grey = 0;
  for (let j = 0; j < d.length; j += 4) {
    if (d[j] > 200 && d[j + 1] < 60 && d[j + 2] < 60) red++;
    grey += d[j + 1];
  }
  return {red, grey: grey / (d.length / 4), transform: c.style.transform};
}"""


def test_upload_a_dicom_and_see_the_outlined_xray(pipeline, sample_dicoms, tmp_path):
    path = sample_dicoms[0]
    with running(create_app(pipeline)) as url, browser_page(tmp_path) as page:
        page.goto(url + "/")
        assert "pneumoseg" in page.title()
        assert page.is_visible("text=Drop a chest X-ray DICOM here")
        page.set_input_files("#file", str(path))
        _wait_for_overlay(page)
        assert page.evaluate("document.getElementById('canvas').width") == 1024
        assert re.fullmatch(r"\d+(\.\d)?%", page.text_content("#probability").strip())
        assert page.text_content("#verdict").strip() in {"Pneumothorax outlined", "No pneumothorax found"}
        assert page.text_content("#image-id").strip() == path.stem
        assert page.get_attribute("#dl-overlay", "href").startswith("blob:")  # fetched with the API's headers
        assert page.is_hidden("#error")
        page.screenshot(path=str(tmp_path / "viewer.png"))


def test_a_finding_is_outlined_with_its_area_and_a_dicom_seg_download(truth_pipeline, positive_sample, tmp_path):
    with running(create_app(truth_pipeline)) as url, browser_page(tmp_path) as page:
        page.goto(url + "/")
        page.set_input_files("#file", str(positive_sample))
        _wait_for_overlay(page)
        assert page.text_content("#verdict").strip() == "Pneumothorax outlined"
        assert page.text_content("#probability").strip() == "93%"
        assert re.fullmatch(r"[\d.]+ cm²", page.text_content("#area").strip())
        assert "px" in page.text_content("#area-detail")
        assert page.text_content("#size").strip() in {"BTS large", "BTS small"}
        assert re.search(r"lateral rim \d+ mm, apex \d+ mm", page.text_content("#size-detail"))
        page.screenshot(path=str(tmp_path / "viewer-positive.png"))
        with page.expect_download() as download:
            page.click("#dl-seg")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name == f"{positive_sample.stem}-seg.dcm"
        assert saved.read_bytes()[128:132] == b"DICM"


def test_a_file_that_is_not_dicom_shows_a_readable_error(pipeline, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an x-ray\n" * 50)
    with running(create_app(pipeline)) as url, browser_page(tmp_path) as page:
        page.goto(url + "/")
        page.set_input_files("#file", str(notes))
        page.wait_for_selector("#error", state="visible")
        message = page.text_content("#error")
        assert "Could not analyse notes.txt" in message
        assert "not a DICOM file" in message
        assert page.is_hidden("#figure")
        page.screenshot(path=str(tmp_path / "viewer-error.png"))


def test_the_page_asks_once_for_the_token_of_a_locked_server(truth_pipeline, positive_sample, tmp_path):
    token = "ward-7-token-0123456789abcdef"
    with running(create_app(truth_pipeline, token=token)) as url, browser_page(tmp_path) as page:
        page.goto(url + "/")
        page.wait_for_selector("#token-form", state="visible")
        page.fill("#token", token)
        page.click("#token-form button")
        page.wait_for_selector("#token-form", state="hidden")
        page.set_input_files("#file", str(positive_sample))
        _wait_for_overlay(page)
        assert page.text_content("#verdict").strip() == "Pneumothorax outlined"
        with page.expect_download() as download:
            page.click("#dl-seg")
        assert download.value.suggested_filename == f"{positive_sample.stem}-seg.dcm"
        page.screenshot(path=str(tmp_path / "viewer-token.png"))
        page.reload()  # kept for the tab: not asked again
        page.wait_for_timeout(500)
        assert page.is_hidden("#token-form")


def test_reading_tools_outline_toggle_window_zoom_and_a_worklist(truth_pipeline, positive_sample, sample_dicoms,
                                                                 tmp_path):
    negative = next(p for p in sample_dicoms if p != positive_sample)
    with running(create_app(truth_pipeline)) as url, browser_page(tmp_path) as page:
        page.goto(url + "/")
        page.set_input_files("#file", [str(negative), str(positive_sample)])  # two files: a worklist
        page.wait_for_function("document.querySelectorAll('#worklist li .tag.positive').length == 1")
        _wait_for_overlay(page)
        assert page.locator("#worklist li").count() == 2
        shown = page.evaluate(CANVAS_STATS)
        assert shown["red"] > 100  # the last file, the positive one, is shown outlined
        page.screenshot(path=str(tmp_path / "tools-outlined.png"))

        page.keyboard.press("o")  # outline off
        page.wait_for_timeout(150)
        assert page.evaluate(CANVAS_STATS)["red"] == 0
        assert page.get_attribute("#toggle-outline", "aria-pressed") == "false"
        page.click("#toggle-outline")  # and on again
        page.wait_for_timeout(150)
        assert page.evaluate(CANVAS_STATS)["red"] == shown["red"]
        page.fill("#opacity", "0")
        page.dispatch_event("#opacity", "input")
        page.wait_for_timeout(150)
        assert page.evaluate(CANVAS_STATS)["red"] == 0

        page.select_option("#preset", "lucent")  # a narrower window on the dark end brightens the film
        page.wait_for_timeout(150)
        lucent = page.evaluate(CANVAS_STATS)["grey"]
        assert lucent > shown["grey"] + 10
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2 + 60, steps=5)  # window/level
        page.mouse.up()
        page.wait_for_timeout(150)
        assert page.evaluate(CANVAS_STATS)["grey"] != lucent
        page.mouse.wheel(0, -600)  # zoom in
        page.wait_for_timeout(150)
        assert "scale(1)" not in page.evaluate(CANVAS_STATS)["transform"]
        page.screenshot(path=str(tmp_path / "tools-zoomed.png"))
        page.keyboard.press("0")
        page.wait_for_timeout(150)
        assert "scale(1)" in page.evaluate(CANVAS_STATS)["transform"]

        page.click("#worklist li:first-child button")  # back to the first film: nothing outlined
        page.wait_for_timeout(200)
        assert page.text_content("#verdict").strip() == "No pneumothorax found"
