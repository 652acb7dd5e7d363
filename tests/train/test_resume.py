"""``--resume``: a run interrupted after k epochs and resumed ends exactly where an
uninterrupted run ends (weights, optimizer, SWA average, RNG, metrics)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pneumoseg.errors import PneumosegError
from pneumoseg.io import sha256_of
from pneumoseg.runs import checkpoint
from pneumoseg.train import stages
from pneumoseg.runs.checkpoint import load_tensors
from pneumoseg.train.loop import STATE_FILE
from tests.helpers import TINY_OVERRIDES
from tests.train.recording import RecordingTrainer, recorded_fit
from tests.train.test_schedule import toy_trainer


class Interrupted(Exception):
    pass


def interrupting_trainer(after_epoch: int) -> type[RecordingTrainer]:
    class Interrupting(RecordingTrainer):
        def run_epoch(self, epoch: int) -> None:
            super().run_epoch(epoch)
            if epoch == after_epoch:
                raise Interrupted(epoch)

    return Interrupting


def metrics_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def assert_same_run(a: Path, b: Path, files: tuple[str, ...]) -> None:
    for name in files:
        tensors_a, meta_a = load_tensors(a / name)
        tensors_b, meta_b = load_tensors(b / name)
        assert tensors_a.keys() == tensors_b.keys(), name
        unequal = [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])]
        assert unequal == [], f"{name}: {unequal[:5]}"
        assert meta_a.get("epoch") == meta_b.get("epoch") and meta_a.get("metrics") == meta_b.get("metrics"), name
    assert metrics_rows(a / "metrics.csv") == metrics_rows(b / "metrics.csv")


def interrupted_then_resumed(monkeypatch, train, data, config, out: Path, after_epoch: int):
    monkeypatch.setattr(stages, "Trainer", interrupting_trainer(after_epoch))
    with pytest.raises(Interrupted):
        train(data.images, data.labels, config, out, progress=False)
    _, meta = load_tensors(out / STATE_FILE)
    assert meta["epoch"] == after_epoch
    assert len(metrics_rows(out / "metrics.csv")) == after_epoch
    return recorded_fit(monkeypatch, train, data.images, data.labels, config, out, resume=True)


def test_classifier_resume_equals_an_uninterrupted_run(tiny_data, tiny_config, tmp_path, monkeypatch):
    config = tiny_config("classifier.epochs=3")
    full = recorded_fit(monkeypatch, stages.train_classifier, tiny_data.images, tiny_data.labels, config,
                        tmp_path / "full")
    resumed = interrupted_then_resumed(monkeypatch, stages.train_classifier, tiny_data, config, tmp_path / "resumed",
                                       after_epoch=1)
    assert resumed.trainer.start_epoch == 2
    assert sorted(resumed.trainer.snapshots) == [0, 2, 3]  # only the remaining epochs ran
    assert_same_run(full.out, resumed.out, ("best.safetensors", STATE_FILE))
    assert (resumed.result.best_epoch, resumed.result.best_metric) == (full.result.best_epoch, full.result.best_metric)
    assert resumed.trainer.lrs == full.trainer.lrs[len(full.trainer.lrs) - len(resumed.trainer.lrs):]


def test_segmenter_resume_inside_the_swa_window_equals_an_uninterrupted_run(seg_run, tiny_data, tmp_path,
                                                                             monkeypatch):
    """Interrupted after epoch 2 of 3: the SWA average (1 of 2 epochs), scheduler restarts and the
    released encoder must all carry over."""
    resumed = interrupted_then_resumed(monkeypatch, stages.train_segmenter, tiny_data, seg_run.config,
                                       tmp_path / "resumed", after_epoch=2)
    assert int(resumed.trainer.swa_model.n_averaged) == 2
    assert_same_run(seg_run.out, resumed.out, ("best.safetensors", STATE_FILE, "swa.safetensors"))
    assert [r["epoch"] for r in resumed.result.history] == [1, 2, 3, "swa"]


def test_a_kill_between_the_state_file_and_its_sidecar_still_resumes(tiny_data, tiny_config, tmp_path, monkeypatch):
    """Killed after ``last-state.safetensors`` (epoch 2) was renamed into place but before
    ``last-state.json`` was: the sidecar on disk is epoch 1's. The state file carries its own
    metadata and checksum, so --resume continues after epoch 2 and ends like an uninterrupted run."""
    config = tiny_config("classifier.epochs=3")
    full = recorded_fit(monkeypatch, stages.train_classifier, tiny_data.images, tiny_data.labels, config,
                        tmp_path / "full")
    write_json = checkpoint.atomic_write_json

    def killed_before_state_sidecar(path, obj):
        if Path(path).name == "last-state.json" and obj.get("epoch") == 2:
            raise Interrupted(2)
        write_json(path, obj)

    monkeypatch.setattr(checkpoint, "atomic_write_json", killed_before_state_sidecar)
    out = tmp_path / "killed"
    with pytest.raises(Interrupted):
        recorded_fit(monkeypatch, stages.train_classifier, tiny_data.images, tiny_data.labels, config, out)
    monkeypatch.setattr(checkpoint, "atomic_write_json", write_json)
    assert json.loads((out / "last-state.json").read_text())["epoch"] == 1  # the stale sidecar
    assert json.loads((out / "last-state.json").read_text())["sha256"] != sha256_of(out / STATE_FILE)
    resumed = recorded_fit(monkeypatch, stages.train_classifier, tiny_data.images, tiny_data.labels, config, out,
                           resume=True)
    assert resumed.trainer.start_epoch == 3
    assert_same_run(full.out, out, ("best.safetensors", STATE_FILE))


def test_resume_without_saved_state_starts_from_epoch_one(tiny_config, tmp_path):
    config = tiny_config("classifier.epochs=2")
    trainer = toy_trainer(config, config.classifier, tmp_path, 8)
    result = trainer.fit(resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_resuming_a_finished_run_trains_no_more(tiny_config, tmp_path):
    config = tiny_config("classifier.epochs=2")
    first = toy_trainer(config, config.classifier, tmp_path, 8).fit()
    again = toy_trainer(config, config.classifier, tmp_path, 8, RecordingTrainer)
    result = again.fit(resume=True)
    assert again.lrs == [] and again.start_epoch == 3
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.best_epoch == first.best_epoch


@pytest.mark.parametrize(("change", "message"), [
    ("classifier.epochs=5", "classifier.epochs"),
    ("seed=3", "seed"),
    ("classifier.cycle_epochs=1", "classifier.cycle_epochs"),
])
def test_resume_with_changed_training_settings_is_refused(tiny_config, tmp_path, change, message):
    config = tiny_config("classifier.epochs=2")
    toy_trainer(config, config.classifier, tmp_path, 8).fit()
    saved_yaml = (tmp_path / "config.yaml").read_text()
    changed = tiny_config("classifier.epochs=2", change)
    with pytest.raises(PneumosegError, match=message):
        toy_trainer(changed, changed.classifier, tmp_path, 8).fit(resume=True)
    assert (tmp_path / "config.yaml").read_text() == saved_yaml  # the run's record is untouched
    # settings outside the stage (workers, device, threads) may change
    other = tiny_config("classifier.epochs=2", "data.num_workers=1", "runtime.threads=2")
    toy_trainer(other, other.classifier, tmp_path, 8).fit(resume=True)


def test_resuming_a_segmenter_run_as_a_classifier_is_refused(seg_run, tiny_data, tiny_config, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(seg_run.out, out)
    with pytest.raises(PneumosegError, match="segmenter stage"):
        stages.train_classifier(tiny_data.images, tiny_data.labels, seg_run.config, out, resume=True, progress=False)


# --------------------------------------------------------------------------- the honest version


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pneumoseg.cli", *args]


def _wait_for_epoch(run_dir: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``last-state.json`` records ``epoch`` and its checksum matches the tensors file."""
    sidecar, tensors = run_dir / "last-state.json", run_dir / STATE_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            meta = json.loads(sidecar.read_text())
            if meta["epoch"] >= epoch and meta["sha256"] == sha256_of(tensors):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"no epoch {epoch} state in {run_dir} after {timeout} s")


@pytest.mark.slow
def test_cli_run_killed_with_sigkill_resumes_to_the_same_result(tiny_data, tmp_path):
    """`pneumoseg train cls` killed (SIGKILL) once epoch 1 is saved, then rerun with --resume."""
    sets = [arg for o in [*TINY_OVERRIDES, "classifier.epochs=6"] for arg in ("--set", o)]
    common = ["train", "cls", "--images", str(tiny_data.images), "--labels", str(tiny_data.labels), *sets]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = subprocess.Popen(_cli(*common, "--out", str(tmp_path / "full")), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(_cli(*common, "--out", str(tmp_path / "killed")), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_for_epoch(tmp_path / "killed", 1, victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    _, meta = load_tensors(tmp_path / "killed" / STATE_FILE)
    assert meta["epoch"] < 6  # it really was stopped part-way
    resumed = subprocess.run(_cli(*common, "--out", str(tmp_path / "killed"), "--resume"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming classifier after epoch {meta['epoch']}" in resumed.stdout + resumed.stderr
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out[-3000:]
    assert_same_run(tmp_path / "full", tmp_path / "killed", ("best.safetensors", STATE_FILE))
