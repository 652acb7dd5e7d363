"""Model bundles: pack two runs, use them with --model, and refuse a tampered or zip-slip
bundle (issue "One home for trained artifacts", item 2)."""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from pneumoseg.errors import PneumosegError
from pneumoseg.runs.bundle import CARD, MANIFEST, pack_bundle, read_manifest, unpack_bundle
from pneumoseg.runs.trained import load_trained
from tests.train.test_cli import assert_one_line_error, run_main


@pytest.fixture(scope="module")
def bundle(tiny_runs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "model.zip"
    pack_bundle(tiny_runs.cls, tiny_runs.seg, path)
    return path


def _rewrite(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` whose members went through ``change(name, data) -> [(name, data)]``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            for name, data in change(info.filename, old.read(info.filename)):
                new.writestr(name, data)
    return target


def test_a_bundle_holds_both_runs_a_card_and_a_manifest_of_every_member(bundle, tiny_runs):
    manifest = read_manifest(bundle)
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        card = archive.read(CARD).decode()
    assert names == set(manifest["members"]) | {MANIFEST}
    for name in ("classifier/best.safetensors", "classifier/config.yaml", "classifier/run.json",
                 "segmenter/best.safetensors", "segmenter/swa.safetensors", "segmenter/run.json", CARD):
        assert name in names, name
    assert not any("last-state" in name for name in names)  # training state is not a model
    assert manifest["versions"]["torch"] and manifest["content_sha256"]
    for heading in ("## The two models", "## Training data", "## Post-processing chosen", "## Held-out test results",
                    "## Intended use and limits"):
        assert heading in card
    assert "training and" in card and "normalisation mean" in card


def test_predict_with_the_bundle_writes_the_same_bytes_as_with_the_runs(bundle, tiny_runs, sample_dir, tmp_path,
                                                                         monkeypatch, capsys):
    images = ["--images", str(sample_dir / "dicom")]
    code, _, err = run_main(monkeypatch, capsys, "predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                            *images, "--out", str(tmp_path / "runs.csv"))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", str(bundle), *images,
                            "--out", str(tmp_path / "bundle.csv"))
    assert code == 0, err
    assert (tmp_path / "bundle.csv").read_bytes() == (tmp_path / "runs.csv").read_bytes()
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", str(bundle), "--seg", str(tiny_runs.seg),
                            *images, "--out", str(tmp_path / "both.csv"))
    assert_one_line_error(code, err, "--model replaces --cls and --seg")


def test_import_model_unpacks_runs_that_load(bundle, tmp_path, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "import-model", str(bundle), "--into", str(tmp_path / "m"))
    assert code == 0 and "verified and unpacked" in out
    assert load_trained(tmp_path / "m" / "classifier", "best").kind == "classifier"
    assert load_trained(tmp_path / "m" / "segmenter").checkpoint == "swa"
    code, _, err = run_main(monkeypatch, capsys, "import-model", str(bundle), "--into", str(tmp_path / "m"))
    assert_one_line_error(code, err, "exists and is not an empty folder")


@pytest.mark.parametrize(("change", "needle"), [
    (lambda n, d: [(n, d[:-1] + bytes([d[-1] ^ 1]) if n == "segmenter/config.yaml" else d)],
     "segmenter/config.yaml does not match its SHA-256"),
    (lambda n, d: [(n, d)] + ([("segmenter/extra.py", b"print('hi')")] if n == MANIFEST else []),
     "members not in its manifest: segmenter/extra.py"),
    (lambda n, d: [] if n == "classifier/run.json" else [(n, d)], "members missing: classifier/run.json"),
    (lambda n, d: [(n, d.replace(b'"has_onnx": false', b'"has_onnx": true') if n == MANIFEST else d)],
     "content_sha256 does not match"),
    (lambda n, d: [(n, d)] + ([("../evil.txt", b"x")] if n == MANIFEST else []), "would be written outside"),
    (lambda n, d: [(n, d)] + ([("/tmp/evil.txt", b"x")] if n == MANIFEST else []), "would be written outside"),
    (lambda n, d: [(n, d)] + ([("segmenter\\..\\..\\evil.txt", b"x")] if n == MANIFEST else []),
     "would be written outside"),
])
def test_a_tampered_or_zip_slip_bundle_is_refused_and_nothing_is_written(bundle, tmp_path, change, needle):
    bad = _rewrite(bundle, tmp_path / "bad.zip", change)
    target = tmp_path / "into" / "model"
    with pytest.raises(PneumosegError, match=needle):
        unpack_bundle(bad, target)
    assert not target.exists() and not (tmp_path / "evil.txt").exists()


def test_a_link_member_is_refused(bundle, tmp_path):
    bad = tmp_path / "link.zip"
    shutil.copy(bundle, bad)
    info = zipfile.ZipInfo("segmenter/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(bad, "a") as archive:
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(PneumosegError, match="is a symbolic link"):
        read_manifest(bad)


def test_export_model_on_the_cli_and_a_wrong_pair_of_runs(tiny_runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.zip"
    code, stdout, err = run_main(monkeypatch, capsys, "export-model", "--cls", str(tiny_runs.cls), "--seg",
                                 str(tiny_runs.seg), "--out", str(out))
    assert code == 0 and stdout.startswith(f"wrote {out}: "), err
    code, _, err = run_main(monkeypatch, capsys, "export-model", "--cls", str(tiny_runs.seg), "--seg",
                            str(tiny_runs.seg), "--out", str(tmp_path / "x.zip"))
    assert_one_line_error(code, err, "holds a segmenter, expected a classifier")
    assert not (tmp_path / "x.zip").exists()
    not_zip = tmp_path / "not.zip"
    not_zip.write_text("hello")
    with pytest.raises(PneumosegError, match="not a readable model bundle"):
        read_manifest(not_zip)
    assert json.loads(zipfile.ZipFile(out).read(MANIFEST))["format"] == "pneumoseg-model"
