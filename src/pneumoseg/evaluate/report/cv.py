"""``pneumoseg cv report``: the ablation on a cross-validation, and whether the fold ensemble
helps.

- Every system is tuned for itself on the out-of-fold outputs (all training images, each
  predicted by the fold that did not train on it); those rows are optimistic, as any rows on
  the images the post-processing was chosen on.
- On the test split, every row is the fold ensemble (probabilities averaged over the folds).
  Beside it, ``cv.md`` puts each single fold's test Dice for the final system, with the same
  post-processing: their mean and spread, and the ensemble's paired-bootstrap difference to
  the mean single fold.

Folds run one at a time over the test images and their probabilities are summed as they come:
memory holds one fold's outputs and the running sums, never K copies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.data.datasets import Sample
from pneumoseg.evaluate.bootstrap import paired_bootstrap
from pneumoseg.evaluate.cv import oof_outputs, oof_source
from pneumoseg.evaluate.report import Report, compute_report, json_safe
from pneumoseg.evaluate.report.markdown import fmt
from pneumoseg.evaluate.report.tables import System, final_system, tune_systems
from pneumoseg.evaluate.validation import ablation_outputs, labelled_samples, per_image_dice
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.io import atomic_write_json, atomic_write_text
from pneumoseg.runs.cv import fold_done, fold_run, read_cv


def _system_dice(outputs: dict[str, ModelOutputs], system: System) -> np.ndarray:
    return per_image_dice(system.outputs(outputs), system.post, gated=system.gated)


def ensemble_outputs(cls_cv: Path, seg_cv: Path, samples: list[Sample], final: System, *, size: int,
                     device: str = "cpu", progress: bool = True) -> tuple[dict[str, ModelOutputs], list[np.ndarray]]:
    """The fold ensemble's outputs on ``samples`` (every variant), and each fold's per-image
    Dice of ``final`` alone."""
    n_folds = read_cv(seg_cv).n_folds
    sums: dict[str, dict[str, np.ndarray | None]] = {}
    first: dict[str, ModelOutputs] = {}
    fold_dice = []
    for k in range(n_folds):
        outputs = ablation_outputs(fold_run(cls_cv, k), fold_run(seg_cv, k), samples, device=device, size=size,
                                   desc=f"test, fold {k}", progress=progress)
        fold_dice.append(_system_dice(outputs, final))
        for variant, out in outputs.items():
            total = sums.setdefault(variant, {"seg": np.zeros(out.seg_prob.shape, np.float32), "cls": None})
            total["seg"] += out.seg_prob
            if out.cls_prob is not None:
                total["cls"] = out.cls_prob.astype(np.float64) + (0 if total["cls"] is None else total["cls"])
            first.setdefault(variant, dataclasses.replace(out, seg_prob=np.zeros((0, *out.seg_prob.shape[1:]), np.float16)))
        del outputs
    ensemble = {variant: dataclasses.replace(first[variant], seg_prob=(total["seg"] / n_folds).astype(np.float16),
                                             cls_prob=None if total["cls"] is None else
                                             (total["cls"] / n_folds).astype(np.float32))
                for variant, total in sums.items()}
    return ensemble, fold_dice


def _fold_metrics(cv_dir: Path) -> list[dict[str, Any]]:
    done = [fold_done(cv_dir, k) for k in range(read_cv(cv_dir).n_folds)]
    return [{"fold": k, **(d.best if d else {})} for k, d in enumerate(done)]


def cv_summary(cls_cv: Path, seg_cv: Path, final: System, ensemble_dice: np.ndarray | None,
               fold_dice: list[np.ndarray]) -> dict[str, Any]:
    summary: dict[str, Any] = {"n_folds": read_cv(seg_cv).n_folds, "system": final.name,
                               "classifier_folds": _fold_metrics(cls_cv), "segmenter_folds": _fold_metrics(seg_cv)}
    if ensemble_dice is not None:
        singles = np.stack(fold_dice)
        mean_single = singles.mean(axis=0)
        diff, lo, hi = paired_bootstrap(ensemble_dice, mean_single)
        summary["test"] = {"n_images": int(len(ensemble_dice)), "fold_dice": [float(d.mean()) for d in fold_dice],
                           "mean_single_fold": float(mean_single.mean()),
                           "sd_across_folds": float(singles.mean(axis=1).std(ddof=1)),
                           "ensemble": float(ensemble_dice.mean()), "ensemble_minus_single": [diff, lo, hi]}
    return summary


def verdict(test: dict[str, Any]) -> str:
    diff, lo, hi = test["ensemble_minus_single"]
    if lo > 0:
        return f"the fold ensemble helped: {fmt(diff, signed=True)} [{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]"
    if hi < 0:
        return f"the fold ensemble was worse: {fmt(diff, signed=True)} [{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]"
    return (f"no clear gain from the fold ensemble: {fmt(diff, signed=True)} [{fmt(lo, signed=True)}, "
            f"{fmt(hi, signed=True)}], the interval includes 0")


def cv_markdown(summary: dict[str, Any]) -> str:
    k = summary["n_folds"]
    lines = [f"# Cross-validation: {k} folds", "",
             "Post-processing of every system was chosen on the out-of-fold outputs (each training image predicted "
             "by the fold that did not train on it); the ablation in [report.md](report.md) uses them as its "
             "validation rows, and its test rows are the fold ensemble.", "",
             "## Each fold's validation (its selected epoch)", "",
             "| fold | classifier MCC | segmenter IoU |", "|---|---|---|"]
    for cls, seg in zip(summary["classifier_folds"], summary["segmenter_folds"]):
        lines.append(f"| {cls['fold']} | {fmt(cls.get('mcc'))} | {fmt(seg.get('iou'))} |")
    test = summary.get("test")
    if test:
        lines += ["", f"## Single folds against their ensemble ({summary['system']}, {test['n_images']} test images)", "",
                  "| model | test mean Dice |", "|---|---|"]
        lines += [f"| fold {i} alone | {fmt(d)} |" for i, d in enumerate(test["fold_dice"])]
        lines += [f"| mean single fold (sd across folds {fmt(test['sd_across_folds'])}) | {fmt(test['mean_single_fold'])} |",
                  f"| ensemble of {k} | {fmt(test['ensemble'])} |", "",
                  f"Ensemble minus the mean single fold, paired bootstrap 95% interval over images: {verdict(test)}."]
    else:
        lines += ["", "No test split was given (`--test-images/--test-labels`): no ensemble rows."]
    return "\n".join(lines) + "\n"


def build_cv_report(cls_cv: Path, seg_cv: Path, images: Path, labels: Path, out_dir: Path, *,
                    test_images: Path | None = None, test_labels: Path | None = None, size: int | None = None,
                    device: str = "cpu", progress: bool = True) -> tuple[Report, dict[str, Any], list[System]]:
    """Write report.md/json and cv.md/json into ``out_dir``; the report, the CV summary and the
    systems, each tuned on the out-of-fold outputs (their ``tuned.source`` says so)."""
    validation = oof_outputs(cls_cv, seg_cv, images, labels, size=size, device=device, progress=progress)
    size = next(iter(validation.values())).size
    systems = tune_systems(validation)
    for system in systems:
        if system.tuned is not None:
            system.tuned.source = oof_source(seg_cv, size)
    final = final_system(systems)
    test, ensemble_dice, fold_dice = None, None, []
    if test_images is not None and test_labels is not None:
        test, fold_dice = ensemble_outputs(cls_cv, seg_cv, labelled_samples(test_images, test_labels), final,
                                           size=size, device=device, progress=progress)
        ensemble_dice = _system_dice(test, final)
    evaluated = {"cls_run": str(cls_cv), "seg_run": str(seg_cv), "seg_checkpoints": ["best", "swa"],
                 "splits": str(Path(seg_cv) / "splits.json"), "fold": f"every fold ({read_cv(seg_cv).n_folds}), out of fold",
                 "test_images": str(test_images) if test_images else None,
                 "test_labels": str(test_labels) if test_labels else None, "tta": True, "device": device,
                 "tuned_on": f"the out-of-fold outputs of {read_cv(seg_cv).n_folds} folds"}
    report = compute_report(validation, out_dir, test=test, systems=systems, evaluated=evaluated)
    summary = cv_summary(cls_cv, seg_cv, final, ensemble_dice, fold_dice)
    atomic_write_text(Path(out_dir) / "cv.md", cv_markdown(summary))
    atomic_write_json(Path(out_dir) / "cv.json", json_safe(summary))
    return report, summary, systems
