"""Scoring a submission CSV against a truth CSV with the SIIM mean Dice.

Every truth image is scored; one absent from the submission counts as an empty prediction
(and as missing). Images only in the submission are ignored in the score and counted as
extra. Masks are compared as sets of pixel indices, so an empty side costs nothing and no
1024×1024 array is built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pneumoseg.data.labels import ImageLabel, LabelSet, label_pixels, read_labels
from pneumoseg.data.rle import RleFormat
from pneumoseg.metrics import MaskCounts, classification_metrics, fbeta_from_counts

PER_IMAGE_COLUMNS = (
    "image_id",
    "dice",
    "truth_positive",
    "pred_positive",
    "truth_px",
    "pred_px",
    "missing",
)


@dataclass
class Evaluation:
    """Per-image results of a submission, and the ImageIds it had that the truth has not."""

    per_image: pd.DataFrame  # columns PER_IMAGE_COLUMNS, one row per truth image, in truth order
    n_extra: int
    multi_row: dict[str, list[int]] = field(default_factory=dict)
    """Submission ImageIds on more than one row (their lines): their masks were unioned."""

    def warnings(self, pred_csv: str | os.PathLike[str]) -> list[str]:
        """One line per problem of the submission that the score tolerated."""
        if not self.multi_row:
            return []
        image_id, lines = next(iter(self.multi_row.items()))
        return [f"{pred_csv}: {len(self.multi_row)} ImageId(s) on more than one row (e.g. {image_id} at lines "
                f"{', '.join(map(str, lines))}); their masks were unioned, as a label file's instances are, but a "
                "submission should have one row per image"]

    def summary(self) -> dict[str, float | int]:
        """The score and what it is made of, to read against ``all_empty_baseline``.

        ``detection_*`` rate the prediction of which images have any pneumothorax.
        """
        table = self.per_image
        truth_positive = table["truth_positive"].to_numpy()
        pred_positive = table["pred_positive"].to_numpy()
        dice = table["dice"].to_numpy()
        detection = classification_metrics(truth_positive, pred_positive.astype(float))
        return {
            "mean_dice": float(dice.mean()),
            "n_images": len(table),
            "n_missing": int(table["missing"].sum()),
            "n_extra": self.n_extra,
            "n_multi_row": len(self.multi_row),
            "n_truth_positive": int(truth_positive.sum()),
            "n_pred_positive": int(pred_positive.sum()),
            "mean_dice_positive": _mean_or_nan(dice[truth_positive]),
            "mean_dice_negative": _mean_or_nan(dice[~truth_positive]),
            "all_empty_baseline": float((~truth_positive).mean()),
            "detection_precision": detection["precision"],
            "detection_recall": detection["recall"],
            "detection_mcc": detection["mcc"],
            "detection_accuracy": detection["accuracy"],
        }


def evaluate_submission(
    pred_csv: str | os.PathLike[str],
    truth_csv: str | os.PathLike[str],
    *,
    shape: tuple[int, int] = (1024, 1024),
    fmt: RleFormat = "relative",
) -> Evaluation:
    """Score ``pred_csv`` against ``truth_csv`` (any SIIM CSV variant) image by image."""
    truth = read_labels(truth_csv, shape=shape, fmt=fmt)
    pred = read_labels(pred_csv, shape=shape, fmt=fmt)
    rows = [
        _score_image(label, pred.images.get(label.image_id), shape, fmt)
        for label in truth.images.values()
    ]
    per_image = pd.DataFrame(rows, columns=["image_id", "truth_px", "pred_px", "overlap", "missing"])
    overlap, pred_px, truth_px = (per_image[c].to_numpy() for c in ("overlap", "pred_px", "truth_px"))
    per_image["dice"] = fbeta_from_counts(MaskCounts(overlap, pred_px, truth_px), beta=1.0)
    per_image["truth_positive"] = per_image["truth_px"] > 0
    per_image["pred_positive"] = per_image["pred_px"] > 0
    return Evaluation(per_image[list(PER_IMAGE_COLUMNS)], n_extra=_count_extra(pred, truth), multi_row=pred.multi_row)


def format_summary(summary: dict[str, float | int]) -> str:
    """The summary as an aligned two-column text table for the terminal."""
    width = max(map(len, summary))
    return "\n".join(f"{name:<{width}}  {_format_value(value)}" for name, value in summary.items())


def _score_image(
    truth: ImageLabel, pred: ImageLabel | None, shape: tuple[int, int], fmt: RleFormat
) -> tuple[str, int, int, int, bool]:
    """``(image_id, truth_px, pred_px, overlap, missing)`` from the masks' pixel indices."""
    truth_pixels = label_pixels(truth, shape, fmt)
    pred_pixels = label_pixels(pred, shape, fmt) if pred is not None else truth_pixels[:0]
    overlap = _count_common(truth_pixels, pred_pixels)
    return truth.image_id, truth_pixels.size, pred_pixels.size, overlap, pred is None


def _count_common(sorted_a: np.ndarray, sorted_b: np.ndarray) -> int:
    """How many values two sorted arrays of distinct integers share (binary search)."""
    if not (sorted_a.size and sorted_b.size):
        return 0
    positions = np.minimum(np.searchsorted(sorted_b, sorted_a), sorted_b.size - 1)
    return int(np.count_nonzero(sorted_b[positions] == sorted_a))


def _count_extra(pred: LabelSet, truth: LabelSet) -> int:
    return sum(image_id not in truth for image_id in pred.images)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _format_value(value: float | int) -> str:
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "n/a" if math.isnan(value) else f"{value:.4f}"
