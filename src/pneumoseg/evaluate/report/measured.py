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


def truth_bts_classes(out: ModelOutputs) -> np.ndarray:
    """Each image's BTS class by its ground truth: small, large, none (healthy) or unknown."""
    return np.array([_image_measurement(out.truth[i], _spacing(out, i)).bts_class for i in range(len(out.image_ids))],
                    dtype=object)


def rim_agreement(out: ModelOutputs, masks: np.ndarray) -> dict[str, Any]:
    """On the calibrated films positive in both truth and prediction: the true and measured
    lateral rim and apical distance (medians), their mean absolute error, and how often the
    predicted BTS class is the true one."""
    pairs = []
    for i in range(len(out.image_ids)):
        if not (out.truth[i].any() and masks[i].any()):
            continue
        true, measured = (_image_measurement(m, _spacing(out, i)) for m in (out.truth[i], masks[i]))
        if true.lateral_mm is not None:
            pairs.append((true, measured))
    summary: dict[str, Any] = {"n": len(pairs)}
    for field in ("lateral_mm", "apical_mm"):
        truth = np.array([getattr(t, field) for t, _ in pairs], float)
        got = np.array([getattr(m, field) for _, m in pairs], float)
        summary[field] = {"true_median": float(np.median(truth)) if pairs else None,
                          "measured_median": float(np.median(got)) if pairs else None,
                          "mean_abs_error": float(np.abs(got - truth).mean()) if pairs else None}
    summary["bts_agreement"] = sum(t.bts_class == m.bts_class for t, m in pairs)
    return summary
