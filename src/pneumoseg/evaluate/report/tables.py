"""The report's numbers: no model, no files.

Systems of the ablation, each with its own post-processing tuned on validation outputs
(:func:`tune_systems`), then scored on any split's outputs (:func:`ablation_rows`): SIIM mean
Dice with paired-bootstrap 95% intervals, the share of healthy films given a mask, and Dice by
pneumothorax size. Plus the classifier and segmenter on their own, the Dice grid and the cases
for the panels.

Output variants (keys of ``outputs``): ``"best"`` (best checkpoint; its classifier
probabilities gate every two-stage row), ``"swa"`` (SWA checkpoint, same classifier
probabilities) and ``"swa+tta"`` (or ``"best+tta"`` when the run has no SWA checkpoint: hflip
TTA on both models, as ``pneumoseg predict --tta hflip`` does).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumoseg.config import PostprocessConfig
from pneumoseg.evaluate.bootstrap import paired_bootstrap
from pneumoseg.metrics import classification_metrics, dice_scores, fbeta_scores, iou_scores
from pneumoseg.evaluate.validation import predicted_masks
from pneumoseg.data.measurements import Measurement
from pneumoseg.evaluate.report.measured import BTS_CLASSES, bts_classes, rim_agreement, truth_measurements
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.infer.postprocess import REFERENCE_SIZE
from pneumoseg.infer.tune import TuneGrid, TuneResult, gated_mean_dice, threshold_dice_grid, tune_postprocess

TALK_SOURCE = "the talk's SIIM-ACR leaderboard scores (Timbus, 130th/1476; SIIM test set at 1024×1024)"
TALK_ABLATION = {"seg_alone": 0.7016, "two_stage": 0.8323, "two_stage_swa": 0.8347}
"""The talk's "70.16 → 83.23 (simple segmentation vs pipeline)" and "83.23 → 83.47 (SWA ON)";
0.8347 is its private-leaderboard score."""
TALK_CLASSIFIER = {"mcc": 0.7702, "precision": 0.8010, "recall": 0.8674, "accuracy": 0.9270}
TALK_SEGMENTER = {"iou": 0.6332, "f1": 0.6773, "f2": 0.6811}
RAW_THRESHOLD = 0.5
"""Pixel threshold of the "raw" segmenter metrics, as in training validation."""
SIZE_CUTS = (0.005, 0.02)
"""Pneumothorax size by ground-truth share of the image: small < 0.5%, medium 0.5–2%, large ≥ 2%."""
SIZE_BUCKETS = ("small", "medium", "large")


@dataclass
class System:
    """One row of the ablation: which outputs, whether the classifier gates, its post-processing."""

    key: str
    name: str
    variant: str | None
    """Output variant scored (None: the all-empty baseline)."""
    gated: bool
    post: PostprocessConfig | None = None
    """Tuned on validation for this system (None: baseline, or its variant was not evaluated)."""
    tuned: TuneResult | None = None
    """The grid search that chose ``post`` (what ``pneumoseg tune`` saves)."""
    note: str = ""
    oracle: bool = False
    """The ground truth gates instead of the classifier: a ceiling for the segmenter, not a system."""

    @property
    def validation_dice(self) -> float | None:
        """Mean Dice of ``post`` on the validation outputs it was tuned on (optimistic)."""
        return self.tuned.mean_dice if self.tuned else None

    def post_json(self) -> dict[str, Any] | None:
        """``post`` as JSON, without a classifier threshold when nothing is gated."""
        if self.post is None:
            return None
        return self.post.model_dump(mode="json", exclude=None if self.gated else {"cls_threshold"})

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "system": self.name, "variant": self.variant, "gated": self.gated,
                "oracle": self.oracle, "postprocess": self.post_json(), "validation_dice": self.validation_dice,
                "note": self.note}

    def outputs(self, outputs: dict[str, ModelOutputs]) -> ModelOutputs | None:
        """The outputs this system is tuned and scored on (None: baseline, or not evaluated)."""
        out = outputs.get(self.variant) if self.variant else None
        if out is None or not self.oracle:
            return out
        return dataclasses.replace(out, cls_prob=out.truth_positive.astype(np.float32))

    @property
    def checkpoint(self) -> str:
        return (self.variant or "-").partition("+")[0]

    @property
    def tta(self) -> bool:
        return bool(self.variant and self.variant.endswith("+tta"))


def tta_key(outputs: dict[str, ModelOutputs]) -> str | None:
    """The TTA variant present in ``outputs`` ("swa+tta", else "best+tta"), or None."""
    return next((k for k in ("swa+tta", "best+tta") if k in outputs), None)


def final_key(outputs: dict[str, ModelOutputs]) -> str:
    """The segmenter the talk ships: the SWA checkpoint when there is one, else best."""
    return "swa" if "swa" in outputs else "best"


def check_outputs(outputs: dict[str, ModelOutputs]) -> ModelOutputs:
    """The "best" variant, after checking every variant covers the same images."""
    if "best" not in outputs:
        raise ValueError("outputs need the 'best' variant (best checkpoint with classifier probabilities)")
    unknown = set(outputs) - {"best", "swa", "swa+tta", "best+tta"}
    if unknown:
        raise ValueError(f"unknown output variants {sorted(unknown)}")
    base = outputs["best"]
    for key, out in outputs.items():
        if out.image_ids != base.image_ids:
            raise ValueError(f"variant {key!r} was evaluated on other images than 'best'")
    return base


def system_list(outputs: dict[str, ModelOutputs]) -> list[System]:
    """The talk's ablation: all-empty, segmentation alone (the final segmenter, no gate),
    two-stage (best), two-stage + SWA, two-stage + SWA + hflip TTA (+ TTA on best without SWA);
    then the final segmenter behind a perfect gate (the ground truth), which says how much of
    the gap to a perfect score is the classifier's and how much the segmenter's."""
    final = final_key(outputs)
    no_swa = "the run has no swa.safetensors"
    systems = [System("all_empty", "all-empty baseline", None, gated=False),
               System("seg_alone", f"segmentation alone ({'SWA' if final == 'swa' else 'best'})", final, gated=False),
               System("two_stage", "two-stage (best)", "best", gated=True),
               System("two_stage_swa", "two-stage + SWA", "swa", gated=True, note=no_swa)]
    if tta_key(outputs) == "best+tta":
        systems.append(System("two_stage_tta", "two-stage + hflip TTA (best; no SWA)", "best+tta", gated=True))
    else:
        systems.append(System("two_stage_swa_tta", "two-stage + SWA + hflip TTA", "swa+tta", gated=True,
                              note="not evaluated: --no-tta" if "swa" in outputs else no_swa))
    systems.append(System("oracle_gate", f"perfect gate + {'SWA' if final == 'swa' else 'best'} (ceiling)", final,
                          gated=True, oracle=True))
    return systems


def final_system(systems: list[System]) -> System:
    """The two-stage system ``pneumoseg predict`` runs by default (SWA when there is one)."""
    by_key = {s.key: s for s in systems}
    swa = by_key["two_stage_swa"]
    return swa if swa.post is not None else by_key["two_stage"]


def tune_systems(validation: dict[str, ModelOutputs], grid: TuneGrid | None = None) -> list[System]:
    """Every system with its own post-processing, chosen on the validation outputs."""
    check_outputs(validation)
    systems = system_list(validation)
    for system in systems:
        out = system.outputs(validation)
        if out is None:
            continue
        if system.gated and out.cls_prob is None:
            system.note = "no classifier probabilities"
            continue
        system.tuned = tune_postprocess(out, grid, gated=system.gated)
        system.post, system.note = PostprocessConfig(**system.tuned.params), ""
    return systems


def size_buckets(out: ModelOutputs) -> np.ndarray:
    """Per image: "negative" (no ground truth at the evaluation size), else "small", "medium" or
    "large" by the ground truth's share of the full-resolution image (:data:`SIZE_CUTS`)."""
    buckets = np.array(SIZE_BUCKETS, dtype=object)[np.searchsorted(SIZE_CUTS, out.truth_fraction, side="right")]
    return np.where(out.truth_positive, buckets, "negative")


