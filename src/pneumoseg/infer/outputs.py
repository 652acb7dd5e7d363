"""Raw model outputs on labelled images, kept in memory so post-processing can be chosen and
scored without running a model again.

:func:`collect_outputs` runs the classifier and the segmenter (on every image, i.e. without
the gate) once over any list of labelled samples (a validation split, a held-out test set).
Everything is stored at ``eval_size`` (the segmenter's input size, at most 512); ``min_area``
is scaled from 1024×1024 when masks are scored at that size, an approximation of the
full-resolution score that makes grid searches cheap. The ground-truth area is also kept as a
share of the full-resolution image, to sort pneumothoraces by size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from pneumoseg.data.datasets import Sample
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import label_mask
from pneumoseg.data.preprocess import resize_mask, resize_to_uint8
from pneumoseg.infer.pipeline import ModelRunner
from pneumoseg.infer.postprocess import resize_prob

MAX_EVAL_SIZE = 512


@dataclass
class ModelOutputs:
    image_ids: list[str]
    images: np.ndarray
    """(N, S, S) uint8 X-rays at the evaluation size (for pictures)."""
    truth: np.ndarray
    """(N, S, S) bool ground truth."""
    seg_prob: np.ndarray
    """(N, S, S) float16 segmenter probabilities, every image segmented."""
    cls_prob: np.ndarray | None = None
    """(N,) classifier probabilities, None without a classifier."""
    truth_fraction: np.ndarray | None = None
    """(N,) share of the image the ground truth covers, measured at the label's own resolution;
    None (hand-made outputs): measured on ``truth``."""
    spacing: np.ndarray | None = None
    """(N, 2) mm per pixel (row, column) at the evaluation size, NaN where the header gives no
    calibration; None (hand-made outputs): uncalibrated."""

    def __post_init__(self) -> None:
        if self.truth_fraction is None:
            self.truth_fraction = self.truth.reshape(len(self.truth), -1).mean(axis=1) if len(self.truth) else np.zeros(0)

    @property
    def truth_positive(self) -> np.ndarray:
        return self.truth.reshape(len(self.truth), -1).any(axis=1)

    @property
    def size(self) -> int:
        return self.truth.shape[-1]


def collect_outputs(samples: list[Sample], segmenter: ModelRunner, classifier: ModelRunner | None, *,
                    batch_size: int = 4, desc: str = "inference", progress: bool = True,
                    size: int | None = None) -> ModelOutputs:
    """Both models' probabilities and the ground truth for every sample, at the evaluation size
    (``size``, else the segmenter's input size up to ``MAX_EVAL_SIZE``)."""
    size = size or min(segmenter.image_size, MAX_EVAL_SIZE)
    n = len(samples)
    images = np.zeros((n, size, size), np.uint8)
    truth = np.zeros((n, size, size), bool)
    truth_fraction = np.zeros(n, np.float64)
    seg_prob = np.zeros((n, size, size), np.float16)
    cls_prob = np.zeros(n, np.float32) if classifier is not None else None
    spacing = np.full((n, 2), np.nan)
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = samples[start:start + batch_size]
        decoded = [read_dicom(s.path) for s in chunk]
        pixels = [d.pixels for d in decoded]
        for j, (sample, dicom) in enumerate(zip(chunk, decoded)):
            full_truth = label_mask(sample.label, dicom.shape)
            images[start + j] = resize_to_uint8(dicom.pixels, size)
            truth[start + j] = resize_mask(full_truth, (size, size))
            truth_fraction[start + j] = full_truth.mean()
            if dicom.spacing is not None:  # the film is resized to size × size for evaluation
                spacing[start + j] = (dicom.spacing[0] * dicom.shape[0] / size, dicom.spacing[1] * dicom.shape[1] / size)
        for j, prob in enumerate(segmenter.probabilities(pixels)):
            seg_prob[start + j] = resize_prob(prob, (size, size))
        if cls_prob is not None:
            cls_prob[start:start + len(chunk)] = classifier.probabilities(pixels)
    return ModelOutputs([s.image_id for s in samples], images, truth, seg_prob, cls_prob, truth_fraction, spacing)
