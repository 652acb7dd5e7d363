"""The command line: one-line errors, exit codes, and the foundation commands on real files."""

import json
import subprocess
import sys

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
