"""The main job, end to end on synthetic data: ``pneumoseg demo`` / ``make demo``.

synth dataset (train + held-out test) → train segmenter with SWA → train classifier (starting
from the segmenter's encoder, the demo's offline stand-in for ImageNet weights) → model
outputs on validation and test, computed once → each system's post-processing tuned on
validation (two-stage saved as postprocess.json, segmentation alone as
postprocess-seg-only.json) → predict the held-out test with both (full-resolution CSVs) →
evaluate → report with the test split → ``summary.md`` + ``summary.json``. Finished steps
(data, training) are skipped when the demo is run again on the same folder.
"""

from __future__ import annotations

import os
import platform
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
from pneumoseg.evaluate.report import Report, compute_report, describe_runs, json_safe
from pneumoseg.evaluate.report.markdown import (
    OPTIMISTIC,
    ablation_table,
    false_positive_table,
    findings,
    oracle_note,
    size_cut_text,
    size_table,
    split_tables,
    submission_check,
)
from pneumoseg.evaluate.report.tables import System, final_system, tune_systems
from pneumoseg.evaluate.scoring import evaluate_submission
from pneumoseg.evaluate.validation import ablation_outputs, labelled_samples, validation_samples
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files
from pneumoseg.infer.tune import save_postprocess
from pneumoseg.io import atomic_write_json, atomic_write_text
from pneumoseg.runs.trained import checkpoint_path, has_checkpoint
from pneumoseg.runtime import configure_torch, describe_torch
from pneumoseg.train.stages import train_classifier, train_segmenter

TABLE_START, TABLE_END = "<!-- demo-summary:start -->", "<!-- demo-summary:end -->"
"""Markers around the headline table in summary.md (and in the README's copy of it)."""
SUBMISSIONS = {"seg_alone": "test/submission-seg-only.csv", "two_stage": "test/submission.csv"}


@dataclass
class DemoResult:
    out: Path
    test_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """System key → `pneumoseg evaluate` summary of its full-resolution test CSV."""
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    summary: Path | None = None
    table: str = ""
    """The terminal rendering of the report's headline table."""

    def render(self) -> str:
        lines = ["", self.table, "", "Full-resolution test CSVs (pneumoseg predict + evaluate, 1024×1024):"]
        lines += [f"  {key:<20}{scores['mean_dice']:.4f}" for key, scores in self.test_scores.items()]
        lines.append("")
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items()))
        lines += [f"report: {self.report}", f"summary: {self.summary}"]
        return "\n".join(lines)


@contextmanager
def _step(result: DemoResult, name: str) -> Iterator[None]:
    """Announce a step and record how long it took."""
    tqdm.write(f"== {name}")
    start = time.perf_counter()
    yield
    result.seconds[name] = time.perf_counter() - start


def _finished(run_dir: Path, kind: str) -> bool:
    """A training step to skip on a rerun: the segmenter has its SWA model; the classifier's
    last act is drawing its curves."""
    return has_checkpoint(run_dir, "swa") if kind == "segmenter" else (run_dir / "curves.png").is_file()


def machine_info() -> dict[str, Any]:
    """CPU model, core count, torch threads and version: what the timings were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    torch_settings = describe_torch()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch_settings["threads"],
            "torch": torch_settings["torch"], "cpu_capability": torch_settings["cpu_capability"],
            "cpu_bf16": torch_settings["cpu_bf16"], "python": platform.python_version()}


def summary_table_markdown(summary: dict[str, Any]) -> str:
    """The headline table (held-out test) of a summary.json, as summary.md and the README hold it."""
    return ablation_table(summary["test"]["rows"])


def _system(systems: list[System], key: str) -> System:
    return next(s for s in systems if s.key == key)


def _tune_and_save(systems: list[System], seg_run: Path) -> dict[str, System]:
    """Save the two systems `pneumoseg predict` runs: two-stage (final) and segmentation alone."""
    shipped = {"two_stage": final_system(systems), "seg_alone": _system(systems, "seg_alone")}
    for system in shipped.values():
        path = save_postprocess(system.tuned, seg_run)
        tqdm.write(f"{system.tuned.render()}\nsaved {path}")
    return shipped


def demo_summary(report: Report, result: DemoResult, shipped: dict[str, System], *, seed: int, config: Config,
                 command: str) -> dict[str, Any]:
    """summary.json: the report's tables, the full-resolution check, the machine, seeds and command."""
    submissions = {shipped[key].key: {"system": shipped[key].name, "csv": SUBMISSIONS[key], **scores}
                   for key, scores in result.test_scores.items()}
    return json_safe({"test": report.splits["test"], "validation": report.splits["validation"],
                      "systems": report.systems, "submissions": submissions, "machine": machine_info(),
                      "seed": {"data": seed, "training": config.seed}, "config": config.name, "command": command,
                      "seconds": result.seconds, "report": str(result.report)})


