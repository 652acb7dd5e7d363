"""`pneumoseg cv train`: every fold of one stratified split, finished folds kept across a rerun
and across a SIGKILL mid-fold, the settings pinned to the CV folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pneumoseg.errors import PneumosegError
from pneumoseg.runs.cv import fold_run, fold_runs, read_cv
from pneumoseg.train.cv import train_cv
from tests.helpers import TINY_OVERRIDES
from tests.train.test_cli import assert_one_line_error, run_main


@pytest.fixture(scope="module")
def seg_cv(tiny_data, tiny_config, tmp_path_factory):
    cv_dir = tmp_path_factory.mktemp("cv") / "seg"
    train_cv("seg", tiny_data.images, tiny_data.labels, tiny_config(), cv_dir, n_folds=2, progress=False)
    return cv_dir


def test_every_fold_is_trained_on_its_own_share_of_one_split(seg_cv, tiny_data):
    manifest = read_cv(seg_cv)
    assert manifest.stage == "segmenter" and manifest.n_folds == 2
    folds = json.loads((seg_cv / "splits.json").read_text())
    vals = [set(f["val"]) for f in folds]
    assert not vals[0] & vals[1] and len(vals[0] | vals[1]) == 24  # each image validated once
    for k, run in enumerate(fold_runs(seg_cv)):
        info = json.loads((run / "run.json").read_text())
        assert info["fold"] == k and info["splits"] == str((seg_cv / "splits.json").resolve())
        assert (run / "swa.safetensors").is_file()


def test_a_rerun_keeps_finished_folds(seg_cv, tiny_data, tiny_config):
    before = {k: fold_run(seg_cv, k).joinpath("best.safetensors").stat().st_mtime_ns for k in (0, 1)}
    plan = train_cv("seg", tiny_data.images, tiny_data.labels, tiny_config(), seg_cv, n_folds=2, progress=False)
    assert plan.todo == [] and plan.skipped == [0, 1]
    assert before == {k: fold_run(seg_cv, k).joinpath("best.safetensors").stat().st_mtime_ns for k in (0, 1)}


def test_other_settings_or_fold_counts_are_refused(seg_cv, tiny_data, tiny_config):
    with pytest.raises(PneumosegError, match="other settings .*segmenter.epochs"):
        train_cv("seg", tiny_data.images, tiny_data.labels, tiny_config("segmenter.epochs=3"), seg_cv, n_folds=2)
    with pytest.raises(PneumosegError, match="2-fold segmenter CV, not a 3-fold"):
        train_cv("seg", tiny_data.images, tiny_data.labels, tiny_config(), seg_cv, n_folds=3)


def _cv_command(tiny_data, out, *extra):
    sets = [arg for override in [*TINY_OVERRIDES, "segmenter.epochs=4", "segmenter.swa_start=3",
                                 "segmenter.swa_end=4"] for arg in ("--set", override)]
    return [sys.executable, "-m", "pneumoseg.cli", "cv", "train", "seg", "--folds", "2", "--images",
            str(tiny_data.images), "--labels", str(tiny_data.labels), "--out", str(out), *sets, *extra]


def test_a_sigkill_mid_fold_then_a_rerun_trains_only_the_missing_fold(tiny_data, tmp_path):
    out = tmp_path / "cv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_cv_command(tiny_data, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "fold-0.done.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "fold 0 did not finish"
        time.sleep(0.05)
    while not (out / "fold-1" / "metrics.csv").exists():  # fold 1 is past its first epoch
        assert process.poll() is None and time.monotonic() < deadline, "fold 1 did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (out / "fold-1.done.json").exists(), "fold 1 finished before the kill: the test killed too late"
    fold0 = (out / "fold-0" / "best.safetensors").stat().st_mtime_ns
    done = subprocess.run(_cv_command(tiny_data, out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "folds already trained, kept: 0" in done.stdout + done.stderr and "trained now: 1" in done.stdout
    assert "resuming segmenter after epoch" in done.stdout + done.stderr
    assert (out / "fold-0" / "best.safetensors").stat().st_mtime_ns == fold0
    assert len(fold_runs(out)) == 2


@pytest.mark.slow
def test_fold_parallel_runs_folds_as_processes(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cv"
    code, stdout, stderr = run_main(monkeypatch, capsys, *_cv_command(tiny_data, out, "--fold-parallel", "2")[3:])
    assert code == 0, stderr
    assert len(fold_runs(out)) == 2 and (out / "fold-0.log").is_file() and (out / "fold-1.log").is_file()
    assert json.loads((out / "fold-1.done.json").read_text())["best"]["epoch"] >= 1


def test_bad_cv_arguments_are_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    data = ["--images", str(tiny_data.images), "--labels", str(tiny_data.labels), "--out", str(tmp_path / "cv")]
    code, _, err = run_main(monkeypatch, capsys, "cv", "train", "seg", "--folds", "1", *data)
    assert_one_line_error(code, err, "--folds must be at least 2")
    code, _, err = run_main(monkeypatch, capsys, "cv", "train", "cls", "--folds", "2", *data,
                            "--pretrained-cv", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "fold 0 is not trained")
