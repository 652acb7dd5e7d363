"""The winners' workflow on tiny data: two CVs on one split, post-processing chosen on the
out-of-fold outputs (memory-mapped, computed once), fold-ensemble prediction, and the CV report
with the ensemble beside the single folds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pneumoseg.data.synth import generate_dataset
from pneumoseg.evaluate.cv import oof_outputs
from pneumoseg.infer.pipeline import EnsembleRunner, build_torch_pipeline
from pneumoseg.runs.cv import fold_run
from pneumoseg.train.cv import train_cv
from tests.train.test_cli import assert_one_line_error, run_main


@pytest.fixture(scope="module")
def cvs(tiny_data, tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("cvs")
    config = tiny_config("classifier.epochs=1")
    train_cv("seg", tiny_data.images, tiny_data.labels, config, root / "seg", n_folds=2, progress=False)
    train_cv("cls", tiny_data.images, tiny_data.labels, config, root / "cls", n_folds=2, progress=False,
             pretrained_cv=root / "seg")
    test = root / "test"
    generate_dataset(test, 8, seed=7, size=64, positive_rate=0.5, progress=False)
    return root / "cls", root / "seg", test


def test_both_cvs_share_one_split(cvs):
    cls_cv, seg_cv, _ = cvs
    assert (cls_cv / "splits.json").read_bytes() == (seg_cv / "splits.json").read_bytes()


def test_out_of_fold_outputs_cover_every_image_once_and_are_memory_mapped(cvs, tiny_data):
    cls_cv, seg_cv, _ = cvs
    outputs = oof_outputs(cls_cv, seg_cv, tiny_data.images, tiny_data.labels, size=64, progress=False)
    assert set(outputs) == {"best", "swa", "swa+tta"}
    swa = outputs["swa"]
    assert len(swa.image_ids) == len(set(swa.image_ids)) == 24
    assert isinstance(swa.seg_prob, np.memmap) and swa.seg_prob.dtype == np.float16 and swa.size == 64
    folds = json.loads((seg_cv / "splits.json").read_text())
    assert swa.image_ids == folds[0]["val"] + folds[1]["val"]
    assert float(np.abs(swa.seg_prob).sum()) > 0 and swa.cls_prob.shape == (24,)
    store = next((seg_cv / "oof").iterdir())
    stamp = (store / "swa.seg_prob.npy").stat().st_mtime_ns
    again = oof_outputs(cls_cv, seg_cv, tiny_data.images, tiny_data.labels, size=64, progress=False)
    assert (store / "swa.seg_prob.npy").stat().st_mtime_ns == stamp  # computed once
    assert np.array_equal(again["swa"].seg_prob, swa.seg_prob)


def test_tune_cv_records_the_folds_and_predict_averages_them(cvs, tiny_data, tmp_path, monkeypatch, capsys):
    cls_cv, seg_cv, test = cvs
    code, stdout, stderr = run_main(monkeypatch, capsys, "tune", "--cv", f"{cls_cv},{seg_cv}", "--images",
                                    str(tiny_data.images), "--labels", str(tiny_data.labels))
    assert code == 0, stderr
    assert "chosen on 24 out-of-fold images (2 folds" in stdout
    saved = json.loads((seg_cv / "postprocess.json").read_text())
    assert saved["source"] == {"out_of_fold": True, "n_folds": 2, "eval_size": 64} and saved["n_images"] == 24
    pipeline = build_torch_pipeline(cls_cv, seg_cv)
    assert isinstance(pipeline.segmenter, EnsembleRunner) and len(pipeline.segmenter.runners) == 2
    assert pipeline.post.pixel_threshold == saved["params"]["pixel_threshold"]
    images = [np.random.default_rng(0).random((64, 64), np.float32)]
    singles = [build_torch_pipeline(fold_run(cls_cv, k), fold_run(seg_cv, k)).segmenter.probabilities(images)
               for k in (0, 1)]
    assert np.allclose(pipeline.segmenter.probabilities(images), (singles[0] + singles[1]) / 2, atol=1e-6)
    out = tmp_path / "sub.csv"
    code, _, stderr = run_main(monkeypatch, capsys, "predict", "--cls", str(cls_cv), "--seg", str(seg_cv), "--images",
                               str(test / "dicom-images-train"), "--out", str(out), "--tta", "hflip")
    assert code == 0, stderr
    with out.open() as handle:
        assert len(list(csv.DictReader(handle))) == 8


def test_cv_report_puts_the_ensemble_beside_the_single_folds(cvs, tiny_data, tmp_path, monkeypatch, capsys):
    cls_cv, seg_cv, test = cvs
    out = tmp_path / "report"
    code, stdout, stderr = run_main(monkeypatch, capsys, "cv", "report", "--cls", str(cls_cv), "--seg", str(seg_cv),
                                    "--images", str(tiny_data.images), "--labels", str(tiny_data.labels),
                                    "--test-images", str(test / "dicom-images-train"), "--test-labels",
                                    str(test / "train-rle.csv"), "--out", str(out), "--eval-size", "64")
    assert code == 0, stderr
    summary = json.loads((out / "cv.json").read_text())
    folds = summary["test"]["fold_dice"]
    assert len(folds) == 2 and summary["test"]["mean_single_fold"] == pytest.approx(np.mean(folds))
    diff, lo, hi = summary["test"]["ensemble_minus_single"]
    assert lo <= diff <= hi
    assert diff == pytest.approx(summary["test"]["ensemble"] - summary["test"]["mean_single_fold"])
    text = (out / "cv.md").read_text()
    assert "ensemble of 2" in text and ("helped" in text or "no clear gain" in text or "worse" in text)
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["validation"]["n_images"] == 24 and report["splits"]["test"]["n_images"] == 8
    assert [f["fold"] for f in summary["segmenter_folds"]] == [0, 1] and "iou" in summary["segmenter_folds"][0]


def test_tune_cv_refuses_what_is_not_a_cv(cvs, tiny_data, tmp_path, monkeypatch, capsys):
    cls_cv, seg_cv, _ = cvs
    data = ["--images", str(tiny_data.images), "--labels", str(tiny_data.labels)]
    code, _, err = run_main(monkeypatch, capsys, "tune", "--cv", f"{seg_cv},{cls_cv}", *data)
    assert_one_line_error(code, err, "expected the classifier CV")
    code, _, err = run_main(monkeypatch, capsys, "tune", "--cv", str(tmp_path), *data)
    assert_one_line_error(code, err, "not a CV folder")
    code, _, err = run_main(monkeypatch, capsys, "tune", "--cv", str(seg_cv), "--seg", str(seg_cv), *data)
    assert_one_line_error(code, err, "--cv replaces")


def _probabilities(pipeline, images):
    return pipeline.classifier.probabilities(images), pipeline.segmenter.probabilities(images)


def test_an_ensemble_exports_to_onnx_and_travels_in_a_bundle(cvs, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from pneumoseg.infer.onnx_backend import build_onnx_pipeline

    cls_cv, seg_cv, _ = cvs
    images = [np.random.default_rng(1).random((64, 64), np.float32)]
    torch_cls, torch_seg = _probabilities(build_torch_pipeline(cls_cv, seg_cv), images)

    code, _, stderr = run_main(monkeypatch, capsys, "export-onnx", "--cls", str(cls_cv), "--seg", str(seg_cv),
                               "--out", str(tmp_path / "onnx"))
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert [m["file"] for m in manifest["segmenter"]["members"]] == ["segmenter-fold0.onnx", "segmenter-fold1.onnx"]
    onnx_cls, onnx_seg = _probabilities(build_onnx_pipeline(tmp_path / "onnx"), images)
    assert np.allclose(onnx_cls, torch_cls, atol=1e-4) and np.allclose(onnx_seg, torch_seg, atol=1e-4)

    bundle = tmp_path / "model.zip"
    code, _, stderr = run_main(monkeypatch, capsys, "export-model", "--cls", str(cls_cv), "--seg", str(seg_cv),
                               "--onnx", str(tmp_path / "onnx"), "--out", str(bundle))
    assert code == 0, stderr
    code, _, stderr = run_main(monkeypatch, capsys, "import-model", str(bundle), "--into", str(tmp_path / "unpacked"))
    assert code == 0, stderr
    unpacked = tmp_path / "unpacked"
    assert "fold ensemble" in (unpacked / "MODEL_CARD.md").read_text()
    again_cls, again_seg = _probabilities(build_torch_pipeline(unpacked / "classifier", unpacked / "segmenter"), images)
    assert np.array_equal(again_cls, torch_cls) and np.array_equal(again_seg, torch_seg)
    assert build_torch_pipeline(unpacked / "classifier", unpacked / "segmenter").post == build_torch_pipeline(
        cls_cv, seg_cv).post
