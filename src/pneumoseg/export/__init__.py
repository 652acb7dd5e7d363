"""ONNX export of both trained models.

``export_onnx`` writes ``classifier.onnx``, ``segmenter.onnx`` and ``onnx.json`` into one
folder. Both graphs take ``image`` (N, 3, H, W) float32 with dynamic batch, height and width and
return ``logits`` ((N, 1) for the classifier, (N, 1, H, W) for the segmenter). ``onnx.json``
records what a consumer needs to feed them and read their output: the input size each model was
trained at, the normalisation (grey pixels replicated to 3 channels, /255, the run's mean/std),
tensor names, opset, the source run and checkpoint (with its SHA-256) and the post-processing
(the segmenter run's postprocess.json, else its config).

:mod:`pneumoseg.infer.onnx_backend` reads such a folder back into a pipeline whose models run
in ONNX Runtime; :mod:`pneumoseg.runs.onnx_manifest` reads and verifies ``onnx.json``.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.data.preprocess import Normalisation, to_model_input
from pneumoseg.errors import PneumosegError
from pneumoseg.export.quantize import check_precision, quantize_int8
from pneumoseg.infer.onnx_backend import onnx_forward, require
from pneumoseg.runs.onnx_manifest import FORMAT, FORMAT_VERSION, MANIFEST
from pneumoseg.runs.postprocess import load_postprocess
from pneumoseg.io import atomic_save, atomic_write_json, sealed, sha256_of

FILES = {"classifier": "classifier.onnx", "segmenter": "segmenter.onnx"}
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


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
                check_outputs: bool = True, precision: str = "fp32",
                calibration: list[tuple[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Export the classifier (best checkpoint) and the segmenter (``seg_checkpoint``) to ONNX.

    Every file is written atomically; ``onnx.json`` is removed first and written last, so a folder
    holding one is a complete, consistent export. Each graph passes ``onnx.checker``; with
    ``check_outputs`` (and onnxruntime installed) ONNX Runtime's output on a random image is also
    compared with PyTorch's. Returns the manifest written to ``onnx.json``.

    ``precision`` "int8": each model is quantised (:mod:`pneumoseg.export.quantize`) with the
    activation ranges calibrated on ``calibration`` films; its difference to PyTorch is recorded.
    "bf16": the fp32 graphs, recorded as meant to run in bf16 (OpenVINO only).
    """
    require("onnx")
    check_precision(precision)
    if precision == "int8" and not calibration:
        raise PneumosegError("--precision int8 calibrates on real films: give --calibrate DIR")
    quant = calibration if precision == "int8" else None
    from pneumoseg.runs.trained import load_stage_models

    segmenters = load_stage_models(seg_run, seg_checkpoint, "segmenter")
    classifiers = load_stage_models(cls_run, "best", "classifier")
    post_path = Path(seg_run) / "postprocess.json"
    post = load_postprocess(seg_run, segmenters[0].config.postprocess)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": opset,
        "precision": precision,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    for models in (classifiers, segmenters):
        kind = models[0].kind
        entry = _export_stage(models, out_dir, opset, check_outputs, quant)
        if kind == "classifier":
            entry["output"]["meaning"] = ("pneumothorax logit; probability = sigmoid(logit); the image is segmented "
                                          "when probability >= segmenter.postprocess.cls_threshold")
        else:
            entry["output"]["meaning"] = ("per-pixel logit at the input size; probability = sigmoid(logit), "
                                          "resized to 1024x1024 and post-processed as in segmenter.postprocess")
            entry["postprocess"] = post.model_dump(mode="json")
            entry["postprocess_source"] = str(post_path.resolve()) if post_path.is_file() else "run config"
        manifest[kind] = entry
    manifest = sealed(manifest)
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def _export_stage(models: list, out_dir: Path, opset: int, check_outputs: bool,
                  quant: list[tuple[str, np.ndarray]] | None) -> dict[str, Any]:
    """One stage's manifest entry: its model, or its folds as ``members`` (``<kind>-fold<K>.onnx``,
    averaged by the ONNX back-end) with the first fold's entry as the stage's description."""
    kind = models[0].kind
    if len(models) == 1:
        return _export_model(models[0], out_dir / FILES[kind], opset, check_outputs, quant)
    entries = [_export_model(m, out_dir / f"{kind}-fold{k}.onnx", opset, check_outputs, quant)
               for k, m in enumerate(models)]
    return {**entries[0], "members": [{key: e[key] for key in ("file", "sha256", "bytes", "source")} for e in entries]}


