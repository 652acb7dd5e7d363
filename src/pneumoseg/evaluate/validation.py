"""Model outputs on the validation split, and the SIIM mean Dice of post-processing choices.

``collect_validation_outputs`` runs the classifier and the segmenter (on every image, i.e.
without the gate) once; every combination of classifier threshold, pixel threshold and
``min_area`` is then scored from those arrays without running a model again. Scoring happens
at ``eval_size`` (the segmenter's input size, at most 512) with ``min_area`` scaled from
1024×1024, an approximation of the full-resolution score that makes grid searches cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from tqdm.auto import tqdm

from pneumoseg.data.datasets import Sample
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import label_mask
from pneumoseg.data.preprocess import resize_mask, resize_to_uint8
from pneumoseg.evaluate.metrics import dice_scores
from pneumoseg.infer.pipeline import ModelRunner
from pneumoseg.config import PostprocessConfig
from pneumoseg.infer.postprocess import component_areas, postprocess, resize_prob, scaled_min_area

MAX_EVAL_SIZE = 512


@dataclass
class ValidationOutputs:
    image_ids: list[str]
    images: np.ndarray
    """(N, S, S) uint8 X-rays at the evaluation size (for pictures)."""
    truth: np.ndarray
    """(N, S, S) bool ground truth."""
    seg_prob: np.ndarray
    """(N, S, S) float16 segmenter probabilities, every image segmented."""
    cls_prob: np.ndarray | None = None
    """(N,) classifier probabilities, None without a classifier."""

    @property
    def truth_positive(self) -> np.ndarray:
        return self.truth.reshape(len(self.truth), -1).any(axis=1)

    @property
    def size(self) -> int:
        return self.truth.shape[-1]


def collect_validation_outputs(samples: list[Sample], segmenter: ModelRunner, classifier: ModelRunner | None,
                               *, batch_size: int = 4, progress: bool = True) -> ValidationOutputs:
    size = min(segmenter.image_size, MAX_EVAL_SIZE)
    n = len(samples)
    images = np.zeros((n, size, size), np.uint8)
    truth = np.zeros((n, size, size), bool)
    seg_prob = np.zeros((n, size, size), np.float16)
    cls_prob = np.zeros(n, np.float32) if classifier is not None else None
    for start in tqdm(range(0, n, batch_size), desc="validation inference", unit="batch", disable=not progress):
        chunk = samples[start:start + batch_size]
        decoded = [read_dicom(s.path) for s in chunk]
        pixels = [d.pixels for d in decoded]
        for j, (sample, dicom) in enumerate(zip(chunk, decoded)):
            images[start + j] = resize_to_uint8(dicom.pixels, size)
            truth[start + j] = resize_mask(label_mask(sample.label, dicom.shape), size)
        for j, prob in enumerate(segmenter.probabilities(pixels)):
            seg_prob[start + j] = resize_prob(prob, (size, size))
        if cls_prob is not None:
            cls_prob[start:start + len(chunk)] = classifier.probabilities(pixels)
    return ValidationOutputs([s.image_id for s in samples], images, truth, seg_prob, cls_prob)


def threshold_dice_grid(out: ValidationOutputs, pixel_thresholds: list[float], min_areas: list[float]) -> np.ndarray:
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
            denom = pred_px + truth_px[i]
            grid[i, p] = np.where(denom == 0, 1.0, 2.0 * overlap / np.maximum(denom, 1))
    return grid


def triplet_dice_grid(out: ValidationOutputs, tops: list[float], min_areas: list[float],
                      bottoms: list[float]) -> np.ndarray:
    """Dice of the triplet rule for every image × top × min_area × bottom: (N, T, M, B)."""
    n, size = len(out.image_ids), out.size
    flat = out.seg_prob.reshape(n, -1).astype(np.float32)
    min_pixels = np.array([scaled_min_area(a, (size, size)) for a in min_areas])
    over_top = np.stack([(flat > t).sum(axis=1) for t in tops], axis=1)  # (N, T)
    keep = over_top[:, :, None] >= min_pixels[None, None, :]  # (N, T, M)
    truth = out.truth.reshape(n, -1)
    bottom_dice = np.stack([dice_scores(flat > b, truth) for b in bottoms], axis=1)  # (N, B)
    empty_dice = (~truth.any(axis=1)).astype(np.float32)  # (N,)
    return np.where(keep[..., None], bottom_dice[:, None, None, :], empty_dice[:, None, None, None])


def gated_mean_dice(per_image: np.ndarray, out: ValidationOutputs, cls_thresholds: list[float] | None) -> np.ndarray:
    """Mean Dice over images when images below the classifier threshold are predicted empty.

    ``per_image`` has the image axis first; the result gets a leading axis per threshold (or
    none when ``cls_thresholds`` is None: segmentation alone).
    """
    if cls_thresholds is None:
        return per_image.mean(axis=0)
    empty = (~out.truth_positive).astype(np.float32).reshape((-1,) + (1,) * (per_image.ndim - 1))
    return np.stack([np.where((out.cls_prob >= t).reshape(empty.shape), per_image, empty).mean(axis=0)
                     for t in cls_thresholds])


def recorded_splits(run_dir: Path) -> Path | None:
    """The splits.json a training run used (from its run.json), if recorded."""
    info = Path(run_dir) / "run.json"
    if not info.is_file():
        return None
    return Path(json.loads(info.read_text())["splits"])


def validation_outputs_from_runs(cls_run: Path | None, seg_run: Path, images: Path, labels: Path, *,
                                 splits_path: Path | None = None, fold: int = 0, checkpoint: str = "auto",
                                 tta: bool = False, device: str = "cpu", progress: bool = True) -> ValidationOutputs:
    """Run both trained models on the validation images of the split the segmenter was trained with."""
    from pneumoseg.config import load_config
    from pneumoseg.infer.pipeline import build_torch_pipeline
    from pneumoseg.train.stages import load_split

    pipeline = build_torch_pipeline(cls_run, seg_run, seg_checkpoint=checkpoint, tta=tta, device=device)
    config = load_config(Path(seg_run) / "config.yaml")
    splits_path = splits_path or recorded_splits(seg_run)
    samples = load_split(images, labels, config, fold=fold, splits_path=splits_path).val
    return collect_validation_outputs(samples, pipeline.segmenter, pipeline.classifier, progress=progress)


def predicted_masks(out: ValidationOutputs, post: PostprocessConfig, *, gated: bool = True) -> np.ndarray:
    """Final masks at the evaluation size for one post-processing setting, (N, S, S) bool."""
    masks = np.stack([postprocess(p.astype(np.float32), post) for p in out.seg_prob])
    if gated and out.cls_prob is not None:
        masks[out.cls_prob < post.cls_threshold] = False
    return masks


def per_image_dice(out: ValidationOutputs, post: PostprocessConfig, *, gated: bool = True) -> np.ndarray:
    """SIIM Dice per validation image for one post-processing setting (gated by the classifier)."""
    return dice_scores(predicted_masks(out, post, gated=gated), out.truth)
