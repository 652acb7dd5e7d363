"""The main job, end to end on synthetic data: ``pneumoseg demo`` / ``make demo``.

synth dataset (train + held-out test) → train segmenter with SWA → train classifier (starting
from the segmenter's encoder, the demo's offline stand-in for ImageNet weights) → tune
post-processing on validation → predict the held-out test (two-stage and segmentation alone)
→ evaluate → report. Finished steps are skipped when the demo is run again on the same folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pneumoseg.config import Config, load_config
from pneumoseg.data.index import find_dicoms
from pneumoseg.data.synth import generate_dataset
from pneumoseg.evaluate.scoring import evaluate_submission
from pneumoseg.evaluate.validation import validation_outputs_from_runs
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files
from pneumoseg.infer.tune import save_postprocess, tune_postprocess
from pneumoseg.io import atomic_write_json, atomic_write_text
from pneumoseg.models.trained import checkpoint_path
from pneumoseg.train.stages import train_classifier, train_segmenter


@dataclass
class DemoResult:
    out: Path
    test_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    def render(self) -> str:
        lines = ["", "Held-out synthetic test set, SIIM mean Dice:",
                 f"  {'system':<32}{'mean Dice':>10}{'vs all-empty':>14}"]
        baseline = next(iter(self.test_scores.values()))["all_empty_baseline"] if self.test_scores else 0.0
        lines.append(f"  {'all-empty baseline':<32}{baseline:>10.4f}{0:>+14.4f}")
        for name, scores in self.test_scores.items():
            lines.append(f"  {name:<32}{scores['mean_dice']:>10.4f}{scores['mean_dice'] - baseline:>+14.4f}")
        lines.append("")
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items()))
        if self.report:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


@contextmanager
def _step(result: DemoResult, name: str) -> Iterator[None]:
    """Announce a step and record how long it took."""
    tqdm.write(f"== {name}")
    start = time.perf_counter()
    yield
    result.seconds[name] = time.perf_counter() - start


def _finished(run_dir: Path, kind: str) -> bool:
    final = "swa.safetensors" if kind == "segmenter" else "curves.png"
    return (run_dir / final).is_file()


def run_demo(out: Path, *, n_train: int = 400, n_test: int = 150, seed: int = 0, size: int = 1024,
             config: Config | None = None, progress: bool = True) -> DemoResult:
    out = Path(out)
    config = config or load_config("demo")
    result = DemoResult(out)
    data = out / "data"
    train_images, train_labels = data / "dicom-images-train", data / "train-rle.csv"
    test_images, test_labels = data / "dicom-images-test", data / "test-rle.csv"
    cls_run, seg_run = out / "runs" / "classifier", out / "runs" / "segmenter"

    with _step(result, "synthetic data"):
        if not test_labels.is_file():
            generate_dataset(data, n_train, test_n=n_test, seed=seed, size=size, progress=progress)
    with _step(result, "train segmenter"):
        if not _finished(seg_run, "segmenter"):
            train_segmenter(train_images, train_labels, config, seg_run, resume=True, progress=progress)
    with _step(result, "train classifier"):
        if not _finished(cls_run, "classifier"):
            # No ImageNet weights offline: the classifier starts from the segmenter's trained
            # encoder (same backbone), a local pretrained start as the recipe asks.
            train_classifier(train_images, train_labels, config, cls_run, resume=True, progress=progress,
                             pretrained=checkpoint_path(seg_run, "auto"))
    with _step(result, "tune"):
        outputs = validation_outputs_from_runs(cls_run, seg_run, train_images, train_labels, progress=progress)
        tuned = tune_postprocess(outputs)
        save_postprocess(tuned, seg_run)
        tqdm.write(tuned.render())
    with _step(result, "predict test"):
        paths = find_dicoms(test_images)
        variants = {"segmentation alone": (None, "test/submission-seg-only.csv"),
                    "two-stage (SWA)": (cls_run, "test/submission.csv")}
        for name, (cls, csv_name) in variants.items():
            pipeline = build_torch_pipeline(cls, seg_run)
            overlays = out / "test" / "overlays" if cls is not None else None
            predict_files(pipeline, paths, out / csv_name, overlays=overlays, progress=progress)
            result.test_scores[name] = evaluate_submission(out / csv_name, test_labels).summary()
    with _step(result, "report"):
        from pneumoseg.evaluate.report import build_report

        report = build_report(cls_run, seg_run, train_images, train_labels, out / "report", progress=progress)
        result.report = Path(report.out_dir) / "report.md"
    atomic_write_json(out / "summary.json", {"test": result.test_scores, "seconds": result.seconds,
                                             "report": str(result.report)})
    atomic_write_text(out / "summary.txt", result.render() + "\n")
    return result
