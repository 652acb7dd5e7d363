"""``pneumoseg report``: the talk's ablation, measured honestly on our own models.

How much does the classifier gate add over segmentation alone, how much does SWA add (and
hflip TTA, the 1st-place trick)? Each system gets its own post-processing, chosen on the
validation split; the headline table scores them on a held-out test set (when one is given),
never on the split used for tuning, with paired-bootstrap 95% intervals over images, the
share of healthy films each system marks, and Dice by pneumothorax size. The validation
table stays, labelled optimistic. The talk's numbers stand beside ours for reference only.

The numeric part needs no model: :func:`build_report` runs inference once per model variant
and split (:func:`ablation_outputs`) and hands the outputs to :func:`compute_report`,
which tunes the systems (:mod:`.tables`), draws the plots (:mod:`.plots`) and writes
``report.md`` (:mod:`.markdown`) + ``report.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.errors import PneumosegError
from pneumoseg.evaluate.report.markdown import fmt, render_markdown
from pneumoseg.evaluate.report.plots import write_plots
from pneumoseg.evaluate.report.tables import (
    TALK_ABLATION,
    TALK_CLASSIFIER,
    TALK_SEGMENTER,
    TALK_SOURCE,
    System,
    check_outputs,
    classifier_summary,
    final_system,
    segmenter_summary,
    split_summary,
    tune_systems,
)
from pneumoseg.evaluate.validation import ablation_outputs, labelled_samples, recorded_splits, validation_samples
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.io import atomic_write_json, atomic_write_text
from pneumoseg.runs.trained import checkpoint_path, has_checkpoint

__all__ = ["Report", "build_report", "compute_report", "describe_runs"]


@dataclass
class Report:
    out_dir: Path
    splits: dict[str, dict[str, Any]]
    """"validation" (and "test" when given): image counts, eval size and the ablation rows."""
    systems: list[dict[str, Any]]
    """Each system and the post-processing tuned for it on validation."""
    classifier: dict[str, Any]
    """Metrics at the final two-stage system's classifier threshold (+ the talk's), on validation."""
    segmenter: dict[str, Any]
    """IoU/F1/F2 on the validation images with pneumothorax, raw and post-processed, per checkpoint."""
    evaluated: dict[str, Any] = field(default_factory=dict)
    """What was evaluated: runs, checkpoints, split, test folder."""
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """System key → `pneumoseg evaluate` summary of its full-resolution test CSV (when given)."""
    dice_grid: dict[str, Any] = field(default_factory=dict)
    """Mean Dice over pixel threshold × min_area for the final two-stage model, on validation."""
    panels: list[dict[str, Any]] = field(default_factory=list)
    """The cases drawn in panels.png (best, median, worst)."""
    plots: dict[str, str] = field(default_factory=dict)
    """Plot name → file name (relative to ``out_dir``) of the plots that were written."""
    notes: list[str] = field(default_factory=list)

    @property
    def markdown_path(self) -> Path:
        return Path(self.out_dir) / "report.md"

    @property
    def json_path(self) -> Path:
        return Path(self.out_dir) / "report.json"

    @property
    def headline(self) -> str:
        """The split of the headline table: "test" when given, else "validation"."""
        return "test" if "test" in self.splits else "validation"

    def render(self) -> str:
        """The headline ablation as plain text for the terminal."""
        split = self.splits[self.headline]
        what = "held-out test" if self.headline == "test" else "validation (optimistic: post-processing tuned on it)"
        tuned_on = self.evaluated.get("tuned_on", "validation")
        lines = [f"SIIM mean Dice on {split['n_images']} {what} images ({split['n_positive']} with pneumothorax), "
                 f"each system tuned on {tuned_on}; 95% CIs: paired bootstrap", ""]
        width = max(len(r["system"]) for r in split["rows"]) + 2
        lines.append(f"{'system':<{width}}{'ours':>8}{'95% CI':>18}{'vs empty':>10}{'vs seg':>9}{'FP healthy':>12}"
                     f"{'talk*':>9}")
        for r in split["rows"]:
            ci = f"[{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]" if r["ci"] else "—"
            fp = f"{r['fp_healthy']['n']}/{r['fp_healthy']['of']}" if r["fp_healthy"] else "—"
            deltas = [fmt(r[k]["mean"] if r[k] else None, signed=True) for k in ("delta_vs_empty", "delta_vs_seg_alone")]
            note = f"  ({r['note']})" if r["note"] else ""
            lines.append(f"{r['system']:<{width}}{fmt(r['mean_dice']):>8}{ci:>18}{deltas[0]:>10}{deltas[1]:>9}"
                         f"{fp:>12}{fmt(r['talk']):>9}{note}")
        lines.append("* the talk's SIIM leaderboard scores (test set, 1024 px), for reference; not ours")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return json_safe({
            "evaluated": self.evaluated, "splits": self.splits, "systems": self.systems,
            "submissions": self.submissions, "classifier": self.classifier, "segmenter": self.segmenter,
            "dice_grid": self.dice_grid, "panels": self.panels, "plots": self.plots, "notes": self.notes,
            "talk": {"source": TALK_SOURCE, "ablation": TALK_ABLATION, "classifier": TALK_CLASSIFIER,
                     "segmenter": TALK_SEGMENTER},
        })


def json_safe(value: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, paths → str, so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def compute_report(validation: dict[str, ModelOutputs], out_dir: Path, *, test: dict[str, ModelOutputs] | None = None,
                   systems: list[System] | None = None, evaluated: dict[str, Any] | None = None,
                   submissions: dict[str, dict[str, Any]] | None = None, write: bool = True) -> Report:
    """Tune every system on ``validation`` (unless ``systems`` are given), score them on both
    splits, and write the report (see :mod:`.tables` for the output variants)."""
    base = check_outputs(validation)
    systems = systems or tune_systems(validation)
    final = final_system(systems)
    splits = {"validation": split_summary(validation, systems)}
    if test is not None:
        splits["test"] = split_summary(test, systems)
    report = Report(Path(out_dir), splits, [s.to_json() for s in systems],
                    classifier_summary(base, final.post.cls_threshold), segmenter_summary(validation, final.post),
                    {**(evaluated or {}), "variants": list(validation)}, dict(submissions or {}))
    if not base.image_ids:
        report.notes.append("the validation split is empty")
    if write:
        report.out_dir.mkdir(parents=True, exist_ok=True)
        report.plots, report.dice_grid, report.panels = write_plots(report.out_dir, validation, final)
        atomic_write_text(report.markdown_path, render_markdown(report))
        atomic_write_json(report.json_path, report.to_json())
    return report


# ----------------------------------------------------------------------------------------------
# With models


def describe_runs(cls_run: Path, seg_run: Path, images: Path, labels: Path, *, splits_path: Path | None = None,
                  fold: int = 0, tta: bool = True, device: str = "cpu", test_images: Path | None = None,
                  test_labels: Path | None = None) -> dict[str, Any]:
    """The report's "what was evaluated" entries for these runs and data."""

    has_swa = has_checkpoint(seg_run, "swa")
    splits = splits_path or recorded_splits(seg_run)
    return {"cls_run": str(cls_run), "cls_checkpoint": checkpoint_path(cls_run, "best").name, "seg_run": str(seg_run),
            "seg_checkpoints": [checkpoint_path(seg_run, "best").name] + (["swa.safetensors"] if has_swa else []),
            "images": str(images), "labels": str(labels), "splits": str(splits) if splits else None, "fold": fold,
            "tta": tta, "device": device, "test_images": str(test_images) if test_images else None,
            "test_labels": str(test_labels) if test_labels else None}