def size_cut_pixels() -> list[int]:
    """:data:`SIZE_CUTS` in pixels at 1024×1024."""
    return [math.ceil(cut * REFERENCE_SIZE**2) for cut in SIZE_CUTS]


def dice_by_size(dice: np.ndarray, buckets: np.ndarray,
                 names: tuple[str, ...] = SIZE_BUCKETS) -> dict[str, dict[str, Any]]:
    """Mean Dice and image count per bucket (mean None for an empty bucket)."""
    result = {}
    for bucket in names:
        chosen = dice[buckets == bucket]
        result[bucket] = {"mean_dice": float(chosen.mean()) if chosen.size else None, "n": int(chosen.size)}
    return result


def false_positives_on_healthy(masks: np.ndarray, truth_positive: np.ndarray) -> dict[str, Any]:
    """How many truth-negative images got a non-empty mask: ``n`` of ``of``, and the share."""
    healthy = ~np.asarray(truth_positive)
    fired = masks.reshape(len(masks), -1).any(axis=1) & healthy
    n, of = int(fired.sum()), int(healthy.sum())
    return {"n": n, "of": of, "rate": n / of if of else None}


def _interval(mean_lo_hi: tuple[float, float, float]) -> dict[str, float]:
    mean, lo, hi = mean_lo_hi
    return {"mean": mean, "lo": lo, "hi": hi}


