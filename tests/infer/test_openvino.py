"""The OpenVINO back-end: an export-onnx folder run by OpenVINO on the CPU, fp32 equal to ONNX
Runtime, bf16 (OpenVINO only) and int8 close to it, on the real SIIM sample DICOMs.

OpenVINO runs in a fresh process here, never in pytest's own. In one process where torch's
DataLoader workers had run (they install a SIGCHLD handler), OpenVINO's inference followed by
any child process exiting crashed the interpreter with SIGSEGV: a /tmp script did so in 5 of 6
runs, and the whole suite once (docs/experiments.md, E10). A ``pneumoseg predict`` process, which
starts no DataLoader, is what users run, and the CLI test runs exactly that.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pneumoseg.errors import PneumosegError

pytest.importorskip("onnxruntime")
if importlib.util.find_spec("openvino") is None:  # found, not imported: it is never loaded in this process
    pytest.skip("openvino is not installed", allow_module_level=True)

from pneumoseg.export import export_onnx  # noqa: E402
from pneumoseg.export.quantize import calibration_films  # noqa: E402


def _probabilities(folder: Path, runtime: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, str]:
    """(classifier, segmenter probabilities, segmenter source) of ``folder`` run by ``runtime``."""
    from pneumoseg.data.dicom import read_dicom
    from pneumoseg.infer.onnx_backend import build_onnx_pipeline

    pipeline = build_onnx_pipeline(folder, runtime=runtime)
    pixels = [read_dicom(p).pixels for p in paths]
    return pipeline.classifier.probabilities(pixels), pipeline.segmenter.probabilities(pixels), pipeline.segmenter.source


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _refusal_without_bf16(folder: Path) -> str:
    """What building a bf16 folder says when OpenVINO runs f32, as on a CPU without native bf16."""
    import openvino as ov

    from pneumoseg.infer.onnx_backend import build_onnx_pipeline

    real = ov.Core.compile_model
    ov.Core.compile_model = lambda self, model, device, config: real(
        self, model, device, {**config, "INFERENCE_PRECISION_HINT": "f32"})
    try:
        build_onnx_pipeline(folder, runtime="openvino")
    except PneumosegError as exc:
        return str(exc)
    return "not refused"


@pytest.fixture(scope="module")
def fresh():
    """Run a function of this module in one fresh (spawned) process, kept for the module."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result(timeout=300)


@pytest.fixture(scope="module")
def exports(tiny_runs, sample_dicoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("openvino")
    films = calibration_films(sample_dicoms, 4)
    for precision in ("fp32", "bf16", "int8"):
        export_onnx(tiny_runs.cls, tiny_runs.seg, root / precision, precision=precision,
                    calibration=films if precision == "int8" else None)
    return root


def test_fp32_in_openvino_equals_onnx_runtime(exports, sample_dicoms, fresh):
    *reference, _ = fresh(_probabilities, exports / "fp32", "onnxruntime", sample_dicoms)
    *got, source = fresh(_probabilities, exports / "fp32", "openvino", sample_dicoms)
    assert "openvino-cpu-fp32" in source
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-4)


def test_bf16_runs_in_openvino_close_to_fp32_and_is_refused_by_onnx_runtime(exports, sample_dicoms, fresh):
    from pneumoseg.runs.onnx_manifest import load_manifest

    if not fresh(_cpu_has_bf16):
        pytest.skip("this CPU has no native bf16")
    assert load_manifest(exports / "bf16")["precision"] == "bf16"
    *reference, _ = fresh(_probabilities, exports / "fp32", "onnxruntime", sample_dicoms)
    *got, _ = fresh(_probabilities, exports / "bf16", "openvino", sample_dicoms)
    for g, r in zip(got, reference):
        assert np.abs(g - r).max() < 0.02 and not np.array_equal(g, r)  # bf16 really ran: close, not equal
    with pytest.raises(PneumosegError, match="runs in OpenVINO"):
        fresh(_probabilities, exports / "bf16", "onnxruntime", sample_dicoms)


def test_int8_runs_in_openvino_as_in_onnx_runtime(exports, sample_dicoms, fresh):
    *ort_int8, _ = fresh(_probabilities, exports / "int8", "onnxruntime", sample_dicoms)
    *ov_int8, _ = fresh(_probabilities, exports / "int8", "openvino", sample_dicoms)
    *fp32, _ = fresh(_probabilities, exports / "fp32", "onnxruntime", sample_dicoms)
    for a, b, f in zip(ov_int8, ort_int8, fp32):
        assert np.abs(a - b).max() < 0.05 and np.abs(a - f).max() < 0.2


def test_a_cpu_without_bf16_is_a_one_line_refusal(exports, fresh):
    message = fresh(_refusal_without_bf16, exports / "bf16")
    assert "no native bf16" in message and "use an fp32 or int8 export" in message


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pneumoseg.cli", "predict", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_openvino_backend(exports, sample_dir, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    base = ["--images", str(sample_dir / "dicom")]
    out = {}
    for backend in ("onnx", "openvino"):
        out[backend] = tmp_path / f"{backend}.csv"
        proc = _predict(*base, "--backend", backend, "--onnx", str(exports / "fp32"), "--out", str(out[backend]),
                        "--workers", "1")  # decoding processes beside OpenVINO
        assert proc.returncode == 0, proc.stderr
    assert out["openvino"].read_text() == out["onnx"].read_text()
    for args, needle in ((["--backend", "openvino"], "--backend openvino needs --onnx"),
                         (["--backend", "openvino", "--onnx", str(exports / "fp32"), "--device", "cuda"], "on the CPU"),
                         (["--backend", "onnx", "--onnx", str(exports / "bf16")], "runs in OpenVINO")):
        # refused before OpenVINO runs anything, so in this process
        code, _, err = run_main(monkeypatch, capsys, "predict", *base, *args, "--out", str(tmp_path / "x.csv"))
        assert_one_line_error(code, err, needle)
