"""ONNX Runtime and OpenVINO as back-ends beside torch: an ``export-onnx`` folder read back
into a :class:`TwoStagePipeline`, its models run by either runtime. Everything after the forward
pass (resize, TTA, gating, post-processing, RLE) is the code the PyTorch back-end uses.

The folder's ``precision`` says how its models run: fp32 and int8 (QDQ) in either runtime; bf16
(fp32 files) only in OpenVINO, which runs them in bf16 on a CPU with native bf16 (ONNX Runtime's
CPU provider has no bf16 convolutions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pneumoseg.config import PostprocessConfig, updated_postprocess
from pneumoseg.data.preprocess import Normalisation
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.pipeline import EnsembleRunner, ModelRunner, TwoStagePipeline
from pneumoseg.runs.onnx_manifest import MANIFEST, OnnxModelEntry, load_manifest

CPU = ("CPUExecutionProvider",)
RUNTIMES = ("onnxruntime", "openvino")


def require(module: str, extra: str = "onnx"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PneumosegError(f"this back-end needs the {module} package: pip install 'pneumoseg[{extra}]'") from None


@dataclass
class OnnxForward:
    """A ``Forward`` (N,3,H,W float32 → logits) backed by an ONNX Runtime session."""

    session: Any = field(repr=False)
    input_name: str
    output_name: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnx_forward(path: Path, providers: tuple[str, ...] | list[str] = CPU) -> OnnxForward:
    """Open ``path`` in ONNX Runtime (all graph optimisations, default thread counts)."""
    ort = require("onnxruntime")
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise PneumosegError(f"onnxruntime here lacks {', '.join(missing)} (available: {', '.join(available)})")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime's own exception types derive from Exception only
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PneumosegError(f"{path}: cannot load the ONNX model ({message})") from None
    return OnnxForward(session, session.get_inputs()[0].name, session.get_outputs()[0].name)


@dataclass
class OpenVinoForward:
    """A ``Forward`` backed by an OpenVINO model compiled for the CPU."""

    compiled: Any = field(repr=False)

    def __post_init__(self) -> None:
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(result[self.compiled.output(0)])  # the request reuses its output buffer


OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
"""OpenVINO's inference precision for each export precision. int8 graphs run their quantised
operations in int8 and the rest in f32; left to itself, OpenVINO would run the f32 parts in bf16
on a CPU with AMX."""


def openvino_forward(path: Path, precision: str) -> OpenVinoForward:
    """Compile ``path`` with OpenVINO for the CPU, at the inference precision ``precision`` asks."""
    ov = require("openvino", "openvino")
    hint = OPENVINO_HINTS[precision]
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                              "PERFORMANCE_HINT": "LATENCY"})
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PneumosegError(f"{path}: OpenVINO cannot compile the model ({message})") from None
    used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what the CPU plugin will do
    if used != hint:
        raise PneumosegError(f"{path}: this CPU has no native bf16, so OpenVINO would run it in {used}; "
                             "use an fp32 or int8 export")
    return OpenVinoForward(compiled)


def onnx_providers(device: str) -> tuple[str, ...]:
    """Execution providers for ``--device``: cpu, cuda (CUDA, CPU fallback) or auto (CUDA if present)."""
    if device == "cpu":
        return CPU
    ort = require("onnxruntime")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return ("CUDAExecutionProvider", *CPU) if has_cuda else CPU
    if device.startswith("cuda"):
        if not has_cuda:
            raise PneumosegError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu, or use --device cpu)")
        return ("CUDAExecutionProvider", *CPU)
    raise PneumosegError(f"--device {device}: the ONNX back-end takes cpu, cuda or auto")


def build_onnx_pipeline(onnx_dir: Path, *, seg_only: bool = False, tta: bool = False,
                        post: PostprocessConfig | None = None, providers: tuple[str, ...] | list[str] = CPU,
                        runtime: str = "onnxruntime") -> TwoStagePipeline:
    """The two-stage pipeline from an ``export_onnx`` folder (image sizes and post-processing from
    onnx.json), run by ``runtime``: onnxruntime (with ``providers``) or openvino (CPU)."""
    onnx_dir = Path(onnx_dir)
    manifest = load_manifest(onnx_dir, need_classifier=not seg_only)
    forward = _forward_factory(onnx_dir, str(manifest.get("precision", "fp32")), runtime, providers)
    seg = manifest["segmenter"]
    if post is None:
        stored = seg.get("postprocess", {})
        if not isinstance(stored, dict):
            raise PneumosegError(f"{onnx_dir / MANIFEST}: segmenter.postprocess is not an object")
        post = updated_postprocess(PostprocessConfig(), stored, f"{onnx_dir / MANIFEST} segmenter.postprocess")
    cls_runner = None if seg_only else _onnx_runner(onnx_dir, manifest["classifier"], forward, tta)
    seg_runner = _onnx_runner(onnx_dir, seg, forward, tta)
    return TwoStagePipeline(cls_runner, seg_runner, post)


def _forward_factory(onnx_dir: Path, precision: str, runtime: str,
                     providers: tuple[str, ...] | list[str]) -> Callable[[Path], tuple[Any, str]]:
    """What opens one model file of the folder in ``runtime``: (its forward, what names the runtime in a source)."""
    if precision not in OPENVINO_HINTS:
        raise PneumosegError(f"{onnx_dir / MANIFEST}: precision {precision!r} is not fp32, bf16 or int8")
    if runtime not in RUNTIMES:
        raise PneumosegError(f"runtime must be {' or '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "openvino":
        return lambda path: (openvino_forward(path, precision), f"openvino-cpu-{precision}")
    if precision == "bf16":
        raise PneumosegError(f"{onnx_dir}: a bf16 export runs in OpenVINO (--backend openvino); ONNX Runtime's "
                             "CPU provider has no bf16 convolutions")
    return lambda path: (onnx_forward(path, providers), ",".join(providers))


def _onnx_runner(onnx_dir: Path, entry: dict[str, Any], forward: Callable[[Path], tuple[Any, str]],
                 tta: bool) -> ModelRunner | EnsembleRunner:
    """One manifest entry as a :class:`ModelRunner` (an :class:`EnsembleRunner` over its
    ``members`` for a fold ensemble), normalised as the manifest records."""
    where = str(Path(onnx_dir) / MANIFEST)
    normalisation = Normalisation.from_json(entry.get("normalisation"), where)
    runners = []
    for member in OnnxModelEntry.model_validate(entry).files():
        model, runtime = forward(Path(onnx_dir) / member.file)
        runners.append(ModelRunner(model, int(entry["image_size"]), normalisation, tta,
                                   f"onnx:{member.sha256}:{runtime}"))
    return runners[0] if len(runners) == 1 else EnsembleRunner(runners)
