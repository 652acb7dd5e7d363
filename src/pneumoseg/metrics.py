"""Segmentation and classification metrics, with the SIIM conventions for empty masks.

Mask metrics follow the competition: a score is 1.0 when prediction and truth are both
empty (a correct "no pneumothorax") and 0.0 when exactly one is. Every mask metric is
computed from three counts per image (overlap, predicted pixels, true pixels), so the single
and batched versions, the accumulator and submission scoring share one formula each.

Classifier metrics wrap scikit-learn, with the degenerate cases defined instead of warned
about: ROC AUC is NaN when only one class is present, precision is 0 when nothing is
predicted positive, recall is 0 when nothing is truly positive.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from sklearn import metrics as skm


class MaskCounts(NamedTuple):
    """Per-image pixel counts: overlap |P∩T|, predicted |P| and true |T|."""

    overlap: np.ndarray
    pred: np.ndarray
    truth: np.ndarray


def mask_counts(pred: np.ndarray, truth: np.ndarray) -> MaskCounts:
    """Counts for a batch of masks of shape (N, ...): one value per leading index."""
    pred, truth = _as_mask_batch(pred, truth)
    axes = tuple(range(1, pred.ndim))
    return MaskCounts(
        overlap=np.count_nonzero(pred & truth, axis=axes),
        pred=np.count_nonzero(pred, axis=axes),
        truth=np.count_nonzero(truth, axis=axes),
    )


def fbeta_from_counts(counts: MaskCounts, beta: float = 1.0) -> np.ndarray:
    """F-beta = (1+β²)|P∩T| / (|P| + β²|T|), 1.0 where both masks are empty; β=1 is Dice."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    weight = beta**2
    denominator = counts.pred + weight * counts.truth
    return _ratio_or_one((1 + weight) * counts.overlap, denominator)


def iou_from_counts(counts: MaskCounts) -> np.ndarray:
    """IoU = |P∩T| / |P∪T|, 1.0 where both masks are empty."""
    return _ratio_or_one(counts.overlap, counts.pred + counts.truth - counts.overlap)


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice of mask batches shaped (N, ...), e.g. (N, H, W) or (N, 1, H, W)."""
    return fbeta_from_counts(mask_counts(pred, truth), beta=1.0)


def iou_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image IoU of mask batches shaped (N, ...)."""
    return iou_from_counts(mask_counts(pred, truth))


def fbeta_scores(pred: np.ndarray, truth: np.ndarray, beta: float) -> np.ndarray:
    """Per-image pixel-level F-beta of mask batches shaped (N, ...)."""
    return fbeta_from_counts(mask_counts(pred, truth), beta)


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of one pair of masks: 2|P∩T| / (|P|+|T|); 1.0 if both are empty."""
    return _one_image(dice_scores, pred, truth)


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU of one pair of masks; 1.0 if both are empty."""
    return _one_image(iou_scores, pred, truth)


def fbeta_score(pred: np.ndarray, truth: np.ndarray, beta: float) -> float:
    """Pixel-level F-beta of one pair of masks; 1.0 if both are empty."""
    return _one_image(lambda p, t: fbeta_scores(p, t, beta), pred, truth)


class SegmentationMetric:
    """Accumulates per-image mask scores over batches (MONAI's update/aggregate/reset style).

    ``aggregate()`` gives means over all images seen since the last ``reset()``: ``mean_dice``
    (the SIIM score), ``iou``, ``f1`` (equal to ``mean_dice``) and ``f2``, plus ``n_images``.
    """

    def __init__(self) -> None:
        self._batches: list[MaskCounts] = []

    def update(self, pred_batch: np.ndarray, truth_batch: np.ndarray) -> None:
        self._batches.append(mask_counts(pred_batch, truth_batch))

    def aggregate(self) -> dict[str, float]:
        if not self._batches:
            raise ValueError("no images to aggregate: call update() first")
        counts = MaskCounts(*(np.concatenate(column) for column in zip(*self._batches)))
        dice = fbeta_from_counts(counts, beta=1.0)
        return {
            "mean_dice": float(dice.mean()),
            "iou": float(iou_from_counts(counts).mean()),
            "f1": float(dice.mean()),
            "f2": float(fbeta_from_counts(counts, beta=2.0).mean()),
            "n_images": int(dice.size),
        }

    def reset(self) -> None:
        self._batches.clear()


class RocCurve(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrCurve(NamedTuple):
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def classification_metrics(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Binary classifier metrics at ``threshold`` (score >= threshold is positive).

    Returns mcc, precision, recall, accuracy, roc_auc and the confusion counts tp, fp, tn,
    fn. Never warns: see the module docstring for the degenerate cases.
    """
    y_true, y_score = _as_labels_and_scores(y_true, y_score)
    y_pred = (y_score >= threshold).astype(np.int8)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MCC of a constant prediction: sklearn returns 0
        mcc = skm.matthews_corrcoef(y_true, y_pred)
    return {
        "mcc": float(mcc),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc": _roc_auc_or_nan(y_true, y_score),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def roc_curve_points(y_true: np.ndarray, y_score: np.ndarray) -> RocCurve:
    """False- and true-positive rates over all thresholds (both classes must be present)."""
    y_true, y_score = _as_labels_and_scores(y_true, y_score)
    _require_both_classes(y_true, "a ROC curve")
    return RocCurve(*skm.roc_curve(y_true, y_score))


def pr_curve_points(y_true: np.ndarray, y_score: np.ndarray) -> PrCurve:
    """Precision and recall over all thresholds (both classes must be present)."""
    y_true, y_score = _as_labels_and_scores(y_true, y_score)
    _require_both_classes(y_true, "a precision-recall curve")
    precision, recall, thresholds = skm.precision_recall_curve(y_true, y_score)
    return PrCurve(precision, recall, thresholds)


def _one_image(
    batch_score: Callable[[np.ndarray, np.ndarray], np.ndarray], pred: np.ndarray, truth: np.ndarray
) -> float:
    """Score one pair of masks (any shape) as a batch of one."""
    return float(batch_score(np.asarray(pred)[None], np.asarray(truth)[None])[0])


def _ratio_or_one(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 1.0 where the denominator is 0 (both masks empty)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    ones = np.ones_like(numerator)
    return np.divide(numerator, denominator, out=ones, where=denominator > 0)


def _as_mask_batch(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if pred.ndim < 2:
        raise ValueError(f"expected masks shaped (N, ...) with N images, got shape {pred.shape}")
    return _as_bool(pred, "prediction"), _as_bool(truth, "truth")


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    """Bool or integer masks (nonzero = foreground); floats are refused, not guessed at."""
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask != 0
    raise TypeError(
        f"{name} mask must be bool or integer, got {mask.dtype}; threshold probabilities first"
    )


def _as_labels_and_scores(
    y_true: np.ndarray, y_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 1 or y_score.shape != y_true.shape:
        raise ValueError(
            "y_true and y_score must be 1-D of equal length, "
            f"got shapes {y_true.shape} and {y_score.shape}"
        )
    if y_true.size == 0:
        raise ValueError("no samples: y_true is empty")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0/1 or bool, got values {np.unique(y_true)[:5]}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score holds NaN or infinite values")
    return y_true.astype(np.int8), y_score


def _roc_auc_or_nan(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if not _has_both_classes(y_true):
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score))


def _require_both_classes(y_true: np.ndarray, what: str) -> None:
    if not _has_both_classes(y_true):
        raise ValueError(f"{what} needs both positive and negative samples in y_true")


def _has_both_classes(y_true: np.ndarray) -> bool:
    return bool(y_true.any() and not y_true.all())