def summary_markdown(summary: dict[str, Any]) -> str:
    """summary.md: headline test table (between the README markers), false positives on healthy
    films, Dice by size, the optimistic validation table, the machine, the seed and the command."""
    test, size = summary["test"], summary["test"]["eval_size"]
    m = summary["machine"]
    lines = ["# pneumoseg demo: the talk's ablation on synthetic data", "",
             f"## Held-out test set: SIIM mean Dice ({test['n_images']} images, {test['n_positive']} with pneumothorax)",
             "", "Each system's post-processing was tuned for it alone on the validation split and applied unchanged "
             f"here. Dice is computed at {size}×{size} (min_area scaled from 1024×1024); 95% intervals are paired "
             "bootstrap over images (2000 resamples, seed 0). The talk's column is not ours (SIIM leaderboard).", "",
             TABLE_START, summary_table_markdown(summary).rstrip("\n"), TABLE_END, "",
             *oracle_note(test["rows"]), *findings(test["rows"]),
             *submission_check(test["rows"], summary["submissions"], size),
             "## False positives on healthy films (test)", "", false_positive_table(test["rows"]),
             f"## Dice by pneumothorax size (test; {size_cut_text()})", "",
             size_table(test["rows"], test["n_by_size"]),
             *split_tables(summary["validation"], f"## {OPTIMISTIC[0].upper()}{OPTIMISTIC[1:]}", ""),
             "## Machine, seed and command", "", "| | |", "|---|---|", f"| CPU | {m['cpu']} |",
             f"| cores | {m['cores']} |", f"| torch threads | {m['torch_threads']} |", f"| torch | {m['torch']} |",
             f"| CPU kernels | {m['cpu_capability']}, native bf16 {'yes' if m['cpu_bf16'] else 'no'} |",
             f"| seed | data {summary['seed']['data']}, training {summary['seed']['training']} "
             f"(config `{summary['config']}`) |", "", "```", summary["command"], "```", ""]
    return "\n".join(lines)


def run_cv_demo(out: Path, *, n_folds: int, n_train: int = 700, n_test: int = 200, seed: int = 0, size: int = 1024,
                config: Config | None = None, progress: bool = True) -> DemoResult:
    """The winners' workflow in small: both stages trained on ``n_folds`` folds of one split
    (the classifier of fold K from the segmenter of fold K), every system tuned on the
    out-of-fold outputs, the fold ensemble scored on the held-out test beside each single fold
    (OUT/cv/report/cv.md), and the ensemble's full-resolution test CSV. Writes OUT/cv-summary.md."""
    from pneumoseg.evaluate.report.cv import build_cv_report, cv_markdown
    from pneumoseg.train.cv import train_cv

    out = Path(out)
    config = config or load_config("demo")
    configure_torch(config.runtime)
    result = DemoResult(out)
    data = out / "data"
    train_images, train_labels = data / "dicom-images-train", data / "train-rle.csv"
    test_images, test_labels = data / "dicom-images-test", data / "test-rle.csv"
    cls_cv, seg_cv = out / "cv" / "classifier", out / "cv" / "segmenter"
    with _step(result, "synthetic data"):
        if not test_labels.is_file():
            generate_dataset(data, n_train, test_n=n_test, seed=seed, size=size, progress=progress)
    with _step(result, f"train segmenter, {n_folds} folds"):
        train_cv("seg", train_images, train_labels, config, seg_cv, n_folds=n_folds, resume=True, progress=progress)
    with _step(result, f"train classifier, {n_folds} folds"):
        train_cv("cls", train_images, train_labels, config, cls_cv, n_folds=n_folds, resume=True, progress=progress,
                 pretrained_cv=seg_cv)
    with _step(result, "out-of-fold outputs, tune, ensemble on test, report"):
        report, summary, systems = build_cv_report(cls_cv, seg_cv, train_images, train_labels, out / "cv" / "report",
                                                   test_images=test_images, test_labels=test_labels, progress=progress)
        _tune_and_save(systems, seg_cv)
        result.report, result.table = report.markdown_path, report.render()
    with _step(result, "predict test (fold ensemble)"):
        csv_path = out / "test" / "submission-cv-ensemble.csv"
        predict_files(build_torch_pipeline(cls_cv, seg_cv), find_dicoms(test_images), csv_path, progress=progress)
        result.test_scores["two_stage_ensemble"] = evaluate_submission(csv_path, test_labels).summary()
    result.summary = out / "cv-summary.md"
    atomic_write_text(result.summary, "\n".join(["```", result.render().strip(), "```", "", cv_markdown(summary)]))
    return result


