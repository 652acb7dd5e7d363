"""ONNX export of both trained models, and an ONNX Runtime back-end for the same pipeline.

``export_onnx`` writes ``classifier.onnx``, ``segmenter.onnx`` and ``onnx.json`` into one
folder. Both graphs take ``image`` (N, 3, H, W) float32 with dynamic batch, height and width and
return ``logits`` ((N, 1) for the classifier, (N, 1, H, W) for the segmenter). ``onnx.json``
records what a consumer needs to feed them and read their output: the input size each model was
trained at, the normalisation (grey pixels replicated to 3 channels, /255, the run's mean/std),
tensor names, opset, the source run and checkpoint (with its SHA-256) and the post-processing
(the segmenter run's postprocess.json, else its config).

``build_onnx_pipeline`` reads such a folder back into a :class:`TwoStagePipeline` whose models
run in ONNX Runtime; everything after the forward pass (resize, TTA, gating, post-processing,
RLE) is the code the PyTorch back-end uses.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.config import PostprocessConfig, updated_postprocess
from pneumoseg.data.preprocess import Normalisation, to_model_input
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.pipeline import ModelRunner, TwoStagePipeline, load_postprocess
from pneumoseg.io import atomic_save, atomic_write_json, check_seal, sealed, sha256_of

MANIFEST = "onnx.json"
FILES = {"classifier": "classifier.onnx", "segmenter": "segmenter.onnx"}
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
FORMAT = "pneumoseg-onnx"
FORMAT_VERSION = 2  # 2: onnx.json carries its own checksum, verified with each model file's
CPU = ("CPUExecutionProvider",)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PneumosegError(f"the ONNX back-end needs the {module} package: pip install 'pneumoseg[onnx]'") from None


def _preprocessing(image_size: int, normalisation: Normalisation) -> dict[str, Any]:
    return {
        "resize": f"to {image_size}x{image_size} (area interpolation when shrinking, else bilinear), rounded to uint8",
        "grey_to_channels": 3,
        "scale": 1 / 255,
        **normalisation.to_json(),
        "formula": "x[c] = (grey_uint8 / 255 - mean[c]) / std[c] for c in 0..2",
        "dtype": "float32",
        "layout": "NCHW",
    }


# ----------------------------------------------------------------------------------- export


def export_onnx(cls_run: Path, seg_run: Path, out_dir: Path, *, seg_checkpoint: str = "auto", opset: int = 17,
                check_outputs: bool = True) -> dict[str, Any]:
    """Export the classifier (best checkpoint) and the segmenter (``seg_checkpoint``) to ONNX.

    Every file is written atomically; ``onnx.json`` is removed first and written last, so a folder
    holding one is a complete, consistent export. Each graph passes ``onnx.checker``; with
    ``check_outputs`` (and onnxruntime installed) ONNX Runtime's output on a random image is also
    compared with PyTorch's. Returns the manifest written to ``onnx.json``.
    """
    from pneumoseg.models.trained import load_trained

    _require("onnx")
    segmenter = load_trained(seg_run, seg_checkpoint, expect="segmenter")
    classifier = load_trained(cls_run, "best", expect="classifier")
    post_path = Path(seg_run) / "postprocess.json"
    post = load_postprocess(seg_run, segmenter.config.postprocess)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": opset,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    for trained in (classifier, segmenter):
        entry = _export_model(trained, out_dir / FILES[trained.kind], opset, check_outputs)
        if trained.kind == "classifier":
            entry["output"]["meaning"] = ("pneumothorax logit; probability = sigmoid(logit); the image is segmented "
                                          "when probability >= segmenter.postprocess.cls_threshold")
        else:
            entry["output"]["meaning"] = ("per-pixel logit at the input size; probability = sigmoid(logit), "
                                          "resized to 1024x1024 and post-processed as in segmenter.postprocess")
            entry["postprocess"] = post.model_dump(mode="json")
            entry["postprocess_source"] = str(post_path.resolve()) if post_path.is_file() else "run config"
        manifest[trained.kind] = entry
    manifest = sealed(manifest)
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def _versions() -> dict[str, str]:
    from pneumoseg.train.checkpoint import package_versions

    versions = package_versions()
    for name in ("onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def torch_to_onnx(model, path: Path, kind: str, size: int, opset: int = 17) -> None:
    """``torch.onnx.export`` with dynamic batch, height and width (``kind``: classifier or segmenter).

    Traced at batch 2 so nothing specialises on a batch of one; the TorchScript exporter is used
    because the dynamo one needs onnxscript.
    """
    import torch

    spatial = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {INPUT_NAME: spatial, OUTPUT_NAME: {0: "batch"} if kind == "classifier" else spatial}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                          do_constant_folding=True)


def _export_model(trained, path: Path, opset: int, check_outputs: bool) -> dict[str, Any]:
    import onnx

    from pneumoseg.models.trained import checkpoint_path
    from pneumoseg.train.checkpoint import read_metadata

    model = trained.model.float().cpu().eval()
    size = trained.image_size
    extra: dict[str, Any] = {}

    def save(tmp: Path) -> None:
        try:
            torch_to_onnx(model, tmp, trained.kind, size, opset)
        except Exception as exc:  # the exporter raises many types; name the model and stop
            raise PneumosegError(f"{trained.run_dir}: ONNX export of the {trained.kind} failed "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise PneumosegError(f"{path.name}: exported graph fails onnx.checker ({str(exc).splitlines()[0]})") from exc
        if check_outputs:
            diff = _compare_with_torch(model, tmp, size, trained.normalisation)
            if diff is not None:
                extra["check"] = diff

    atomic_save(path, save)
    weights = checkpoint_path(trained.run_dir, trained.checkpoint)
    source_meta = read_metadata(weights) or {}  # verified when the model was loaded
    stage = trained.config.classifier if trained.kind == "classifier" else trained.config.segmenter
    arch = stage.arch if trained.kind == "classifier" else f"{stage.arch}/{stage.encoder}"
    output_shape: list[str | int] = ["batch", 1] if trained.kind == "classifier" else ["batch", 1, "height", "width"]
    input_spec: dict[str, Any] = {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"], "dtype": "float32"}
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    if trained.kind == "segmenter" and isinstance(stride, int):
        input_spec["size_multiple"] = stride  # H and W must be multiples of the encoder's output stride
    return {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "kind": trained.kind,
        "arch": arch,
        "opset": opset,
        "image_size": size,
        "input": input_spec,
        "output": {"name": OUTPUT_NAME, "shape": output_shape, "dtype": "float32", "activation": "sigmoid"},
        "normalisation": _preprocessing(size, trained.normalisation),
        "source": {
            "run": str(Path(trained.run_dir).resolve()),
            "checkpoint": trained.checkpoint,
            "weights": weights.name,
            "weights_sha256": sha256_of(weights),
            "epoch": source_meta.get("epoch"),
        },
        **extra,
    }


def _compare_with_torch(model, onnx_path: Path, size: int, normalisation: Normalisation) -> dict[str, Any] | None:
    """ONNX Runtime vs PyTorch on one random grey image at the model's size; raises when they differ."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    import torch

    grey = np.random.default_rng(0).integers(0, 256, (1, size, size), dtype=np.uint8)
    x = to_model_input(grey, normalisation)
    with torch.no_grad():
        expected = model(x).float().numpy()
    got = onnx_forward(onnx_path)(x.numpy())
    diff = float(np.abs(got - expected).max())
    tolerance = 1e-3 * max(1.0, float(np.abs(expected).max()))
    if not np.isfinite(diff) or diff > tolerance:
        raise PneumosegError(f"{onnx_path.name}: ONNX Runtime output differs from PyTorch by {diff:.3g} "
                             f"(tolerance {tolerance:.3g}); the export is not faithful")
    return {"input": [1, 3, size, size], "max_abs_diff_vs_torch": diff}


