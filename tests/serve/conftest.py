"""Pipelines for the viewer tests: the tiny trained runs, forced positive, forced negative, or
replaying the real sample's ground-truth masks (to see how a true finding looks)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.rle import rle_decode
from pneumoseg.infer.pipeline import Prediction, TwoStagePipeline, build_torch_pipeline


@pytest.fixture(scope="session")
def pipeline(tiny_runs) -> TwoStagePipeline:
    return build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)


def with_post(pipeline: TwoStagePipeline, **update) -> TwoStagePipeline:
    return replace(pipeline, post=pipeline.post.model_copy(update=update))


@pytest.fixture(scope="session")
def positive_pipeline(pipeline) -> TwoStagePipeline:
    """Every image gated in and every pixel over threshold: the whole image is outlined."""
    return with_post(pipeline, cls_threshold=0.0, pixel_threshold=-1.0, min_area=0, rule="threshold")


@pytest.fixture(scope="session")
def negative_pipeline(pipeline) -> TwoStagePipeline:
    """The classifier gate never opens: nothing is outlined."""
    return with_post(pipeline, cls_threshold=1.1)


@dataclass
class TruthPipeline:
    """Stands in for a trained pipeline: answers the published label of each sample image
    (found by its pixels), with a fixed probability."""

    masks: dict[bytes, np.ndarray]
    probability: float = 0.93

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        return [Prediction(self.probability, True, None, self.masks[_key(image)]) for image in images]


def _key(pixels: np.ndarray) -> bytes:
    return np.ascontiguousarray(pixels[::64, ::64]).tobytes()


@pytest.fixture(scope="session")
def truth_pipeline(sample_dir: Path, sample_dicoms: list[Path]) -> TruthPipeline:
    labels = {}
    for line in (sample_dir / "train-rle-sample.csv").read_text(encoding="utf-8-sig").splitlines():
        image_id, rle = line.split(",", 1)
        labels[image_id.strip()] = rle_decode(rle.strip())
    images = [read_dicom(path) for path in sample_dicoms]
    return TruthPipeline({_key(im.pixels): labels[im.image_id] for im in images if im.image_id in labels})


@pytest.fixture(scope="session")
def positive_sample(sample_dir: Path, sample_dicoms: list[Path]) -> Path:
    """A sample DICOM whose published label marks a pneumothorax."""
    positives = [line.split(",")[0].strip() for line in
                 (sample_dir / "train-rle-sample.csv").read_text(encoding="utf-8-sig").splitlines()
                 if line.split(",", 1)[1].strip() != "-1"]
    return next(path for path in sample_dicoms if path.stem == positives[-1])