def run_demo(out: Path, *, n_train: int = 700, n_test: int = 200, seed: int = 0, size: int = 1024,
             config: Config | None = None, progress: bool = True, command: str | None = None) -> DemoResult:
    out = Path(out)
    config = config or load_config("demo")
    configure_torch(config.runtime)  # also when training is skipped on a rerun: inference uses these threads
    command = command or (f"run_demo({str(out)!r}, n_train={n_train}, n_test={n_test}, seed={seed}, size={size}, "
                          f"config={config.name!r})")
    result = DemoResult(out)
    data = out / "data"
    train_images, train_labels = data / "dicom-images-train", data / "train-rle.csv"
    test_images, test_labels = data / "dicom-images-test", data / "test-rle.csv"
    cls_run, seg_run = out / "runs" / "classifier", out / "runs" / "segmenter"
    splits = out / "runs" / "splits.json"  # one split for both stages

    with _step(result, "synthetic data"):
        if not test_labels.is_file():
            generate_dataset(data, n_train, test_n=n_test, seed=seed, size=size, progress=progress)
    with _step(result, "train segmenter"):
        if not _finished(seg_run, "segmenter"):
            train_segmenter(train_images, train_labels, config, seg_run, resume=True, progress=progress,
                            splits_path=splits)
    with _step(result, "train classifier"):
        if not _finished(cls_run, "classifier"):
            # No ImageNet weights offline: the classifier starts from the segmenter's trained
            # encoder (same backbone), a local pretrained start as the recipe asks.
            train_classifier(train_images, train_labels, config, cls_run, resume=True, progress=progress,
                             pretrained=checkpoint_path(seg_run, "auto"), splits_path=splits)
    with _step(result, "model outputs"):  # once, for tuning and for the report
        val_samples = validation_samples(seg_run, train_images, train_labels, cls_run=cls_run)
        validation = ablation_outputs(cls_run, seg_run, val_samples, desc="validation", progress=progress)
        test = ablation_outputs(cls_run, seg_run, labelled_samples(test_images, test_labels), desc="test",
                                      progress=progress)
    with _step(result, "tune"):
        systems = tune_systems(validation)
        shipped = _tune_and_save(systems, seg_run)
    with _step(result, "predict test"):
        paths = find_dicoms(test_images)
        for key, csv_name in SUBMISSIONS.items():
            pipeline = build_torch_pipeline(cls_run if key == "two_stage" else None, seg_run)
            overlays = out / "test" / "overlays" if key == "two_stage" else None
            predict_files(pipeline, paths, out / csv_name, overlays=overlays, progress=progress)
            result.test_scores[key] = evaluate_submission(out / csv_name, test_labels).summary()
    with _step(result, "report"):
        submissions = {shipped[key].key: scores for key, scores in result.test_scores.items()}
        evaluated = describe_runs(cls_run, seg_run, train_images, train_labels, test_images=test_images,
                                  test_labels=test_labels)
        report = compute_report(validation, out / "report", test=test, systems=systems, evaluated=evaluated,
                                submissions=submissions)
        result.report, result.table = report.markdown_path, report.render()
    summary = demo_summary(report, result, shipped, seed=seed, config=config, command=command)
    result.summary = out / "summary.md"
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(result.summary, summary_markdown(summary))
    atomic_write_text(out / "summary.txt", result.render() + "\n")
    return result
