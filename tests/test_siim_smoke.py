"""The full recipe's real architectures at 1024×1024 on the 11 real SIIM sample files (slow:
`make test-all`). Not a result: a check that the siim preset trains, tunes, predicts and
exports end to end on real data, with its wall time written to the test output."""

from __future__ import annotations

import time

import pytest

from pneumoseg.config import load_config
from pneumoseg.data.labels import read_labels
from pneumoseg.evaluate.validation import outputs_from_runs, validation_samples
from pneumoseg.export import export_onnx
from pneumoseg.infer.onnx_backend import build_onnx_pipeline
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files
from pneumoseg.infer.tune import save_postprocess, tune_postprocess
from pneumoseg.train.stages import train_classifier, train_segmenter

SMOKE = ["classifier.epochs=1", "classifier.batch_size=2", "segmenter.epochs=2", "segmenter.frozen_epochs=1",
         "segmenter.swa_start=2", "segmenter.swa_end=2", "segmenter.batch_size=2", "runtime.device=cpu",
         "runtime.threads=2"]


@pytest.mark.slow
def test_siim_preset_at_1024_trains_tunes_predicts_and_exports(sample_dir, tmp_path, capsys):
    config = load_config("siim", SMOKE)
    assert config.classifier.arch == "legacy_xception" and config.segmenter.encoder == "inceptionresnetv2"
    assert config.classifier.image_size == config.segmenter.image_size == 1024
    images, labels = sample_dir / "dicom", sample_dir / "sample_train-rle_stage1style.csv"
    splits, cls, seg = tmp_path / "splits.json", tmp_path / "cls", tmp_path / "seg"
    seconds = {}

    start = time.perf_counter()
    train_segmenter(images, labels, config, seg, splits_path=splits, progress=False)
    seconds["segmenter (1 frozen + 1 epoch, SWA)"] = time.perf_counter() - start
    start = time.perf_counter()
    train_classifier(images, labels, config, cls, splits_path=splits, progress=False)
    seconds["classifier (1 epoch)"] = time.perf_counter() - start
    assert (seg / "swa.safetensors").is_file() and (cls / "best.safetensors").is_file()

    start = time.perf_counter()
    outputs = outputs_from_runs(cls, seg, validation_samples(seg, images, labels, cls_run=cls), progress=False)
    save_postprocess(tune_postprocess(outputs), seg)
    seconds["tune"] = time.perf_counter() - start
    assert (seg / "postprocess.json").is_file()

    start = time.perf_counter()
    paths = sorted(images.glob("*.dcm"))
    summary = predict_files(build_torch_pipeline(cls, seg), paths, tmp_path / "submission.csv", progress=False)
    seconds["predict 11 images"] = time.perf_counter() - start
    assert not summary.errors and len(read_labels(tmp_path / "submission.csv")) == 11

    start = time.perf_counter()
    export_onnx(cls, seg, tmp_path / "onnx")
    pipeline = build_onnx_pipeline(tmp_path / "onnx")
    seconds["export-onnx (checked against torch)"] = time.perf_counter() - start
    assert pipeline.segmenter.image_size == 1024 and pipeline.segmenter.normalisation.mean == (0.5, 0.5, 0.5)

    line = "siim preset at 1024² on the real samples: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    with capsys.disabled():  # into the test output even when pytest captures it
        print(f"\n{line}")
