"""`predict --findings`: one row per image beside an unchanged SIIM CSV, with the measurements
of the submitted mask at the image's own size."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest

from pneumoseg.infer.findings import FIELDS
from pneumoseg.infer.pipeline import Prediction
from pneumoseg.infer.predict import predict_files
from tests.train.test_cli import run_main

WIDTH, HEIGHT = 140, 90  # px of a hand-drawn region at 1024²; the samples are 1024² themselves


class RectanglePipeline:
    """Stands in for the models: every film gets the same rectangle on the image's left."""

    def fingerprint(self) -> dict[str, object]:
        return {"rectangle": [WIDTH, HEIGHT]}

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        mask = np.zeros((1024, 1024), bool)
        mask[200:200 + HEIGHT, 100:100 + WIDTH] = True  # inside the apical zone (top 30%)
        return [Prediction(0.875, True, None, mask) for _ in images]


def test_findings_of_a_known_region_on_the_real_samples(sample_dicoms, tmp_path):
    findings = tmp_path / "findings.csv"
    predict_files(RectanglePipeline(), sample_dicoms, tmp_path / "sub.csv", findings=findings, progress=False)
    rows = {row["ImageId"]: row for row in csv.DictReader(findings.open())}
    assert len(rows) == len(sample_dicoms)
    for path in sample_dicoms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        row = rows[ds.SOPInstanceUID]
        assert (row["probability"], row["positive"], row["side"], row["side_assumed"]) == ("0.8750", "True", "right",
                                                                                          "True")
        assert float(row["lateral_mm"]) == pytest.approx(WIDTH * col_mm, abs=0.01)
        assert float(row["apical_mm"]) == pytest.approx(HEIGHT * row_mm, abs=0.01)
        assert float(row["area_cm2"]) == pytest.approx(WIDTH * HEIGHT * row_mm * col_mm / 100, abs=1e-3)
        assert row["bts_class"] == ("large" if max(WIDTH * col_mm, HEIGHT * row_mm) >= 20 else "small")
        assert row["calibration"] == "PixelSpacing"


def test_the_findings_option_leaves_the_submission_as_it_was(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys):
    common = ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--images", str(sample_dir / "dicom")]
    code, _, err = run_main(monkeypatch, capsys, *common, "--out", str(tmp_path / "plain.csv"))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, *common, "--out", str(tmp_path / "sub.csv"),
                            "--findings", str(tmp_path / "findings.csv"))
    assert code == 0, err
    assert (tmp_path / "sub.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    submission = dict(list(csv.reader((tmp_path / "sub.csv").open()))[1:])
    with (tmp_path / "findings.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == FIELDS
        findings = {row["ImageId"]: row for row in reader}
    assert set(findings) == set(submission)
    for image_id, rle in submission.items():
        assert findings[image_id]["positive"] == str(rle != "-1")
        assert 0 <= float(findings[image_id]["probability"]) <= 1
