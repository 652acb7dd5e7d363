"""Evaluation only reads the split the runs were trained with, and refuses runs that disagree
about it (evaluate/validation.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from pneumoseg.errors import PneumosegError
from pneumoseg.evaluate.validation import validation_samples
from tests.train.test_cli import assert_one_line_error, run_main


@pytest.fixture
def own_runs(tiny_runs, tmp_path):
    """Copies of the tiny runs whose run.json point at a split file of their own."""
    splits = tmp_path / "splits.json"
    shutil.copy(json.loads((tiny_runs.seg / "run.json").read_text())["splits"], splits)
    runs = {}
    for name, run in (("cls", tiny_runs.cls), ("seg", tiny_runs.seg)):
        shutil.copytree(run, tmp_path / name)
        record = json.loads((tmp_path / name / "run.json").read_text())
        record["splits"] = str(splits)
        (tmp_path / name / "run.json").write_text(json.dumps(record))
        runs[name] = tmp_path / name
    return runs["cls"], runs["seg"], splits


def test_the_recorded_split_gives_the_validation_images(own_runs, tiny_runs):
    cls, seg, splits = own_runs
    before = splits.read_bytes()
    samples = validation_samples(seg, tiny_runs.images, tiny_runs.labels, cls_run=cls)
    assert [s.image_id for s in samples] == json.loads(before)[0]["val"]
    assert splits.read_bytes() == before


def test_a_missing_split_is_refused_not_made(own_runs, tiny_runs, monkeypatch, capsys):
    cls, seg, splits = own_runs
    splits.unlink()
    with pytest.raises(PneumosegError, match="split file not found"):
        validation_samples(seg, tiny_runs.images, tiny_runs.labels, cls_run=cls)
    code, _, err = run_main(monkeypatch, capsys, "tune", "--cls", str(cls), "--seg", str(seg), "--images",
                            str(tiny_runs.images), "--labels", str(tiny_runs.labels))
    assert_one_line_error(code, err, str(splits), "split file not found")
    assert not splits.exists()


def test_runs_trained_on_different_splits_or_folds_are_refused(own_runs, tiny_runs):
    cls, seg, _ = own_runs
    record = json.loads((cls / "run.json").read_text())
    (cls / "run.json").write_text(json.dumps({**record, "splits_sha256": "0" * 64}))
    with pytest.raises(PneumosegError, match="trained on different split files"):
        validation_samples(seg, tiny_runs.images, tiny_runs.labels, cls_run=cls)
    (cls / "run.json").write_text(json.dumps({**record, "fold": 1}))
    with pytest.raises(PneumosegError, match="trained on different folds"):
        validation_samples(seg, tiny_runs.images, tiny_runs.labels, cls_run=cls)
    with pytest.raises(PneumosegError, match="was trained on fold 0, not --fold 1"):
        validation_samples(seg, tiny_runs.images, tiny_runs.labels, fold=1)
