"""Choosing post-processing on the validation split (nnU-Net style), saved as postprocess.json.

The classifier threshold, the pixel threshold and ``min_area`` (and the triplet rule's
top/min_area/bottom) are chosen by SIIM mean Dice over a grid; the winner is written next to
the segmenter run, where ``pneumoseg predict`` picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.evaluate.validation import (
    ValidationOutputs,
    gated_mean_dice,
    threshold_dice_grid,
    triplet_dice_grid,
)
from pneumoseg.io import atomic_write_json


@dataclass
class TuneGrid:
    cls_thresholds: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    pixel_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    min_areas: list[float] = field(default_factory=lambda: [0, 250, 500, 1000, 2000, 3500, 5000])
    tops: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8, 0.9])
    bottoms: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5])


@dataclass
class TuneResult:
    params: dict[str, Any]
    mean_dice: float
    candidates: dict[str, dict[str, Any]]
    all_empty: float
    n_images: int
    threshold_surface: np.ndarray
    """Mean Dice over pixel threshold × min_area at the chosen classifier threshold (for plots)."""
    grid: TuneGrid

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "mean_dice": self.mean_dice, "all_empty_baseline": self.all_empty,
                "n_images": self.n_images, "candidates": self.candidates,
                "grid": {k: list(v) for k, v in vars(self.grid).items()}}

    def render(self) -> str:
        p = self.params
        lines = [f"chosen on {self.n_images} validation images: rule {p['rule']}, classifier threshold "
                 f"{p['cls_threshold']}, " + (f"pixel threshold {p['pixel_threshold']}, min_area {p['min_area']}"
                                               if p["rule"] == "threshold" else
                                               f"top {p['top']}, min_area {p['min_area']}, bottom {p['bottom']}"),
                 f"mean Dice {self.mean_dice:.4f} (all-empty baseline {self.all_empty:.4f})"]
        for name, cand in self.candidates.items():
            lines.append(f"  best {name} rule: {cand['mean_dice']:.4f}")
        return "\n".join(lines)


def _best(scores: np.ndarray, axes: list[list[float]]) -> tuple[float, list[float]]:
    index = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[index]), [axis[i] for axis, i in zip(axes, index)]


def tune_postprocess(out: ValidationOutputs, grid: TuneGrid | None = None, *, rule: str = "best",
                     gated: bool = True) -> TuneResult:
    """Pick the post-processing with the highest SIIM mean Dice on ``out``.

    ``rule``: "threshold", "triplet" or "best" (whichever scores higher). With ``gated`` False
    (or no classifier outputs) the segmenter runs alone and no classifier threshold is chosen.
    """
    grid = grid or TuneGrid()
    cls_axis = grid.cls_thresholds if gated and out.cls_prob is not None else None
    candidates: dict[str, dict[str, Any]] = {}
    surfaces = {}
    if rule in {"best", "threshold"}:
        scores = gated_mean_dice(threshold_dice_grid(out, grid.pixel_thresholds, grid.min_areas), out, cls_axis)
        axes = ([cls_axis] if cls_axis else []) + [grid.pixel_thresholds, grid.min_areas]
        dice, values = _best(scores, axes)
        names = (["cls_threshold"] if cls_axis else []) + ["pixel_threshold", "min_area"]
        candidates["threshold"] = {"mean_dice": dice, **dict(zip(names, values))}
        surfaces["threshold"] = scores[cls_axis.index(values[0])] if cls_axis else scores
    if rule in {"best", "triplet"}:
        scores = gated_mean_dice(triplet_dice_grid(out, grid.tops, grid.min_areas, grid.bottoms), out, cls_axis)
        axes = ([cls_axis] if cls_axis else []) + [grid.tops, grid.min_areas, grid.bottoms]
        dice, values = _best(scores, axes)
        names = (["cls_threshold"] if cls_axis else []) + ["top", "min_area", "bottom"]
        candidates["triplet"] = {"mean_dice": dice, **dict(zip(names, values))}
    chosen = max(candidates, key=lambda name: candidates[name]["mean_dice"])
    params = {"rule": chosen, **{k: v for k, v in candidates[chosen].items() if k != "mean_dice"}}
    all_empty = float((~out.truth_positive).mean())
    surface = surfaces.get("threshold", np.zeros((0, 0)))
    return TuneResult(params, candidates[chosen]["mean_dice"], candidates, all_empty, len(out.image_ids), surface, grid)


def save_postprocess(result: TuneResult, seg_run: Path) -> Path:
    path = Path(seg_run) / "postprocess.json"
    atomic_write_json(path, result.to_json())
    return path
