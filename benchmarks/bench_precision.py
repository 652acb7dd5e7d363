"""Reduced precision against fp32, in ONNX Runtime and OpenVINO, and predict with decoding workers.

- Speed: the recipe's two-stage pipeline at 1024² (random weights, the classifier gating 23% of
  images through, as in ``bench_inference``), in one run: ONNX Runtime fp32 and int8 (static QDQ,
  calibrated on the SIIM sample films), OpenVINO fp32, bf16 and int8 (the same int8 graphs).
- Parity: the demo's trained models (``demo-output/``, or ``$PNEUMOSEG_DEMO_OUTPUT``; run
  ``make demo`` first) exported fp32, bf16 and int8 (calibrated on 96 validation films),
  predicting the demo's held-out test split, each reduced-precision system against ONNX Runtime
  fp32: the mean Dice between the two submissions, the share of images with the same classifier
  decision, and each one's SIIM Dice against the truth.
- ``pneumoseg predict`` images/s with 0, 1 and 2 decoding workers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_inference import POSITIVE_RATE, Gate, export_model
from benchmarks.timing import measure, row, target
from pneumoseg.config import load_config
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.index import find_dicoms
from pneumoseg.data.preprocess import IMAGENET
from pneumoseg.export.quantize import calibration_films, quantize_int8
from pneumoseg.infer.onnx_backend import onnx_forward, openvino_forward
from pneumoseg.infer.pipeline import ModelRunner, TwoStagePipeline
from pneumoseg.models import build_classifier, build_segmenter

SPEED_TARGET_S = 0.6
CALIBRATION_FILMS = 96  # export-onnx --calibration-n default
REFERENCE = ("onnxruntime", "fp32")
REDUCED = [("onnxruntime", "int8"), ("openvino", "bf16"), ("openvino", "int8")]


def _systems() -> list[tuple[str, str]]:
    """(runtime, precision) pairs measured here: OpenVINO's only where it is installed."""
    systems = [REFERENCE, ("onnxruntime", "int8")]
    if importlib.util.find_spec("openvino") is not None:
        systems += [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
    return systems


def _name(system: tuple[str, str]) -> str:
    return {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}[system[0]] + f" {system[1]}"


def _forward(system: tuple[str, str], files: dict[str, Path]):
    runtime, precision = system
    path = files["int8" if precision == "int8" else "fp32"]
    return onnx_forward(path) if runtime == "onnxruntime" else openvino_forward(path, precision)


def _pipeline_cost(forwards: dict[str, Any], size: int, post, image: np.ndarray, reps: int) -> float:
    """Seconds per image at the SIIM positive rate (a negative and a positive image, weighted)."""
    seg = ModelRunner(forwards["segmenter"], size, IMAGENET)
    cost = {}
    for label, logit in (("negative", -10.0), ("positive", 10.0)):
        pipe = TwoStagePipeline(ModelRunner(Gate(forwards["classifier"], logit), size, IMAGENET), seg, post)
        cost[label] = measure(lambda: pipe.predict([image]), repeat=reps, warmup=1).median
    return (1 - POSITIVE_RATE) * cost["negative"] + POSITIVE_RATE * cost["positive"]


def _speed(ctx, rows: list) -> dict[tuple[str, str], float]:
    import torch

    cfg = load_config(ctx.config_name)
    size, reps = (64, 1) if ctx.quick else (1024, 3)
    films = calibration_films(find_dicoms(ctx.sample_dir / "dicom"), 4 if ctx.quick else 11)
    files: dict[str, dict[str, Path]] = {}
    torch.manual_seed(0)
    for kind, model in (("classifier", build_classifier(cfg.classifier).eval()),
                        ("segmenter", build_segmenter(cfg.segmenter).eval())):
        fp32 = export_model(model, ctx.tmp / f"{kind}.onnx", kind, size)
        int8 = ctx.tmp / f"{kind}.int8.onnx"
        # calibrated at 256²: the activation ranges of random weights only need to be plausible for a speed figure
        quantize_int8(fp32, int8, films, min(size, 256), IMAGENET, "image")
        files[kind] = {"fp32": fp32, "int8": int8}
    image = films[0][1]
    cost = {}
    for system in _systems():
        forwards = {kind: _forward(system, f) for kind, f in files.items()}
        cost[system] = seconds = _pipeline_cost(forwards, size, cfg.postprocess, image, reps)
        rows.append({"case": f"two-stage pipeline {_name(system)} {size}² at {POSITIVE_RATE:.0%} positives",
                     "unit": "s/image", "median_s": seconds, "min_s": seconds, "max_s": seconds, "runs": reps,
                     "warmup": 1, "speedup_vs_onnxruntime_fp32": round(cost[REFERENCE] / seconds, 2)})
    return cost


def _demo_parity(ctx, rows: list, notes: list) -> dict[tuple[str, str], tuple[float, float]] | None:
    """Parity of each reduced-precision system with ONNX Runtime fp32 on the demo's test split:
    (submission agreement, share of equal classifier decisions); None when not measured."""
    from pneumoseg.evaluate.scoring import evaluate_submission
    from pneumoseg.evaluate.validation import validation_samples
    from pneumoseg.export import export_onnx
    from pneumoseg.infer.onnx_backend import build_onnx_pipeline
    from pneumoseg.infer.predict import predict_files

    demo = Path(os.environ.get("PNEUMOSEG_DEMO_OUTPUT", "demo-output"))
    cls_run, seg_run = demo / "runs" / "classifier", demo / "runs" / "segmenter"
    test_images, test_labels = demo / "data" / "dicom-images-test", demo / "data" / "test-rle.csv"
    if ctx.quick or not (cls_run / "best.safetensors").is_file() or not test_labels.is_file():
        notes.append(f"parity on the demo's test split: not measured ({'quick mode' if ctx.quick else 'no trained demo; run make demo first'})")
        return None
    val = validation_samples(seg_run, demo / "data" / "dicom-images-train", demo / "data" / "train-rle.csv",
                             cls_run=cls_run)
    films = [(s.image_id, read_dicom(s.path).pixels) for s in val[:CALIBRATION_FILMS]]
    paths = find_dicoms(test_images)
    images = [read_dicom(p).pixels for p in paths]
    submissions, decisions, threshold = {}, {}, None
    for system in [s for s in _systems() if s == REFERENCE or s in REDUCED]:
        runtime, precision = system
        folder = ctx.tmp / f"demo-{precision}"
        if not (folder / "onnx.json").is_file():
            export_onnx(cls_run, seg_run, folder, precision=precision,
                        calibration=films if precision == "int8" else None)
        pipeline = build_onnx_pipeline(folder, runtime=runtime)
        threshold = pipeline.post.cls_threshold
        out = ctx.tmp / f"demo-{runtime}-{precision}.csv"
        t = measure(lambda: predict_files(pipeline, paths, out, progress=False, restart=True), repeat=1, warmup=0)
        rows.append(row(f"predict demo test split {_name(system)} ({len(paths)} images)", t, per=len(paths),
                        unit="s/image"))
        submissions[system] = out
        decisions[system] = np.concatenate([pipeline.classifier.probabilities(images[i:i + 8])
                                            for i in range(0, len(images), 8)]) >= threshold
    scores = {s: evaluate_submission(out, test_labels).summary()["mean_dice"] for s, out in submissions.items()}
    parity = {}
    for system in submissions.keys() - {REFERENCE}:
        agreement = evaluate_submission(submissions[system], submissions[REFERENCE]).summary()["mean_dice"]
        same = float(np.mean(decisions[system] == decisions[REFERENCE]))
        parity[system] = (agreement, same)
        notes.append(f"parity of {_name(system)} with ONNX Runtime fp32 on the demo's test split ({len(paths)} images, "
                     f"classifier threshold {threshold:g}): mean Dice between the submissions {agreement:.4f}; same "
                     f"classifier decision on {same:.1%} ({round((1 - same) * len(paths))} flips); SIIM Dice against "
                     f"the truth {scores[system]:.4f} against fp32's {scores[REFERENCE]:.4f} "
                     f"({scores[system] - scores[REFERENCE]:+.4f})")
    return parity


def _targets(cost: dict, parity: dict | None, targets: list) -> None:
    """One target per reduced-precision system: fast enough and at parity."""
    for system in [s for s in REDUCED if s in cost]:
        seconds, ratio = cost[system], cost[REFERENCE] / cost[system]
        fast = seconds <= SPEED_TARGET_S
        agreement, same = parity.get(system, (None, None)) if parity else (None, None)
        at_parity = agreement is not None and agreement >= 0.99 and same >= 0.99
        measured = f"{seconds:.2f} s/image ({ratio:.1f}× ONNX Runtime fp32's {cost[REFERENCE]:.2f} s, same run)"
        measured += f"; parity {agreement:.4f}, {same:.1%}" if agreement is not None else "; parity not measured"
        why = ("" if fast and at_parity else
               "parity not measured: run make demo first" if agreement is None and fast else
               f"{'too slow' if not fast else ''}{' and ' if not fast and not at_parity else ''}"
               f"{'not at parity (submission Dice ≥ 0.99 and decisions ≥ 99% equal)' if not at_parity else ''}")
        targets.append(target(f"two-stage 1024² {_name(system)} pipeline", f"≤ {SPEED_TARGET_S} s/image, at parity",
                              measured, fast and at_parity, why))


def _workers(ctx, rows: list, notes: list) -> None:
    from pneumoseg.infer.predict import predict_files

    cfg = load_config(ctx.config_name)
    size = 64 if ctx.quick else 1024
    forwards = {"classifier": onnx_forward(ctx.tmp / "classifier.onnx"),
                "segmenter": onnx_forward(ctx.tmp / "segmenter.onnx")}
    pipeline = TwoStagePipeline(ModelRunner(Gate(forwards["classifier"], -10.0), size, IMAGENET),
                                ModelRunner(forwards["segmenter"], size, IMAGENET), cfg.postprocess)
    paths = find_dicoms(ctx.sample_dir / "dicom")
    decode = measure(lambda: [read_dicom(p) for p in paths], repeat=1, warmup=1).median / len(paths)
    for workers in (0, 1, 2):
        out = ctx.tmp / f"workers-{workers}.csv"
        t = measure(lambda: predict_files(pipeline, paths, out, progress=False, restart=True, workers=workers),
                    repeat=1 if ctx.quick else 2, warmup=0)
        rows.append(row(f"predict fp32 ONNX {size}² (negatives), {workers} decoding workers, {len(paths)} films", t,
                        per=len(paths), unit="s/image", images_per_s=round(len(paths) / t.median, 2)))
    speeds = {r["case"].split(", ")[1].split()[0]: 1 / r["median_s"] for r in rows
              if r["case"].startswith("predict fp32 ONNX")}
    notes.append("predict images/s with 0 / 1 / 2 decoding workers: "
                 + " / ".join(f"{v:.2f}" for v in speeds.values()) + ". "
                 f"Decoding a SIIM film takes {decode * 1e3:.0f} ms in the main process; the classifier alone "
                 "(every image) costs far more on this CPU, so workers can hide at most that share here; on a "
                 "GPU, where the model takes milliseconds, decoding is what bounds predict")


def run(ctx) -> dict[str, Any]:
    rows, targets, notes = [], [], []
    cost = _speed(ctx, rows)
    parity = _demo_parity(ctx, rows, notes)
    if not ctx.quick:
        _targets(cost, parity, targets)
    _workers(ctx, rows, notes)
    notes.append("bf16 runs in OpenVINO only (INFERENCE_PRECISION_HINT bf16, on this CPU's AMX-BF16): ONNX Runtime's "
                 "CPU provider has no bf16 convolution kernels. int8 is one QDQ graph per model, run by either runtime.")
    return {"rows": rows, "targets": targets, "notes": notes}
