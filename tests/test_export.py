"""ONNX export and the ONNX Runtime back-end: files, checker, dynamic axes, and agreement with
PyTorch on the real SIIM sample DICOMs (probabilities, submission rows, the CLI)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pneumoseg.cli import app
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import read_labels
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.runs.postprocess import load_postprocess
from pneumoseg.infer.predict import predict_files
from pneumoseg.runs.trained import load_trained

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pneumoseg.export import export_onnx  # noqa: E402
from pneumoseg.infer.onnx_backend import build_onnx_pipeline, onnx_forward  # noqa: E402
from pneumoseg.runs.onnx_manifest import load_manifest  # noqa: E402

runner = CliRunner()
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory) -> Path:
    """Both tiny models exported through the command line."""
    out = tmp_path_factory.mktemp("onnx") / "export"
    result = runner.invoke(app, ["export-onnx", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "classifier.onnx" in result.output and "segmenter.onnx" in result.output
    return out


@pytest.fixture(scope="module")
def sample_pixels(sample_dicoms) -> list[np.ndarray]:
    return [read_dicom(p).pixels for p in sample_dicoms]


def test_export_writes_both_models_and_a_manifest(exported, tiny_runs):
    assert sorted(p.name for p in exported.iterdir()) == ["classifier.onnx", "onnx.json", "segmenter.onnx"]
    manifest = json.loads((exported / "onnx.json").read_text())
    seg_cfg = load_trained(tiny_runs.seg, "auto").config
    for kind, run, checkpoint in (("classifier", tiny_runs.cls, "best"), ("segmenter", tiny_runs.seg, "swa")):
        entry = manifest[kind]
        assert entry["file"] == f"{kind}.onnx" and entry["image_size"] == 64 and entry["opset"] == 17
        assert entry["input"]["name"] == "image" and entry["output"]["name"] == "logits"
        assert entry["input"]["shape"] == ["batch", 3, "height", "width"]
        norm, recorded = entry["normalisation"], json.loads((run / "run.json").read_text())["normalisation"]
        # timm's pretrained_cfg of test_resnet (the tiny models' backbone) says mean = std = 0.5
        assert norm["grey_to_channels"] == 3 and norm["mean"] == recorded["mean"] == [0.5] * 3
        assert norm["std"] == recorded["std"] == [0.5] * 3
        assert entry["source"]["run"] == str(run.resolve()) and entry["source"]["checkpoint"] == checkpoint
        assert entry["source"]["weights_sha256"] and entry["check"]["max_abs_diff_vs_torch"] < TOLERANCE
    assert manifest["segmenter"]["postprocess"] == load_postprocess(tiny_runs.seg, seg_cfg.postprocess).model_dump()
    assert manifest["segmenter"]["input"]["size_multiple"] == 32


def test_exported_graphs_pass_the_checker_with_dynamic_axes(exported):
    for name in ("classifier.onnx", "segmenter.onnx"):
        onnx.checker.check_model(str(exported / name))
        model = onnx.load(str(exported / name))
        (inp,) = model.graph.input
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 64, 64), (2, 96, 96), (1, 64, 96)])
def test_dynamic_batch_and_size_match_torch(exported, tiny_runs, shape):
    n, h, w = shape
    x = np.random.default_rng(0).standard_normal((n, 3, h, w)).astype(np.float32)
    for kind, run, expected_shape in (("classifier", tiny_runs.cls, (n, 1)), ("segmenter", tiny_runs.seg, (n, 1, h, w))):
        model = load_trained(run, "best" if kind == "classifier" else "auto").model
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = onnx_forward(exported / f"{kind}.onnx")(x)
        assert got.shape == expected_shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def _gate_splitting_threshold(probs: np.ndarray) -> float:
    """A classifier threshold halfway across the widest gap between the images' probabilities,
    so some images are segmented and some are not, far from any probability."""
    values = np.sort(probs)
    gaps = np.diff(values)
    i = int(np.argmax(gaps))
    assert gaps[i] > 10 * TOLERANCE  # the backends differ by at most TOLERANCE: no image can cross it
    return float((values[i] + values[i + 1]) / 2)


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "hflip"])
def test_backends_agree_on_the_real_dicoms(exported, tiny_runs, sample_dicoms, sample_pixels, tmp_path, tta):
    torch_pipe = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg, tta=tta)
    onnx_pipe = build_onnx_pipeline(exported, tta=tta)
    assert onnx_pipe.post == torch_pipe.post
    assert onnx_pipe.classifier.image_size == torch_pipe.classifier.image_size == 64

    cls_torch = torch_pipe.classifier.probabilities(sample_pixels)
    cls_onnx = onnx_pipe.classifier.probabilities(sample_pixels)
    np.testing.assert_allclose(cls_onnx, cls_torch, rtol=0, atol=TOLERANCE)
    seg_torch = torch_pipe.segmenter.probabilities(sample_pixels)
    seg_onnx = onnx_pipe.segmenter.probabilities(sample_pixels)
    assert seg_onnx.shape == seg_torch.shape == (11, 64, 64)
    np.testing.assert_allclose(seg_onnx, seg_torch, rtol=0, atol=TOLERANCE)

    # the run's own post-processing, then a gate that splits the sample (every gated image all-positive)
    for name, update in (("run", {}), ("split", {"cls_threshold": _gate_splitting_threshold(cls_torch),
                                                 "pixel_threshold": 0.0, "min_area": 0})):
        rows = {}
        for backend, pipe in (("torch", torch_pipe), ("onnx", onnx_pipe)):
            pipe.post = pipe.post.model_copy(update=update)
            out = tmp_path / f"{name}-{backend}.csv"
            predict_files(pipe, sample_dicoms, out, progress=False)
            rows[backend] = out.read_text()
        assert rows["onnx"] == rows["torch"]
        assert len(rows["onnx"].splitlines()) == 12
    encoded = [r.split(",")[1] for r in rows["onnx"].splitlines()[1:]]
    assert "-1" in encoded and any(e != "-1" for e in encoded)  # the split gate really split


def test_cli_onnx_backend_writes_the_same_csv(exported, tiny_runs, sample_dir, tmp_path):
    probs = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg).classifier.probabilities(
        [read_dicom(p).pixels for p in sorted((sample_dir / "dicom").glob("*.dcm"))])
    common = ["--images", str(sample_dir / "dicom"), "--tta", "hflip", "--min-area", "0", "--pixel-threshold=0",
              "--cls-threshold", str(_gate_splitting_threshold(probs))]
    torch_out, onnx_out = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    result = runner.invoke(app, ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--out", str(torch_out), *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "--backend", "onnx", "--onnx", str(exported), "--out", str(onnx_out),
                                 *common])
    assert result.exit_code == 0, result.output
    assert onnx_out.read_text() == torch_out.read_text()
    assert len(read_labels(onnx_out)) == 11


def test_missing_onnx_folder_is_a_one_line_error(sample_dir, tmp_path, monkeypatch, capsys):
    from pneumoseg.cli import main

    monkeypatch.setattr(sys, "argv", ["pneumoseg", "predict", "--backend", "onnx", "--onnx", str(tmp_path / "nowhere"),
                                      "--images", str(sample_dir / "dicom"), "--out", str(tmp_path / "out.csv")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "nowhere" in lines[0] and "export-onnx" in lines[0], lines
    assert not (tmp_path / "out.csv").exists()


def test_incomplete_folders_are_refused(exported, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PneumosegError, match="no onnx.json"):
        build_onnx_pipeline(empty)
    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "classifier.onnx").unlink()
    with pytest.raises(PneumosegError, match="classifier.onnx is missing"):
        build_onnx_pipeline(partial)
    pipeline = build_onnx_pipeline(partial, seg_only=True)  # segmentation alone needs no classifier
    assert pipeline.classifier is None and pipeline.segmenter.image_size == 64
    (partial / "onnx.json").write_text("{not json")
    with pytest.raises(PneumosegError, match="unreadable"):
        load_manifest(partial)


def test_a_changed_model_file_or_manifest_is_refused(exported, tmp_path):
    """onnx.json records each model's SHA-256 and carries its own; a change to either is refused."""
    import json

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    model = copy / "segmenter.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(PneumosegError, match="segmenter.onnx: its SHA-256 differs from the one in onnx.json"):
        build_onnx_pipeline(copy, seg_only=True)
    shutil.copy(exported / "segmenter.onnx", model)
    manifest = json.loads((copy / "onnx.json").read_text())
    manifest["segmenter"]["image_size"] = 96
    (copy / "onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(PneumosegError, match="onnx.json: content_sha256 does not match"):
        build_onnx_pipeline(copy, seg_only=True)


def test_backend_options_are_checked(exported, tiny_runs, sample_dir, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    base = ["predict", "--images", str(sample_dir / "dicom"), "--out", str(tmp_path / "o.csv")]
    for args, message in ((["--backend", "onnx"], "--onnx"),
                          (["--backend", "onnx", "--onnx", str(exported), "--seg", str(tiny_runs.seg)], "--cls/--seg"),
                          (["--backend", "tf", "--seg", str(tiny_runs.seg), "--seg-only"], "torch, onnx or openvino"),
                          (["--cls", str(tiny_runs.cls)], "--seg")):
        code, _, err = run_main(monkeypatch, capsys, *base, *args)
        assert_one_line_error(code, err, message)


def test_a_failed_export_leaves_the_previous_one(exported, tiny_runs, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(exported, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(PneumosegError, match="not found"):
        export_onnx(tmp_path / "no-such-run", tiny_runs.seg, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_siim_preset_architectures_export(tmp_path):
    """legacy_xception and FPN-InceptionResNetV2 (random weights) at 128 px: export, check, agree."""
    from pneumoseg.config import load_config
    from pneumoseg.models.classifier import build_classifier
    from pneumoseg.models.segmenter import build_segmenter
    from pneumoseg.runs.checkpoint import save_model

    cfg = load_config("siim", ["classifier.image_size=128", "segmenter.image_size=128", "runtime.device=cpu"])
    runs = {}
    for kind, model in (("classifier", build_classifier(cfg.classifier)), ("segmenter", build_segmenter(cfg.segmenter))):
        runs[kind] = tmp_path / kind
        save_model(runs[kind] / "best.safetensors", model.eval(), {"kind": kind, "epoch": 0,
                                                                  "config": cfg.model_dump(mode="json")})
    manifest = export_onnx(runs["classifier"], runs["segmenter"], tmp_path / "onnx")
    assert manifest["classifier"]["arch"] == "legacy_xception"
    assert manifest["segmenter"]["arch"] == "FPN/inceptionresnetv2"
    x = np.random.default_rng(0).standard_normal((2, 3, 160, 128)).astype(np.float32)
    for kind, run in runs.items():
        model = load_trained(run, "best").model
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = onnx_forward(tmp_path / "onnx" / f"{kind}.onnx")(x)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_int8_export_is_quantised_calibrated_on_named_films_and_runs(tiny_runs, sample_dir, sample_dicoms, tmp_path):
    out = tmp_path / "int8"
    result = runner.invoke(app, ["export-onnx", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--out",
                                 str(out), "--precision", "int8", "--calibrate", str(sample_dir / "dicom"),
                                 "--calibration-n", "4"])
    assert result.exit_code == 0, result.output
    assert "int8 (calibrated on 4 films)" in result.output
    manifest = load_manifest(out)
    assert manifest["precision"] == "int8"
    expected_ids = [read_dicom(p).image_id for p in sorted(sample_dicoms)[:4]]
    for kind in ("classifier", "segmenter"):
        quant = manifest[kind]["quantization"]
        assert quant["format"] == "QDQ" and quant["calibration"]["image_ids"] == expected_ids
        ops = {node.op_type for node in onnx.load(str(out / manifest[kind]["file"])).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert quant["check"]["max_abs_diff_vs_torch"] >= 0
    assert not list(out.glob("*.fp32"))  # the intermediate fp32 graph is not left behind
    pixels = [read_dicom(p).pixels for p in sample_dicoms[:3]]
    int8 = build_onnx_pipeline(out).predict(pixels)
    fp32 = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg).predict(pixels)
    assert len(int8) == 3 and all(0 <= p.probability <= 1 for p in int8)
    assert max(abs(a.probability - b.probability) for a, b in zip(int8, fp32)) < 0.2


def test_precision_options_are_one_line_errors(tiny_runs, sample_dir, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    base = ["export-onnx", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg), "--out", str(tmp_path / "x")]
    for extra, needle in ((["--precision", "int8"], "--calibrate"),
                          (["--calibrate", str(sample_dir)], "for --precision int8"),
                          (["--precision", "fp16"], "fp32, bf16 or int8")):
        code, _, err = run_main(monkeypatch, capsys, *base, *extra)
        assert_one_line_error(code, err, needle)