# ---------------------------------------------------------------------------------- runtime


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
    ort = _require("onnxruntime")
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
    ort = _require("onnxruntime")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return ("CUDAExecutionProvider", *CPU) if has_cuda else CPU
    if device.startswith("cuda"):
        if not has_cuda:
            raise PneumosegError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu, or use --device cpu)")
        return ("CUDAExecutionProvider", *CPU)
    raise PneumosegError(f"--device {device}: the ONNX back-end takes cpu, cuda or auto")


def load_manifest(onnx_dir: Path, *, need_classifier: bool = True) -> dict[str, Any]:
    """Read and check ``onnx_dir/onnx.json`` and that the model files it names are present."""
    onnx_dir = Path(onnx_dir)
    path = onnx_dir / MANIFEST
    if not onnx_dir.is_dir():
        raise PneumosegError(f"{onnx_dir}: ONNX folder not found (create it with `pneumoseg export-onnx`)")
    if not path.is_file():
        raise PneumosegError(f"{onnx_dir}: no {MANIFEST}; not a finished `pneumoseg export-onnx` folder")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumosegError(f"{path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PneumosegError(f"{path}: not a pneumoseg ONNX manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PneumosegError(f"{path}: format version {manifest.get('format_version')} is not supported "
                             f"(this pneumoseg reads {FORMAT_VERSION}); export again")
    check_seal(manifest, str(path))
    for kind in ("classifier", "segmenter") if need_classifier else ("segmenter",):
        entry = manifest.get(kind)
        if not isinstance(entry, dict) or "file" not in entry or "image_size" not in entry:
            raise PneumosegError(f"{path}: no {kind} entry")
        model_file = onnx_dir / entry["file"]
        if not model_file.is_file():
            raise PneumosegError(f"{onnx_dir}: {entry['file']} is missing (named in {MANIFEST})")
        if sha256_of(model_file) != entry.get("sha256"):
            raise PneumosegError(f"{model_file}: its SHA-256 differs from the one in {MANIFEST}; the file was "
                                 "altered, damaged or replaced (export again)")
    return manifest


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
                 tta: bool) -> ModelRunner:
    """One manifest entry as a :class:`ModelRunner`, normalised as the manifest records."""
    where = str(Path(onnx_dir) / MANIFEST)
    normalisation = Normalisation.from_json(entry.get("normalisation"), where)
    return ModelRunner(onnx_forward(Path(onnx_dir) / entry["file"], providers), int(entry["image_size"]),
                       normalisation, tta, f"onnx:{entry['sha256']}:{','.join(providers)}")


def render_export(manifest: dict[str, Any], out_dir: Path) -> str:
    """A few lines for the command line: what was written, from which checkpoint."""
    lines = []
    for kind in ("classifier", "segmenter"):
        entry = manifest[kind]
        source = entry["source"]
        lines.append(f"wrote {Path(out_dir) / entry['file']}: {entry['arch']}, {entry['image_size']} px input, "
                     f"{entry['bytes'] / 1e6:.1f} MB, from the {source['checkpoint']} checkpoint of {source['run']}")
    post = manifest["segmenter"]["postprocess"]
    lines.append(f"wrote {Path(out_dir) / MANIFEST}: opset {manifest['opset']}, post-processing "
                 + ", ".join(f"{k}={v}" for k, v in post.items()))
    return "\n".join(lines)
