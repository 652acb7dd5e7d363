"""Choosing post-processing on the validation split (nnU-Net style), saved next to the segmenter.

The classifier threshold, the pixel threshold and ``min_area`` (and the triplet rule's
top/min_area/bottom) are chosen by SIIM mean Dice over a grid, scored from
:class:`~pneumoseg.infer.outputs.ModelOutputs` without running a model again. Each system is
tuned for itself: the two-stage pipeline (with the classifier gate) is saved as
``postprocess.json``, segmentation alone (no gate) as ``postprocess-seg-only.json``; ``pneumoseg
predict`` (and ``predict --seg-only``) pick them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.infer.postprocess import component_areas, scaled_min_area
from pneumoseg.runs.postprocess import write_postprocess


@dataclass
class TuneGrid:
    cls_thresholds: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    pixel_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    min_areas: list[float] = field(default_factory=lambda: [0, 250, 500, 1000, 2000, 3500, 5000])
    tops: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8, 0.9])
    bottoms: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5])


def _dice(overlap: np.ndarray, pred_px: np.ndarray, truth_px: np.ndarray) -> np.ndarray:
    """SIIM Dice from pixel counts (1 when both masks are empty), as evaluate.metrics defines it."""
    denom = pred_px + truth_px
    return np.where(denom == 0, 1.0, 2.0 * overlap / np.maximum(denom, 1))


def threshold_dice_grid(out: ModelOutputs, pixel_thresholds: list[float], min_areas: list[float]) -> np.ndarray:
    """Dice of the threshold rule for every image × pixel threshold × min_area: (N, P, M).

    Connected components are labelled once per (image, threshold) and filtered per min_area.
    """
    n, size = len(out.image_ids), out.size
    grid = np.zeros((n, len(pixel_thresholds), len(min_areas)), np.float32)
    min_pixels = np.array([scaled_min_area(a, (size, size)) for a in min_areas])
    truth_px = out.truth.reshape(n, -1).sum(axis=1)
    for i in range(n):
        prob = out.seg_prob[i].astype(np.float32)
        for p, threshold in enumerate(pixel_thresholds):
            labels, areas = component_areas(prob > threshold)
            overlap_per_label = np.bincount(labels[out.truth[i]], minlength=len(areas))
            keep = areas[None, 1:] >= min_pixels[:, None]  # (M, components)
            pred_px = (keep * areas[None, 1:]).sum(axis=1)
            overlap = (keep * overlap_per_label[None, 1:]).sum(axis=1)
            grid[i, p] = _dice(overlap, pred_px, truth_px[i])
    return grid


def triplet_dice_grid(out: ModelOutputs, tops: list[float], min_areas: list[float],
                      bottoms: list[float]) -> np.ndarray:
    """Dice of the triplet rule for every image × top × min_area × bottom: (N, T, M, B)."""
    n, size = len(out.image_ids), out.size
    flat = out.seg_prob.reshape(n, -1).astype(np.float32)
    min_pixels = np.array([scaled_min_area(a, (size, size)) for a in min_areas])
    over_top = np.stack([(flat > t).sum(axis=1) for t in tops], axis=1)  # (N, T)
    keep = over_top[:, :, None] >= min_pixels[None, None, :]  # (N, T, M)
    truth = out.truth.reshape(n, -1)
    truth_px = truth.sum(axis=1)
    over_bottom = [flat > b for b in bottoms]
    bottom_dice = np.stack([_dice((pred & truth).sum(axis=1), pred.sum(axis=1), truth_px)
                            for pred in over_bottom], axis=1)  # (N, B)
    empty_dice = (truth_px == 0).astype(np.float32)  # (N,)
    return np.where(keep[..., None], bottom_dice[:, None, None, :], empty_dice[:, None, None, None])


def gated_mean_dice(per_image: np.ndarray, out: ModelOutputs, cls_thresholds: list[float] | None) -> np.ndarray:
    """Mean Dice over images when images below the classifier threshold are predicted empty.

    ``per_image`` has the image axis first; the result gets a leading axis per threshold (or
    none when ``cls_thresholds`` is None: segmentation alone).
    """
    if cls_thresholds is None:
        return per_image.mean(axis=0)
    empty = (~out.truth_positive).astype(np.float32).reshape((-1,) + (1,) * (per_image.ndim - 1))
    return np.stack([np.where((out.cls_prob >= t).reshape(empty.shape), per_image, empty).mean(axis=0)
                     for t in cls_thresholds])


def describe_params(params: dict[str, Any]) -> str:
    """One line for a post-processing setting, e.g. "classifier ≥ 0.5, p > 0.4, remove components < 500 px"."""
    gate = f"classifier ≥ {params['cls_threshold']:g}, " if params.get("cls_threshold") is not None else "no gate, "
    if params.get("rule") == "triplet":
        rule = f"triplet rule (top {params['top']:g}, min_area {params['min_area']:g}, bottom {params['bottom']:g})"
    else:
        rule = f"p > {params['pixel_threshold']:g}, remove components < {params['min_area']:g} px (at 1024²)"
    return gate + rule


@dataclass
class TuneResult:
    params: dict[str, Any]
    mean_dice: float
    candidates: dict[str, dict[str, Any]]
    all_empty: float
    n_images: int
    grid: TuneGrid
    gated: bool
    """Tuned for the two-stage pipeline (True) or for segmentation alone (False)."""
    source: dict[str, Any] | None = None
    """Where the outputs came from when not one validation split, e.g. ``{"out_of_fold": True,
    "n_folds": 5, "eval_size": 256}``."""

    def to_json(self) -> dict[str, Any]:
        return {"system": "two-stage" if self.gated else "segmentation alone", "params": self.params,
                "mean_dice": self.mean_dice, "all_empty_baseline": self.all_empty, "n_images": self.n_images,
                "candidates": self.candidates, "grid": {k: list(v) for k, v in vars(self.grid).items()},
                **({"source": self.source} if self.source else {})}

    def render(self) -> str:
        system = "two-stage" if self.gated else "segmentation alone (no classifier gate)"
        where = (f"out-of-fold images ({self.source['n_folds']} folds, each image predicted by the fold that did not "
                 f"train on it)" if self.source and self.source.get("out_of_fold") else "validation images")
        lines = [f"{system}, chosen on {self.n_images} {where}: rule {self.params['rule']}, "
                 f"{describe_params(self.params)}",
                 f"mean Dice {self.mean_dice:.4f} (all-empty baseline {self.all_empty:.4f})"]
        for name, cand in self.candidates.items():
            lines.append(f"  best {name} rule: {cand['mean_dice']:.4f}")
        return "\n".join(lines)


def _best(scores: np.ndarray, axes: list[list[float]]) -> tuple[float, list[float]]:
    index = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[index]), [axis[i] for axis, i in zip(axes, index)]


def tune_postprocess(out: ModelOutputs, grid: TuneGrid | None = None, *, rule: str = "best",
                     gated: bool = True) -> TuneResult:
    """Pick the post-processing with the highest SIIM mean Dice on ``out``.

    ``rule``: "threshold", "triplet" or "best" (whichever scores higher). With ``gated`` False
    (or no classifier outputs) the segmenter runs alone and no classifier threshold is chosen.
    """
    grid = grid or TuneGrid()
    cls_axis = grid.cls_thresholds if gated and out.cls_prob is not None else None
    gate_names = ["cls_threshold"] if cls_axis else []
    candidates: dict[str, dict[str, Any]] = {}
    if rule in {"best", "threshold"}:
        scores = gated_mean_dice(threshold_dice_grid(out, grid.pixel_thresholds, grid.min_areas), out, cls_axis)
        dice, values = _best(scores, ([cls_axis] if cls_axis else []) + [grid.pixel_thresholds, grid.min_areas])
        candidates["threshold"] = {"mean_dice": dice, **dict(zip(gate_names + ["pixel_threshold", "min_area"], values))}
    if rule in {"best", "triplet"}:
        scores = gated_mean_dice(triplet_dice_grid(out, grid.tops, grid.min_areas, grid.bottoms), out, cls_axis)
        dice, values = _best(scores, ([cls_axis] if cls_axis else []) + [grid.tops, grid.min_areas, grid.bottoms])
        candidates["triplet"] = {"mean_dice": dice, **dict(zip(gate_names + ["top", "min_area", "bottom"], values))}
    chosen = max(candidates, key=lambda name: candidates[name]["mean_dice"])
    params = {"rule": chosen, **{k: v for k, v in candidates[chosen].items() if k != "mean_dice"}}
    all_empty = float((~out.truth_positive).mean())
    return TuneResult(params, candidates[chosen]["mean_dice"], candidates, all_empty, len(out.image_ids), grid,
                      gated=cls_axis is not None)


def save_postprocess(result: TuneResult, seg_run: Path) -> Path:
    """Write ``result`` beside the segmenter: postprocess.json (two-stage) or postprocess-seg-only.json."""
    return write_postprocess(result.to_json(), seg_run, gated=result.gated)
