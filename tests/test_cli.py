"""The command line: one-line errors, exit codes, and the foundation commands on real files."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumoseg.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pneumoseg.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "check-data", "evaluate", "train", "predict", "tune", "demo"):
        assert command in result.output


def test_check_data_on_the_real_sample(sample_dir):
    result = runner.invoke(app, ["check-data", "--images", str(sample_dir / "dicom"),
                                 "--labels", str(sample_dir / "sample_train-rle_stage1style.csv")])
    assert result.exit_code == 0, result.output
    assert "11" in result.output


def test_check_data_fails_when_a_label_has_no_row(sample_dir):
    # the BOM/no-header file lacks the 11th image: reported, non-zero exit
    result = runner.invoke(app, ["check-data", "--images", str(sample_dir / "dicom"),
                                 "--labels", str(sample_dir / "train-rle-sample.csv")])
    assert result.exit_code == 1


def test_evaluate_writes_json_and_per_image(sample_dir, tmp_path):
    truth = sample_dir / "sample_train-rle_stage1style.csv"
    result = runner.invoke(app, ["evaluate", "--pred", str(sample_dir / "train-rle-sample.csv"), "--truth", str(truth),
                                 "--json", str(tmp_path / "s.json"), "--per-image", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["mean_dice"] == 1.0 and summary["n_images"] == 11 and summary["n_missing"] == 1
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 12


def test_input_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,EncodedPixels\n1.2.3,5 10 7\n")
    result = run_cli("evaluate", "--pred", str(bad), "--truth", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.csv" in lines[0] and "line 2" in lines[0]


def test_config_error_is_one_line(tmp_path):
    result = run_cli("train", "cls", "--images", str(tmp_path), "--labels", str(tmp_path / "x.csv"),
                     "--out", str(tmp_path / "run"), "--set", "classifier.bogus=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "classifier.bogus" in result.stderr


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("rle", "reason"), [
    ("5 ten", "non-integer RLE token 'ten'"),
    ("5 -2", "length -2"),
])  # every kind of malformed RLE: tests/data/test_rle.py and test_labels.py; here, the command line
def test_malformed_rle_in_evaluate_names_file_and_row(tmp_path, rle, reason):
    truth = tmp_path / "truth.csv"
    truth.write_text(f"ImageId,EncodedPixels\n1.2.3,-1\n1.2.4,-1\n1.2.5,{rle}\n")
    _one_line_error(run_cli("evaluate", "--pred", str(truth), "--truth", str(truth)), "truth.csv", "line 4",
                    "ImageId 1.2.5", reason)


def test_train_on_a_labels_file_with_a_bad_row_is_a_one_line_error(sample_dir, tmp_path, monkeypatch, capsys):
    """In-process through ``main()`` (what the console script runs): a subprocess would import torch."""
    from tests.train.test_cli import assert_one_line_error, run_main

    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + b"1.2.3,-1\n1.2.4, 5 x\n")  # BOM, no header, a text token in row 2
    code, _, err = run_main(monkeypatch, capsys, "train", "cls", "--images", str(sample_dir / "dicom"),
                            "--labels", str(labels), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "labels.csv", "line 2", "'x'")
    assert not (tmp_path / "run").exists()


def test_check_data_on_an_empty_folder_says_so_and_fails(tmp_path):
    result = run_cli("check-data", "--images", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"No .dcm files found under {tmp_path}." in result.stdout


@pytest.mark.parametrize(("flags", "needle"), [
    (["--cls-threshold", "nan"], "command line: cls_threshold"),
    (["--pixel-threshold", "2"], "command line: pixel_threshold"),
    (["--min-area", "-3"], "command line: min_area"),
    (["--rule", "bogus"], "command line: rule"),
])
def test_predict_flags_are_validated(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys, flags, needle):
    from tests.train.test_cli import assert_one_line_error, run_main

    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(sample_dir / "dicom"), "--out", str(tmp_path / "o.csv"), *flags)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_warns_about_an_image_on_two_rows(tmp_path):
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.write_text("ImageId,EncodedPixels\n1.2.3,1 4\n1.2.4,-1\n")
    pred.write_text("ImageId,EncodedPixels\n1.2.3,1 2\n1.2.4,-1\n1.2.3,3 2\n")
    result = run_cli("evaluate", "--pred", str(pred), "--truth", str(truth), "--size", "4")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"warning: {pred}: 1 ImageId(s) on more than one row")
    assert "n_multi_row" in result.stdout


@pytest.mark.parametrize(("flags", "needle"), [
    (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["--batch-size", "-1"], "--batch-size must be at least 1, not -1"),
    (["--rle", "foo"], "--rle must be relative or standard, not 'foo'"),
    (["--device", "bogus"], "--device must be cpu, cuda, cuda:N or auto, not 'bogus'"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--overlays", "FILE"], "--overlays"),
])
def test_predict_arguments_are_checked_before_any_image(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys, flags,
                                                        needle):
    import torch

    from tests.train.test_cli import assert_one_line_error, run_main

    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    flags = [str(afile) if f == "FILE" else f for f in flags]
    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(sample_dir / "dicom"), "--out", str(tmp_path / "o.csv"), *flags)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.partial").exists()


def test_predict_out_naming_a_folder_is_refused_first(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            "--images", str(sample_dir / "dicom"), "--out", str(tmp_path))
    assert_one_line_error(code, err, f"--out {tmp_path}: is a folder")


@pytest.mark.parametrize(("flags", "needle"), [
    (["--size", "0"], "--size must be at least 1, not 0"),
    (["--rle", "foo"], "--rle must be relative or standard"),
    (["--json", "DIR"], "--json"),
])
def test_evaluate_arguments_are_one_line_errors(tmp_path, flags, needle):
    truth = tmp_path / "truth.csv"
    truth.write_text("ImageId,EncodedPixels\n1.2.3,-1\n")
    flags = [str(tmp_path) if f == "DIR" else f for f in flags]
    _one_line_error(run_cli("evaluate", "--pred", str(truth), "--truth", str(truth), *flags), needle)


def test_an_internal_error_is_exit_3_with_one_line_naming_the_traceback_log(tmp_path, monkeypatch, capsys):
    """A bug (here: the scorer raising ZeroDivisionError) is not the user's fault: exit 3, not 1
    ("some files unreadable") or 2 ("bad input"), and the traceback goes to a log, not the screen."""
    import re

    from pneumoseg.evaluate import scoring
    from tests.train.test_cli import run_main

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(scoring, "evaluate_submission", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the log goes
    truth = tmp_path / "truth.csv"
    truth.write_text("ImageId,EncodedPixels\n1.2.3,-1\n")
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--pred", str(truth), "--truth", str(truth))
    assert code == 3 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("internal error: ZeroDivisionError: division by zero (traceback in ")
    log = Path(re.search(r"traceback in (\S+);", line).group(1))
    assert log.parent == tmp_path and "Traceback" not in err
    text = log.read_text()
    assert text.startswith("pneumoseg evaluate --pred") and "ZeroDivisionError" in text and "return 1 / 0" in text


def test_measure_writes_one_row_per_image_and_instance(sample_dir, tmp_path):
    import csv

    out = tmp_path / "sizes.csv"
    result = run_cli("measure", "--labels", str(sample_dir / "train-rle-sample.csv"), "--images", str(sample_dir / "dicom"),
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    images = [row for row in rows if row["instance"] == "0"]
    labelled = {line.split(",")[0].strip() for line in
                (sample_dir / "train-rle-sample.csv").read_text(encoding="utf-8-sig").splitlines()}
    assert len(images) == len(labelled) and f"wrote {out}: {len(labelled)} images" in result.stdout
    assert {"side", "area_cm2", "lateral_mm", "apical_mm", "bts_class", "accp_class", "calibration"} <= set(rows[0])
    assert any(row["instance"] != "0" for row in rows)


def test_measure_reproduces_a_hand_drawn_25_mm_rim(tmp_path):
    """`pneumoseg measure` end to end: a film with PixelSpacing 0.143 mm and a label of a 175 px
    (25.0 mm) wide region on the image's left."""
    import csv

    import numpy as np
    import pydicom

    from pneumoseg.data.rle import rle_encode
    from pneumoseg.data.synth.dicom_writer import SynthUids, write_synth_dicom

    images = tmp_path / "images"
    images.mkdir()
    uids = SynthUids(*(pydicom.uid.generate_uid() for _ in range(3)))
    write_synth_dicom(images / f"{uids.sop}.dcm", np.full((1024, 1024), 128, np.uint8), uids, patient_number=1,
                      view="PA", pixel_spacing_mm=0.143, sex="M", age=40)
    mask = np.zeros((1024, 1024), bool)
    mask[500:700, 60:60 + 175] = True
    labels = tmp_path / "labels.csv"
    labels.write_text(f"ImageId,EncodedPixels\n{uids.sop},{rle_encode(mask)}\n")
    out = tmp_path / "sizes.csv"
    result = run_cli("measure", "--labels", str(labels), "--images", str(images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    image, instance = list(csv.DictReader(out.open()))
    assert float(instance["lateral_mm"]) == pytest.approx(25.0, abs=0.5)
    assert (instance["side"], instance["bts_class"], instance["calibration"]) == ("right", "large", "PixelSpacing")
    assert image["instance"] == "0" and image["lateral_mm"] == instance["lateral_mm"]
