"""`pneumoseg train cls|seg` on the tiny dataset: outputs, splits reuse, one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pneumoseg import cli
from pneumoseg.config import load_config
from pneumoseg.runs.checkpoint import load_tensors
from tests.helpers import TINY_OVERRIDES

EXTRA = ["classifier.lr=0.002", "segmenter.dice_weight=0.5"]


def set_args(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class CliRuns:
    labels: Path
    splits_after_cls: str
    cls_out: Path
    cls_output: str
    seg_out: Path
    seg_output: str
    pretrained: Path


@pytest.fixture(scope="module")
def cli_runs(tiny_data, seg_run, tmp_path_factory) -> CliRuns:
    """`train cls` (its split goes in its run folder) then `train seg` with that split and --pretrained."""
    root = tmp_path_factory.mktemp("cli")
    labels = Path(shutil.copy(tiny_data.labels, root / "train-rle.csv"))
    assert not (root / "splits.json").exists()
    common = ["--images", str(tiny_data.images), "--labels", str(labels), *set_args(TINY_OVERRIDES + EXTRA)]
    runner = CliRunner()
    cls_result = runner.invoke(cli.app, ["train", "cls", *common, "--out", str(root / "cls")])
    assert cls_result.exit_code == 0, cls_result.output + repr(cls_result.exception)
    splits_after_cls = (root / "cls" / "splits.json").read_text()
    pretrained = seg_run.out / "best.safetensors"
    seg_result = runner.invoke(cli.app, ["train", "seg", *common, "--out", str(root / "seg"), "--pretrained",
                                         str(pretrained), "--splits", str(root / "cls" / "splits.json")])
    assert seg_result.exit_code == 0, seg_result.output + repr(seg_result.exception)
    return CliRuns(labels, splits_after_cls, root / "cls", cls_result.output, root / "seg", seg_result.output,
                   pretrained)


@pytest.mark.parametrize("stage", ["cls", "seg"])
def test_run_folder_holds_checkpoints_metrics_curves_config(cli_runs, stage):
    out = cli_runs.cls_out if stage == "cls" else cli_runs.seg_out
    for name in ("best.safetensors", "best.json", "last-state.safetensors", "last-state.json", "metrics.csv",
                 "curves.png", "config.yaml", "run.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))  # no leftovers of the atomic writes
    umask = os.umask(0o022)
    os.umask(umask)
    for path in out.iterdir():  # the usual permissions, not mkstemp's owner-only 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    epochs = [r["epoch"] for r in rows(out / "metrics.csv")]
    assert epochs == (["1", "2"] if stage == "cls" else ["1", "2", "swa"])
    header = rows(out / "metrics.csv")[0].keys()
    assert {"epoch", "lr", "train_loss", "val_loss", "seconds"} <= set(header)
    metrics = {"mcc", "precision", "recall", "accuracy", "roc_auc"} if stage == "cls" else {"iou", "f1", "f2"}
    assert metrics <= set(header)
    if stage == "seg":
        assert (out / "swa.safetensors").is_file() and rows(out / "metrics.csv")[-1]["n_averaged"] == "1"
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    # config.yaml is the resolved config, --set overrides included, and reloads as such
    assert load_config(out / "config.yaml") == load_config("demo", TINY_OVERRIDES + EXTRA)
    assert load_config(out / "config.yaml").classifier.lr == 0.002
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == ("classifier" if stage == "cls" else "segmenter")
    assert Path(run["splits"]) == (cli_runs.cls_out / "splits.json").resolve() and run["fold"] == 0
    assert run["splits_sha256"] == hashlib.sha256((cli_runs.cls_out / "splits.json").read_bytes()).hexdigest()
    assert run["n_train"] > 0 and run["n_val"] > 0
    _, meta = load_tensors(out / "best.safetensors")
    assert meta["config"] == load_config("demo", TINY_OVERRIDES + EXTRA).model_dump(mode="json")


def test_summary_line_names_the_best_epoch(cli_runs):
    assert "done: best mcc" in cli_runs.cls_output and "at epoch" in cli_runs.cls_output
    assert "done: best iou" in cli_runs.seg_output or "done: no best epoch" in cli_runs.seg_output
    assert "no --pretrained weights given" in cli_runs.cls_output
    assert f"pretrained weights from {cli_runs.pretrained}" in cli_runs.seg_output


def test_the_split_is_made_in_the_run_folder_never_beside_the_labels_and_reused(cli_runs):
    """The labels may sit on a read-only mount: nothing is written beside them."""
    assert sorted(p.name for p in cli_runs.labels.parent.iterdir()) == ["cls", "seg", "train-rle.csv"]
    splits_path = cli_runs.cls_out / "splits.json"
    assert splits_path.read_text() == cli_runs.splits_after_cls  # the seg run reused it unchanged
    assert f"split: {splits_path} (created), fold 0" in cli_runs.cls_output
    assert f"split: {splits_path} (reused), fold 0" in cli_runs.seg_output
    [fold] = json.loads(cli_runs.splits_after_cls)
    cls_run = json.loads((cli_runs.cls_out / "run.json").read_text())
    assert cls_run["n_train"] == len(fold["train"]) and cls_run["n_val"] == len(fold["val"]) == 4
    seg_run = json.loads((cli_runs.seg_out / "run.json").read_text())
    assert seg_run["n_train"] < len(fold["train"]) and seg_run["n_val"] < len(fold["val"])  # positives only


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["pneumoseg", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(("override", "needle"), [
    ("classifier.no_such_field=1", "classifier.no_such_field"),
    ("classifier.epochs=many", "classifier.epochs"),
    ("nosection", "section.field=value"),
    ("classifier.epochs=0", "classifier.epochs: Input should be greater than or equal to 1"),
    ("segmenter.image_size=100", "image_size (100) must be a multiple of 32"),
    ("classifier.batch_size=0", "classifier.batch_size"),
    ("segmenter.batch_size=0", "segmenter.batch_size"),
    ("segmenter.cycle_epochs=0", "segmenter.cycle_epochs"),
    ("segmenter.frozen_epochs=-1", "segmenter.frozen_epochs"),
    ("segmenter.lr=-1", "segmenter.lr: Input should be greater than 0"),
    ("classifier.augment.p=2", "classifier.augment.p: Input should be less than or equal to 1"),
    ("segmenter.swa_end=40", "the SWA window 13..40 must lie inside the epochs (1..20)"),
    ("segmenter.frozen_epochs=20", "frozen_epochs (20) must be below epochs (20)"),
    ("postprocess.cls_threshold=.nan", "postprocess.cls_threshold"),
    ("postprocess.rule=bogus", "postprocess.rule"),
    ("postprocess.min_area=-5", "postprocess.min_area"),
    ("data.val_fraction=1", "data.val_fraction"),
])
def test_bad_set_is_a_one_line_error(tiny_data, tmp_path, monkeypatch, capsys, override, needle):
    code, _, err = run_main(monkeypatch, capsys, "train", "cls", "--config", "siim", "--images", str(tiny_data.images),
                            "--labels", str(tiny_data.labels), "--out", str(tmp_path / "out"), "--set", override)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_missing_pretrained_file_is_a_one_line_error(tiny_data, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nowhere.pth"
    code, _, err = run_main(monkeypatch, capsys, "train", "seg", "--images", str(tiny_data.images), "--labels",
                            str(tiny_data.labels), "--out", str(tmp_path / "out"), *set_args(TINY_OVERRIDES),
                            "--pretrained", str(missing))
    assert_one_line_error(code, err, str(missing), "not found")


def test_missing_images_folder_is_a_one_line_error(tiny_data, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "train", "cls", "--images", str(tmp_path / "none"), "--labels",
                            str(tiny_data.labels), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, str(tmp_path / "none"))


def test_cli_module_runs_with_python_dash_m():
    """`python -m pneumoseg.cli` is what `torchrun -m pneumoseg.cli` runs."""
    result = subprocess.run([sys.executable, "-m", "pneumoseg.cli", "train", "cls", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--resume" in result.stdout and "--pretrained" in result.stdout
