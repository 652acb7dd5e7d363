"""Tiny trained runs (64 px, one epoch each) for the inference tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pneumoseg.config import load_config
from pneumoseg.data.synth import generate_dataset
from pneumoseg.train.stages import train_classifier, train_segmenter

TINY = ["runtime.device=cpu", "classifier.image_size=64", "classifier.batch_size=4", "classifier.epochs=1",
        "segmenter.image_size=64", "segmenter.batch_size=4", "segmenter.epochs=2", "segmenter.frozen_epochs=1",
        "segmenter.swa_start=2", "segmenter.swa_end=2", "data.cache=false"]


@dataclass(frozen=True)
class TinyRuns:
    data: Path
    images: Path
    labels: Path
    cls: Path
    seg: Path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    root = tmp_path_factory.mktemp("tiny-runs")
    generate_dataset(root / "data", 24, test_n=6, seed=1, size=64, positive_rate=0.5, progress=False)
    images, labels = root / "data" / "dicom-images-train", root / "data" / "train-rle.csv"
    config = load_config("demo", TINY)
    train_classifier(images, labels, config, root / "cls", progress=False)
    train_segmenter(images, labels, config, root / "seg", progress=False)
    return TinyRuns(root / "data", images, labels, root / "cls", root / "seg")
