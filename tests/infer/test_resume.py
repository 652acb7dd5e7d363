"""Resume that cannot mix: the partial file's fingerprint, --restart and the output lock
(issue "Nothing mixed, nothing lost", item 1)."""

from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from pneumoseg.errors import PneumosegError
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files
from pneumoseg.infer.resume import lock_path, output_lock, partial_path
from tests.train.test_cli import assert_one_line_error, run_main


class Interrupted(Exception):
    """Stands for the kill: raised by the model on its second batch."""


def _interrupted_run(tiny_runs, sample_dicoms, out, **post) -> int:
    """A seg-only run with ``post`` settings that dies after its first batch; its finished rows."""
    pipeline = build_torch_pipeline(None, tiny_runs.seg)
    pipeline.post = pipeline.post.model_copy(update=post)
    original, calls = pipeline.predict, []

    def dies_on_second_batch(images):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return original(images)

    pipeline.predict = dies_on_second_batch
    with pytest.raises(Interrupted):
        predict_files(pipeline, sample_dicoms, out, batch_size=2, progress=False)
    return len(partial_path(out).read_text().splitlines()) - 1  # the fingerprint line is not a row


def _predict_args(tiny_runs, sample_dicoms, out, *extra: str) -> list[str]:
    images = [arg for path in sample_dicoms for arg in ("--images", str(path))]
    return ["predict", "--seg-only", "--seg", str(tiny_runs.seg), *images, "--out", str(out), "--batch-size", "2",
            *extra]


def test_a_rerun_with_other_settings_is_refused_and_restart_gives_the_clean_result(
        tiny_runs, sample_dicoms, tmp_path, monkeypatch, capsys):
    clean = tmp_path / "clean.csv"
    code, _, _ = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, clean))
    assert code == 0
    out = tmp_path / "mixed.csv"
    assert _interrupted_run(tiny_runs, sample_dicoms, out, pixel_threshold=0.01, min_area=0) == 2
    before = partial_path(out).read_bytes()

    code, _, err = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out))
    assert_one_line_error(code, err, "mixed.csv.partial", "postprocess", "--restart")
    assert not out.exists() and partial_path(out).read_bytes() == before  # nothing written, nothing lost

    code, stdout, _ = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out, "--restart"))
    assert code == 0 and "kept from an interrupted run" not in stdout
    assert out.read_text() == clean.read_text()


def test_a_rerun_with_the_same_settings_keeps_the_finished_rows(tiny_runs, sample_dicoms, tmp_path, monkeypatch,
                                                                 capsys):
    clean = tmp_path / "clean.csv"
    run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, clean))
    out = tmp_path / "resumed.csv"
    assert _interrupted_run(tiny_runs, sample_dicoms, out) == 2
    code, stdout, _ = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out))
    assert code == 0 and "2 rows kept from an interrupted run" in stdout
    assert out.read_text() == clean.read_text()


@pytest.mark.parametrize("change", ["--rle", "--overlays", "--tta", "--findings"])
def test_rle_format_outputs_and_tta_are_part_of_the_fingerprint(change, tiny_runs, sample_dicoms, tmp_path,
                                                                monkeypatch, capsys):
    out = tmp_path / "out.csv"
    _interrupted_run(tiny_runs, sample_dicoms, out)
    value = {"--rle": "standard", "--overlays": str(tmp_path / "overlays"), "--tta": "hflip",
             "--findings": str(tmp_path / "findings.csv")}[change]
    code, _, err = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out, change, value))
    assert_one_line_error(code, err, "left by an interrupted run with other settings")


def test_a_partial_file_without_a_fingerprint_is_refused(tiny_runs, sample_dicoms, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.csv"
    partial_path(out).write_text(f"{sample_dicoms[0]},1.2.3,-1\n")  # an old or hand-made partial file
    code, _, err = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out))
    assert_one_line_error(code, err, "fingerprint line is missing")


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_the_lock(
        tiny_runs, sample_dicoms, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.csv"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pneumoseg.infer.resume import output_lock\n"
        "with output_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out))
        assert_one_line_error(code, err, "being written by another pneumoseg predict", f"pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file is stale and is taken over
    assert lock_path(out).read_text().strip() == f"pid {holder.pid}"
    code, _, _ = run_main(monkeypatch, capsys, *_predict_args(tiny_runs, sample_dicoms, out))
    assert code == 0 and out.is_file() and not lock_path(out).exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    out = tmp_path / "out.csv"
    with output_lock(out):
        with open(lock_path(out)) as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PneumosegError, match="being written by another"):
            with output_lock(out):
                pass
    with output_lock(out):  # released on leaving
        pass