def _system_masks(outputs: dict[str, ModelOutputs], system: System) -> np.ndarray | None:
    """The system's final masks on ``outputs`` (None when it cannot be scored there)."""
    if system.variant is None:
        return np.zeros(outputs["best"].truth.shape, bool)
    out = system.outputs(outputs)
    if system.post is None or out is None:
        return None
    return predicted_masks(out, system.post, gated=system.gated)


def ablation_rows(outputs: dict[str, ModelOutputs], systems: list[System]) -> list[dict[str, Any]]:
    """Every system scored on ``outputs`` (any split) with its own post-processing.

    Per row: mean Dice and its 95% interval, the difference to all-empty and to segmentation
    alone with paired-bootstrap 95% intervals over images, the healthy films given a mask and
    Dice by pneumothorax size. A system without post-processing gives ``mean_dice`` None.
    """
    return _scored(outputs, systems, truth_measurements(check_outputs(outputs)))[0]


def _scored(outputs: dict[str, ModelOutputs], systems: list[System],
            truths: list[Measurement]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """:func:`ablation_rows`, and each scored system's masks (by key)."""
    base = check_outputs(outputs)
    buckets, bts = size_buckets(base), bts_classes(truths)
    masks = {s.key: m for s in systems if (m := _system_masks(outputs, s)) is not None}
    dice = {key: dice_scores(m, base.truth) for key, m in masks.items()}
    rows = []
    for s in systems:
        row = {"key": s.key, "system": s.name, "checkpoint": s.checkpoint, "gated": s.gated, "tta": s.tta,
               "oracle": s.oracle,
               "n_images": len(base.image_ids), "talk": TALK_ABLATION.get(s.key),
               "postprocess": s.post_json(), "note": s.note,
               "mean_dice": None, "ci": None, "delta_vs_empty": None, "delta_vs_seg_alone": None,
               "fp_healthy": None, "by_size": None, "by_bts": None}
        if s.key not in dice:
            row["note"] = s.note or f"variant {s.variant!r} not evaluated"
        else:
            mine = dice[s.key]
            mean, lo, hi = paired_bootstrap(mine, np.zeros_like(mine))
            row.update(mean_dice=mean, ci=[lo, hi], note="", fp_healthy=false_positives_on_healthy(
                masks[s.key], base.truth_positive), by_size=dice_by_size(mine, buckets),
                by_bts=dice_by_size(mine, bts, BTS_CLASSES))
            for field, other in (("delta_vs_empty", "all_empty"), ("delta_vs_seg_alone", "seg_alone")):
                if s.key != other and other in dice:
                    row[field] = _interval(paired_bootstrap(mine, dice[other]))
        rows.append(row)
    return rows, masks


def split_summary(outputs: dict[str, ModelOutputs], systems: list[System]) -> dict[str, Any]:
    """One split's table with what it was measured on."""
    base = check_outputs(outputs)
    truths = truth_measurements(base)
    buckets, bts = size_buckets(base), bts_classes(truths)
    rows, masks = _scored(outputs, systems, truths)
    final = final_system(systems)
    rim = None if final.key not in masks else {"system": final.name, **rim_agreement(base, masks[final.key], truths)}
    return {"n_images": len(base.image_ids), "n_positive": int(base.truth_positive.sum()), "eval_size": base.size,
            "n_by_size": {b: int((buckets == b).sum()) for b in SIZE_BUCKETS},
            "n_by_bts": {b: int((bts == b).sum()) for b in (*BTS_CLASSES, "unknown")},
            "rows": rows, "rim": rim}


def classifier_summary(out: ModelOutputs, threshold: float) -> dict[str, Any]:
    """MCC, precision, recall, accuracy and ROC-AUC at ``threshold`` on every image of ``out``."""
    y = out.truth_positive
    result: dict[str, Any] = {"threshold": threshold, "n_images": int(y.size), "n_positive": int(y.sum()),
                              "talk": dict(TALK_CLASSIFIER)}
    if out.cls_prob is None or y.size == 0:
        result.update(metrics=None, note="no classifier probabilities")
        return result
    result["metrics"] = classification_metrics(y, out.cls_prob, threshold)
    if not (y.any() and not y.all()):
        result["note"] = "the validation split holds one class only: no ROC-AUC, ROC or PR curve"
    return result


def _mask_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    if len(truth) == 0:
        return {"iou": None, "f1": None, "f2": None}
    return {"iou": float(iou_scores(pred, truth).mean()), "f1": float(dice_scores(pred, truth).mean()),
            "f2": float(fbeta_scores(pred, truth, 2.0).mean())}


def segmenter_summary(outputs: dict[str, ModelOutputs], post: PostprocessConfig) -> dict[str, Any]:
    """IoU, F1 and F2 (means over images) on the images with pneumothorax.

    For each variant: the raw masks (p > 0.5, as training validation measures them) and the
    post-processed masks (``post``'s rule, without the classifier gate: the segmenter alone).
    """
    base = check_outputs(outputs)
    positive = base.truth_positive
    rows = []
    for key in ("best", "swa", "swa+tta", "best+tta"):
        out = outputs.get(key)
        if out is None:
            continue
        truth = out.truth[positive]
        raw = out.seg_prob[positive] > RAW_THRESHOLD
        final = predicted_masks(out, post, gated=False)[positive] if positive.any() else raw
        checkpoint, _, tta = key.partition("+")
        for masks, pred in (("raw", raw), ("post-processed", final)):
            rows.append({"checkpoint": checkpoint, "tta": bool(tta), "variant": key, "masks": masks,
                         **_mask_metrics(pred, truth)})
    return {"n_images": int(positive.sum()), "raw_threshold": RAW_THRESHOLD, "rows": rows,
            "talk": dict(TALK_SEGMENTER)}


def dice_surface(out: ModelOutputs, post: PostprocessConfig, *, pixel_thresholds: list[float] | None = None,
                 min_areas: list[float] | None = None) -> dict[str, Any]:
    """Mean Dice of the threshold rule over pixel threshold × min_area, gated at ``post.cls_threshold``.

    The axes default to :class:`TuneGrid`'s, with the chosen values added (when the chosen rule
    is the threshold rule; with the triplet rule the grid is shown for comparison, nothing chosen).
    """
    grid = TuneGrid()
    threshold_rule = post.rule == "threshold"
    chosen = {"pixel_threshold": float(post.pixel_threshold), "min_area": float(post.min_area)} if threshold_rule else None
    pts = sorted(set(pixel_thresholds or grid.pixel_thresholds) | ({chosen["pixel_threshold"]} if chosen else set()))
    mas = sorted(set(min_areas or grid.min_areas) | ({chosen["min_area"]} if chosen else set()))
    per_image = threshold_dice_grid(out, pts, mas)
    cls = [post.cls_threshold] if out.cls_prob is not None else None
    surface = gated_mean_dice(per_image, out, cls)
    surface = surface[0] if cls else surface
    return {"pixel_thresholds": pts, "min_areas": mas, "mean_dice": surface.astype(float).tolist(),
            "cls_threshold": post.cls_threshold if cls else None, "gated": cls is not None,
            "chosen": chosen, "rule": post.rule,
            "all_empty": float((~out.truth_positive).mean()) if len(out.image_ids) else math.nan}


def select_panel_cases(out: ModelOutputs, post: PostprocessConfig, *, max_rows: int = 6) -> list[dict[str, Any]]:
    """Best, median and worst images by final (gated, post-processed) Dice among the images that
    are positive in truth or in the prediction: two of each when there are >= 6 candidates
    (``max_rows`` >= 6), one of each with >= 3, else all. Ordered from the best to the worst."""
    masks = predicted_masks(out, post, gated=True)
    dice = dice_scores(masks, out.truth)
    candidates = np.flatnonzero(out.truth_positive | masks.reshape(len(masks), -1).any(axis=1))
    if len(candidates) == 0:
        return []
    order = sorted(candidates.tolist(), key=lambda i: (dice[i], out.image_ids[i]))  # worst first
    k, per_group = len(order), (2 if max_rows >= 6 and len(order) >= 6 else 1)
    if k < 3:
        picks = [("best" if j == k - 1 else "worst", order[j]) for j in reversed(range(k))]
    else:
        mid = (k - per_group) // 2
        picks = ([("best", i) for i in reversed(order[k - per_group:])]
                 + [("median", i) for i in reversed(order[mid:mid + per_group])]
                 + [("worst", i) for i in reversed(order[:per_group])])
    return [{"index": int(i), "image_id": out.image_ids[i], "case": kind, "dice": float(dice[i]),
             "truth_positive": bool(out.truth_positive[i]), "predicted_positive": bool(masks[i].any()),
             "cls_prob": None if out.cls_prob is None else float(out.cls_prob[i])} for kind, i in picks]
