"""`pneumoseg predict` as a real process: bad files listed, SIGKILL midway, rerun resumes.

The in-process resume test (tests/infer/test_predict.py) fakes the interrupted ``.partial``;
here the process is really killed with SIGKILL while it writes, and every file it left is
checked: no half-written CSV, PNG or DICOM SEG, no temporary file besides ``.partial``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom

from tests.data.test_dicom import write_dicom

COPIES = 3  # 33 images: enough that a kill after the first finished row lands mid-run


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pneumoseg.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _make_folder(folder: Path, sample_dicoms: list[Path], bad: bool = True) -> None:
    """Copies of the real sample under new SOPInstanceUIDs (distinct ImageIds), plus one file
    that is not DICOM."""
    folder.mkdir()
    for k in range(COPIES):
        for source in sample_dicoms:
            ds = pydicom.dcmread(source)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
            ds.save_as(folder / f"{source.stem}.{k}.dcm")
    if bad:
        (folder / "zz-not-a-dicom.dcm").write_bytes(b"this is not a DICOM file\n" * 10)


def _predict(tiny_runs, folder: Path, out: Path, *extra: str) -> list[str]:
    return _cli("predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--images", str(folder),
                "--out", str(out), "--batch-size", "1", *extra)


def _complete_rows(partial: Path) -> int:
    """Rows of ``.partial`` that end in a newline (a torn last line and the fingerprint line do not count)."""
    try:
        data = partial.read_bytes()
    except FileNotFoundError:
        return 0
    return sum(1 for line in data.split(b"\n")[:-1] if not line.startswith(b"#pneumoseg-partial "))


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def test_predict_killed_with_sigkill_resumes_to_the_clean_result(tiny_runs, sample_dicoms, tmp_path):
    folder = tmp_path / "in"
    _make_folder(folder, sample_dicoms)
    n_good = COPIES * len(sample_dicoms)
    clean_out = tmp_path / "clean" / "submission.csv"
    out_dir = tmp_path / "killed"
    out = out_dir / "submission.csv"
    partial = out.with_name(out.name + ".partial")
    extras = ("--overlays", str(out_dir / "overlays"), "--dicom-seg", str(out_dir / "seg"))
    clean = subprocess.Popen(_predict(tiny_runs, folder, clean_out), env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(_predict(tiny_runs, folder, out, *extras), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _complete_rows(partial) < 1 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = _complete_rows(partial)
    assert 1 <= done < n_good  # it really was stopped part-way

    # nothing half-written: no final CSV or errors.csv yet, no temporary, every image file whole
    assert not out.exists() and not (out_dir / "errors.csv").exists()
    assert _temporaries(out_dir) == []
    for png in (out_dir / "overlays").glob("*.png"):
        assert cv2.imread(str(png)) is not None, png
    for seg in (out_dir / "seg").glob("*.dcm") if (out_dir / "seg").is_dir() else []:
        assert pydicom.dcmread(seg).Modality == "SEG"

    rerun = subprocess.run(_predict(tiny_runs, folder, out, *extras), env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 1, rerun.stderr[-3000:]  # documented: 1 = some files could not be read
    assert "Traceback" not in rerun.stderr
    kept = re.search(r"(\d+) rows kept from an interrupted run", rerun.stdout)
    assert kept and int(kept.group(1)) == done, rerun.stdout  # the finished images were not redone
    clean_output, _ = clean.communicate(timeout=300)
    assert clean.returncode == 1, clean_output[-3000:]
    assert out.read_bytes() == clean_out.read_bytes()
    assert len(out.read_text().splitlines()) == n_good + 1
    assert (out_dir / "errors.csv").read_bytes() == (clean_out.parent / "errors.csv").read_bytes()
    assert not partial.exists() and _temporaries(out_dir) == []
    assert len(list((out_dir / "overlays").glob("*.png"))) == n_good


def test_predict_over_a_folder_of_bad_files_keeps_every_good_image(tiny_runs, sample_dicoms, tmp_path):
    """Every kind of broken input beside readable ones (including 16-bit MONOCHROME1, RGB and
    odd non-square sizes): one row per good image, errors.csv names each bad file and why,
    exit status 1."""
    import pydicom as _pydicom
    from pydicom.encaps import encapsulate

    folder = tmp_path / "in"
    folder.mkdir()
    real = sample_dicoms[0]
    good = {
        "real.dcm": None,
        "mono1-16bit-odd.dcm": write_dicom(folder / "mono1-16bit-odd.dcm",
                                           np.random.default_rng(0).integers(0, 65535, (301, 173), dtype=np.uint16),
                                           "MONOCHROME1", 16),
        "rgb.dcm": write_dicom(folder / "rgb.dcm", np.random.default_rng(1).integers(0, 255, (97, 131, 3), np.uint8),
                               "RGB", 8),
    }
    (folder / "real.dcm").write_bytes(real.read_bytes())
    (folder / "text.dcm").write_text("ImageId,EncodedPixels\n")

    def variant() -> _pydicom.Dataset:  # the real file under a UID of its own (a shared UID is another error)
        ds = _pydicom.dcmread(real)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _pydicom.uid.generate_uid()
        return ds

    buffer = io.BytesIO()
    variant().save_as(buffer)
    (folder / "truncated.dcm").write_bytes(buffer.getvalue()[:2000])
    ds = variant()
    del ds.PixelData
    ds.save_as(folder / "no-pixels.dcm")
    ds = variant()
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
    ds.PixelData = encapsulate([bytes(8)])
    ds.save_as(folder / "unknown-syntax.dcm")
    bad = {"text.dcm": "not a DICOM", "truncated.dcm": "", "no-pixels.dcm": "no Pixel Data",
           "unknown-syntax.dcm": "unsupported transfer syntax"}
    out = tmp_path / "out" / "submission.csv"
    result = subprocess.run(_predict(tiny_runs, folder, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"{len(bad)} files could not be read" in result.stdout
    assert len(out.read_text().splitlines()) == len(good) + 1
    with open(out.parent / "errors.csv", newline="") as fh:
        errors = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(fh)}
    assert sorted(errors) == sorted(bad)
    for name, words in bad.items():
        assert words in errors[name] and "\n" not in errors[name], (name, errors[name])


def test_predict_on_a_folder_without_dicoms_is_a_one_line_error(tiny_runs, tmp_path, monkeypatch, capsys):
    """In-process through ``main()`` (what the console script runs): no models are loaded first."""
    from tests.train.test_cli import assert_one_line_error, run_main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "submission.csv"
    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(folder), "--out", str(out))
    assert_one_line_error(code, err, f"no .dcm files found under {folder}")
    assert not out.exists()