def _versions() -> dict[str, str]:
    from pneumoseg.runs.checkpoint import package_versions

    versions = package_versions()
    for name in ("onnx", "onnxruntime", "openvino"):
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


def _export_model(trained, path: Path, opset: int, check_outputs: bool,
                  quant: list[tuple[str, np.ndarray]] | None = None) -> dict[str, Any]:
    import onnx

    from pneumoseg.runs.trained import checkpoint_path
    from pneumoseg.runs.checkpoint import read_metadata

    model = trained.model.float().cpu().eval()
    size = trained.image_size
    extra: dict[str, Any] = {}

    def save(tmp: Path) -> None:
        fp32 = tmp.with_name(tmp.name + ".fp32") if quant else tmp
        try:
            torch_to_onnx(model, fp32, trained.kind, size, opset)
        except Exception as exc:  # the exporter raises many types; name the model and stop
            raise PneumosegError(f"{trained.run_dir}: ONNX export of the {trained.kind} failed "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        try:
            onnx.checker.check_model(str(fp32))
        except onnx.checker.ValidationError as exc:
            raise PneumosegError(f"{path.name}: exported graph fails onnx.checker ({str(exc).splitlines()[0]})") from exc
        if check_outputs:
            diff = _compare_with_torch(model, fp32, size, trained.normalisation)
            if diff is not None:
                extra["check"] = diff
        if quant:
            extra["quantization"] = quantize_int8(fp32, tmp, quant, size, trained.normalisation, INPUT_NAME)
            fp32.unlink()
            if check_outputs:  # recorded, not enforced: int8 differs by design; parity is judged on Dice
                extra["quantization"]["check"] = _compare_with_torch(model, tmp, size, trained.normalisation,
                                                                     enforce=False)

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


def _compare_with_torch(model, onnx_path: Path, size: int, normalisation: Normalisation, *,
                        enforce: bool = True) -> dict[str, Any] | None:
    """ONNX Runtime vs PyTorch on one random grey image at the model's size; raises when they
    differ (with ``enforce``)."""
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
    if enforce and (not np.isfinite(diff) or diff > tolerance):
        raise PneumosegError(f"{onnx_path.name}: ONNX Runtime output differs from PyTorch by {diff:.3g} "
                             f"(tolerance {tolerance:.3g}); the export is not faithful")
    return {"input": [1, 3, size, size], "max_abs_diff_vs_torch": diff}


# ---------------------------------------------------------------------------------- runtime


def render_export(manifest: dict[str, Any], out_dir: Path) -> str:
    """A few lines for the command line: what was written, from which checkpoint."""
    lines = []
    for kind in ("classifier", "segmenter"):
        entry = manifest[kind]
        source = entry["source"]
        quant = " int8 (calibrated on {} films)".format(entry["quantization"]["calibration"]["n_images"]) \
            if "quantization" in entry else ""
        folds = f" (+{len(entry['members']) - 1} more folds)" if entry.get("members") else ""
        lines.append(f"wrote {Path(out_dir) / entry['file']}{folds}:{quant} {entry['arch']}, {entry['image_size']} px "
                     f"input, {entry['bytes'] / 1e6:.1f} MB, from the {source['checkpoint']} checkpoint of {source['run']}")
    post = manifest["segmenter"]["postprocess"]
    lines.append(f"wrote {Path(out_dir) / MANIFEST}: opset {manifest['opset']}, post-processing "
                 + ", ".join(f"{k}={v}" for k, v in post.items()))
    if manifest["precision"] == "bf16":
        lines.append("precision bf16: the fp32 graphs, run in bf16 by `pneumoseg predict --backend openvino`")
    return "\n".join(lines)