def build_report(cls_run: Path, seg_run: Path, images: Path, labels: Path, out_dir: Path, *,
                 test_images: Path | None = None, test_labels: Path | None = None, splits_path: Path | None = None,
                 fold: int = 0, device: str = "cpu", tta: bool = True, progress: bool = True) -> Report:
    """Run the inference the ablation needs on the validation split (and the test set, when
    ``test_images``/``test_labels`` are given), then :func:`compute_report`."""
    cls_run, seg_run = Path(cls_run), Path(seg_run)
    if (test_images is None) != (test_labels is None):
        raise PneumosegError("give --test-images and --test-labels together, or neither")
    common = dict(tta=tta, device=device, progress=progress)
    val_samples = validation_samples(seg_run, images, labels, splits_path=splits_path, fold=fold, cls_run=cls_run)
    validation = ablation_outputs(cls_run, seg_run, val_samples, desc="validation", **common)
    test = None
    if test_images is not None:
        test = ablation_outputs(cls_run, seg_run, labelled_samples(test_images, test_labels), desc="test",
                                      **common)
    evaluated = describe_runs(cls_run, seg_run, images, labels, splits_path=splits_path, fold=fold, tta=tta,
                              device=device, test_images=test_images, test_labels=test_labels)
    return compute_report(validation, out_dir, test=test, evaluated=evaluated)
