import csv
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pneumoseg.cli import app
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import read_labels
from pneumoseg.evaluate.scoring import evaluate_submission
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files, run_fingerprint, safe_name
from pneumoseg.infer.resume import open_partial

runner = CliRunner()


def test_predict_on_real_sample_writes_one_row_per_image(tiny_runs, sample_dir, sample_dicoms, tmp_path):
    out = tmp_path / "submission.csv"
    overlays = tmp_path / "overlays"
    result = runner.invoke(app, ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--images", str(sample_dir / "dicom"), "--out", str(out),
                                 "--overlays", str(overlays), "--tta", "hflip"])
    assert result.exit_code == 0, result.output
    labels = read_labels(out)
    assert sorted(labels.images) == sorted(p.stem for p in sample_dicoms)
    assert out.read_text().splitlines()[0] == "ImageId,EncodedPixels"
    scores = evaluate_submission(out, sample_dir / "sample_train-rle_stage1style.csv").summary()
    assert scores["n_images"] == 11 and scores["n_missing"] == 0
    pngs = sorted(overlays.glob("*.png"))
    assert len(pngs) == 11
    import cv2

    assert cv2.imread(str(pngs[0])).shape[:2] == (1024, 1024)  # the DICOM's own size


def test_gate_skips_segmentation_of_negatives(tiny_runs, sample_dicoms):
    pipeline = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)
    pixels = [read_dicom(p).pixels for p in sample_dicoms[:4]]
    pipeline.post = pipeline.post.model_copy(update={"cls_threshold": 1.01, "min_area": 0})
    preds = pipeline.predict(pixels)
    assert all(not p.segmented and not p.positive and p.probability is not None for p in preds)
    pipeline.post = pipeline.post.model_copy(update={"cls_threshold": 0.0, "pixel_threshold": -1.0})
    preds = pipeline.predict(pixels)
    assert all(p.segmented and p.mask.shape == (1024, 1024) and p.mask.all() for p in preds)


def test_seg_only_segments_every_image(tiny_runs, sample_dicoms):
    pipeline = build_torch_pipeline(None, tiny_runs.seg)
    preds = pipeline.predict([read_dicom(p).pixels for p in sample_dicoms[:3]])
    assert all(p.segmented and p.probability is None and p.seg_prob.shape == (64, 64) for p in preds)


def test_non_square_image_gets_a_1024_mask(tiny_runs):
    pipeline = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)
    pipeline.post = pipeline.post.model_copy(update={"cls_threshold": 0.0})
    (pred,) = pipeline.predict([np.random.default_rng(0).random((300, 171)).astype(np.float32)])
    assert pred.mask.shape == (1024, 1024)


def test_bad_files_are_listed_and_good_ones_still_predicted(tiny_runs, sample_dicoms, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sample_dicoms[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.dcm").write_bytes(b"this is not a DICOM file")
    out = tmp_path / "out" / "submission.csv"
    result = runner.invoke(app, ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--images", str(folder), "--out", str(out)])
    assert result.exit_code == 1
    assert len(read_labels(out)) == 3
    rows = list(csv.DictReader((out.parent / "errors.csv").open()))
    assert len(rows) == 1 and rows[0]["path"].endswith("broken.dcm") and "not a DICOM" in rows[0]["reason"]


def test_files_sharing_a_sop_instance_uid_are_listed_and_none_predicted(tiny_runs, sample_dicoms, tmp_path):
    """Two files, one SOPInstanceUID: no row, overlay or SEG for either (none may overwrite the other)."""
    folder = tmp_path / "in"
    (folder / "copy").mkdir(parents=True)
    for path in sample_dicoms[:3]:
        shutil.copy(path, folder / path.name)
    twin = folder / "copy" / "again.dcm"
    shutil.copy(sample_dicoms[0], twin)
    out, overlays, segs = tmp_path / "out" / "submission.csv", tmp_path / "overlays", tmp_path / "segs"
    result = runner.invoke(app, ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--images", str(folder), "--out", str(out), "--overlays", str(overlays),
                                 "--cls-threshold", "0", "--pixel-threshold", "0", "--min-area", "0",
                                 "--dicom-seg", str(segs)])
    assert result.exit_code == 1, result.output
    shared_id = sample_dicoms[0].stem
    assert set(read_labels(out).images) == {p.stem for p in sample_dicoms[1:3]}
    rows = {r["path"]: r["reason"] for r in csv.DictReader((out.parent / "errors.csv").open())}
    assert set(rows) == {str(folder / sample_dicoms[0].name), str(twin)}
    assert all(f"SOPInstanceUID {shared_id} is also that of" in reason for reason in rows.values())
    assert shared_id not in {p.stem for p in overlays.iterdir()} and len(list(overlays.iterdir())) == 2
    assert shared_id not in {p.stem for p in segs.iterdir()}


def test_interrupted_run_resumes_without_redoing_finished_images(tiny_runs, sample_dicoms, tmp_path):
    pipeline = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)
    clean = tmp_path / "clean.csv"
    predict_files(pipeline, sample_dicoms, clean, progress=False)
    out = tmp_path / "resumed.csv"
    partial = out.with_name(out.name + ".partial")
    # a previous run finished the first two images, then died mid-line
    done_rows = [line for line in clean.read_text().splitlines()[1:3]]
    with open_partial(out, run_fingerprint(pipeline, "relative")) as fh:
        fh.write("".join(f"{sample_dicoms[i]},{row},\n" for i, row in enumerate(done_rows)) + "/half/written,")
    calls = []
    original = pipeline.predict
    pipeline.predict = lambda images: calls.append(len(images)) or original(images)
    summary = predict_files(pipeline, sample_dicoms, out, progress=False)
    assert summary.n_resumed == 2 and sum(calls) == len(sample_dicoms) - 2
    assert out.read_text() == clean.read_text()
    assert not partial.exists()


@pytest.mark.parametrize("image_id, expected", [("1.2.3", "1.2.3"), ("../../etc/passwd", "_.._etc_passwd"),
                                                ("a/b\\c", "a_b_c"), ("", "image")])
def test_safe_name_cannot_escape_the_output_folder(image_id, expected):
    assert safe_name(image_id) == expected


def test_workers_decoding_ahead_give_the_same_files(tiny_runs, sample_dicoms, tmp_path):
    """Decoding in worker processes and writing on a thread change nothing in the outputs:
    the CSV, errors.csv, the overlays and the findings are the same bytes, in the same order."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sample_dicoms:
        shutil.copy(path, folder / path.name)
    (folder / "broken.dcm").write_bytes(b"this is not a DICOM file")
    pipeline = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)
    paths = sorted(folder.glob("*.dcm"))
    outputs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}" / "submission.csv"
        summary = predict_files(pipeline, paths, out, batch_size=3, overlays=out.parent / "overlays",
                                findings=out.parent / "findings.csv", progress=False, workers=workers)
        assert summary.n_images == len(sample_dicoms) and len(summary.errors) == 1
        outputs[workers] = {p.relative_to(out.parent): p.read_bytes() for p in sorted(out.parent.rglob("*"))
                            if p.is_file()}
    assert outputs[0].keys() == outputs[2].keys() and len(outputs[0]) == len(sample_dicoms) + 3
    assert outputs[0] == outputs[2]
