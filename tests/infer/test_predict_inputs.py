"""`predict` over a folder with links that dangle or loop and names that are not UTF-8:
every such path is named in errors.csv, every readable image has its row (exit 1)."""

from __future__ import annotations

import csv
import os
import shutil

import pydicom

from pneumoseg.infer.resume import partial_path
from tests.data.test_scan import NOT_UTF8
from tests.train.test_cli import run_main

BAD_NAME = os.fsdecode(b"bad\xff.dcm")


def test_every_path_is_either_a_row_or_a_named_error(tiny_runs, sample_dicoms, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, source in enumerate(sample_dicoms[:3]):
        shutil.copy(source, folder / (NOT_UTF8 if k == 0 else source.name))
    (folder / BAD_NAME).write_bytes(b"not a DICOM file")
    (folder / "loop.dcm").symlink_to("loop.dcm")
    (folder / "dangling.dcm").symlink_to("gone.dcm")
    out = tmp_path / "out" / "submission.csv"
    code, stdout, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg",
                                 str(tiny_runs.seg), "--images", str(folder), "--out", str(out))
    assert code == 1 and "Traceback" not in err, err
    assert "3 images" in stdout and "3 files could not be read" in stdout
    rows = list(csv.reader(out.open()))[1:]
    assert sorted(image_id for image_id, _ in rows) == sorted(pydicom.dcmread(p).SOPInstanceUID
                                                              for p in sample_dicoms[:3])
    errors = list(csv.DictReader((out.parent / "errors.csv").open(encoding="utf-8")))  # valid UTF-8
    reasons = {row["path"]: row["reason"] for row in errors}
    assert set(reasons) == {f"{folder}/bad\\xff.dcm", f"{folder}/loop.dcm", f"{folder}/dangling.dcm"}
    assert reasons[f"{folder}/loop.dcm"].endswith("link loops")
    assert "not a DICOM file" in reasons[f"{folder}/bad\\xff.dcm"]
    assert not partial_path(out).exists()
