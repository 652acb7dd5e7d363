"""The OpenVINO back-end: an export-onnx folder run by OpenVINO on the CPU, fp32 equal to ONNX
Runtime, bf16 (OpenVINO only) and int8 close to it, on the real SIIM sample DICOMs."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoseg.data.dicom import read_dicom
from pneumoseg.errors import PneumosegError

pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

from pneumoseg.export import export_onnx  # noqa: E402
from pneumoseg.export.quantize import calibration_films  # noqa: E402
from pneumoseg.infer.onnx_backend import build_onnx_pipeline  # noqa: E402
from pneumoseg.runs.onnx_manifest import load_manifest  # noqa: E402

CPU_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def exports(tiny_runs, sample_dicoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("openvino")
    films = calibration_films(sample_dicoms, 4)
    for precision in ("fp32", "bf16", "int8"):
        export_onnx(tiny_runs.cls, tiny_runs.seg, root / precision, precision=precision,
                    calibration=films if precision == "int8" else None)
    return root


@pytest.fixture(scope="module")
def pixels(sample_dicoms):
    return [read_dicom(p).pixels for p in sample_dicoms]


def _probabilities(pipeline, pixels):
    return pipeline.classifier.probabilities(pixels), pipeline.segmenter.probabilities(pixels)


def test_fp32_in_openvino_equals_onnx_runtime(exports, pixels):
    reference = build_onnx_pipeline(exports / "fp32")
    pipeline = build_onnx_pipeline(exports / "fp32", runtime="openvino")
    assert pipeline.post == reference.post and "openvino-cpu-fp32" in pipeline.segmenter.source
    for got, expected in zip(_probabilities(pipeline, pixels), _probabilities(reference, pixels)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no native bf16")
def test_bf16_runs_in_openvino_close_to_fp32_and_is_refused_by_onnx_runtime(exports, pixels):
    assert load_manifest(exports / "bf16")["precision"] == "bf16"
    reference = _probabilities(build_onnx_pipeline(exports / "fp32"), pixels)
    got = _probabilities(build_onnx_pipeline(exports / "bf16", runtime="openvino"), pixels)
    for g, r in zip(got, reference):
        assert np.abs(g - r).max() < 0.02 and not np.array_equal(g, r)  # bf16 really ran: close, not equal
    with pytest.raises(PneumosegError, match="runs in OpenVINO"):
        build_onnx_pipeline(exports / "bf16")


def test_int8_runs_in_openvino_as_in_onnx_runtime(exports, pixels):
    ort_int8 = _probabilities(build_onnx_pipeline(exports / "int8"), pixels)
    ov_int8 = _probabilities(build_onnx_pipeline(exports / "int8", runtime="openvino"), pixels)
    fp32 = _probabilities(build_onnx_pipeline(exports / "fp32"), pixels)
    for a, b, f in zip(ov_int8, ort_int8, fp32):
        assert np.abs(a - b).max() < 0.05 and np.abs(a - f).max() < 0.2


def test_a_cpu_without_bf16_is_a_one_line_refusal(exports, monkeypatch):
    real = ov.Core.compile_model

    def without_bf16(self, model, device, config):
        return real(self, model, device, {**config, "INFERENCE_PRECISION_HINT": "f32"})  # what such a CPU does

    monkeypatch.setattr(ov.Core, "compile_model", without_bf16)
    with pytest.raises(PneumosegError, match="no native bf16.*use an fp32 or int8 export"):
        build_onnx_pipeline(exports / "bf16", runtime="openvino")


def test_cli_openvino_backend(exports, sample_dir, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    base = ["predict", "--images", str(sample_dir / "dicom")]
    out = {}
    for backend in ("onnx", "openvino"):
        out[backend] = tmp_path / f"{backend}.csv"
        code, _, err = run_main(monkeypatch, capsys, *base, "--backend", backend, "--onnx", str(exports / "fp32"),
                                "--out", str(out[backend]), "--workers", "1")  # decoding processes beside OpenVINO
        assert code == 0, err
    assert out["openvino"].read_text() == out["onnx"].read_text()
    for args, needle in ((["--backend", "openvino"], "--backend openvino needs --onnx"),
                         (["--backend", "openvino", "--onnx", str(exports / "fp32"), "--device", "cuda"], "on the CPU"),
                         (["--backend", "onnx", "--onnx", str(exports / "bf16")], "runs in OpenVINO")):
        code, _, err = run_main(monkeypatch, capsys, *base, *args, "--out", str(tmp_path / "x.csv"))
        assert_one_line_error(code, err, needle)
