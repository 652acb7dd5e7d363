"""The report's clinical view: Dice by BTS size class of the ground truth, and how well the
final system's masks measure the lateral rim and apical distance (data.measurements), both
measured at the evaluation size with each film's calibration scaled to it."""

from __future__ import annotations

from typing import Any

import numpy as np

from pneumoseg.data.measurements import Measurement, measure_mask
from pneumoseg.infer.outputs import ModelOutputs

BTS_CLASSES = ("small", "large")


def _image_measurement(mask: np.ndarray, spacing: np.ndarray | None) -> Measurement:
    calibrated = spacing is not None and not np.isnan(spacing).any()
    return measure_mask(mask, tuple(float(v) for v in spacing) if calibrated else None)[0]


def _spacing(out: ModelOutputs, i: int) -> np.ndarray | None:
    return None if out.spacing is None else out.spacing[i]


def truth_measurements(out: ModelOutputs) -> list[Measurement]:
    """Each image's ground truth, measured (one image-level :class:`Measurement` each)."""
    return [_image_measurement(out.truth[i], _spacing(out, i)) for i in range(len(out.image_ids))]


def bts_classes(truths: list[Measurement]) -> np.ndarray:
    """Each image's BTS class by its ground truth: small, large, none (healthy) or unknown."""
    return np.array([m.bts_class for m in truths], dtype=object)


def rim_agreement(out: ModelOutputs, masks: np.ndarray, truths: list[Measurement] | None = None) -> dict[str, Any]:
    """On the calibrated films positive in both truth and prediction: the true and measured
    lateral rim and apical distance (medians), their mean absolute error, and how often the
    predicted BTS class is the true one. ``truths``: :func:`truth_measurements`, when known."""
    truths = truths if truths is not None else truth_measurements(out)
    pairs = []
    for i, true in enumerate(truths):
        if true.area_px and true.lateral_mm is not None and masks[i].any():  # a calibrated finding, outlined
            pairs.append((true, _image_measurement(masks[i], _spacing(out, i))))
    summary: dict[str, Any] = {"n": len(pairs)}
    for field in ("lateral_mm", "apical_mm"):
        truth = np.array([getattr(t, field) for t, _ in pairs], float)
        got = np.array([getattr(m, field) for _, m in pairs], float)
        summary[field] = {"true_median": float(np.median(truth)) if pairs else None,
                          "measured_median": float(np.median(got)) if pairs else None,
                          "mean_abs_error": float(np.abs(got - truth).mean()) if pairs else None}
    summary["bts_agreement"] = sum(t.bts_class == m.bts_class for t, m in pairs)
    return summary
