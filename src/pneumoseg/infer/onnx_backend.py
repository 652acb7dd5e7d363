"""ONNX Runtime as a back-end beside torch: an ``export-onnx`` folder read back into a
:class:`TwoStagePipeline`. Everything after the forward pass (resize, TTA, gating,
post-processing, RLE) is the code the PyTorch back-end uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.config import PostprocessConfig, updated_postprocess
from pneumoseg.data.preprocess import Normalisation
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.pipeline import EnsembleRunner, ModelRunner, TwoStagePipeline
from pneumoseg.runs.onnx_manifest import MANIFEST, OnnxModelEntry, load_manifest

CPU = ("CPUExecutionProvider",)


def require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PneumosegError(f"the ONNX back-end needs the {module} package: pip install 'pneumoseg[onnx]'") from None


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
                        post: PostprocessConfig | None = None,
                        providers: tuple[str, ...] | list[str] = CPU) -> TwoStagePipeline:
    """The two-stage pipeline from an ``export_onnx`` folder (image sizes and post-processing from onnx.json)."""
    onnx_dir = Path(onnx_dir)
    manifest = load_manifest(onnx_dir, need_classifier=not seg_only)
    seg = manifest["segmenter"]
    if post is None:
        stored = seg.get("postprocess", {})
        if not isinstance(stored, dict):
            raise PneumosegError(f"{onnx_dir / MANIFEST}: segmenter.postprocess is not an object")
        post = updated_postprocess(PostprocessConfig(), stored, f"{onnx_dir / MANIFEST} segmenter.postprocess")
    cls_runner = None if seg_only else _onnx_runner(onnx_dir, manifest["classifier"], providers, tta)
    seg_runner = _onnx_runner(onnx_dir, seg, providers, tta)
    return TwoStagePipeline(cls_runner, seg_runner, post)


def _onnx_runner(onnx_dir: Path, entry: dict[str, Any], providers: tuple[str, ...] | list[str],
                 tta: bool) -> ModelRunner | EnsembleRunner:
    """One manifest entry as a :class:`ModelRunner` (an :class:`EnsembleRunner` over its
    ``members`` for a fold ensemble), normalised as the manifest records."""
    where = str(Path(onnx_dir) / MANIFEST)
    normalisation = Normalisation.from_json(entry.get("normalisation"), where)
    runners = [ModelRunner(onnx_forward(Path(onnx_dir) / m.file, providers), int(entry["image_size"]),
                           normalisation, tta, f"onnx:{m.sha256}:{','.join(providers)}")
               for m in OnnxModelEntry.model_validate(entry).files()]
    return runners[0] if len(runners) == 1 else EnsembleRunner(runners)
