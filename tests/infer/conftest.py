"""Tiny trained runs (64 px, timm test networks) for the inference tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pneumoseg.train.stages import train_classifier, train_segmenter


@dataclass(frozen=True)
class TinyRuns:
    images: Path
    labels: Path
    cls: Path
    seg: Path


@pytest.fixture(scope="session")
def tiny_runs(tiny_data, tiny_config, tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    root = tmp_path_factory.mktemp("tiny-runs")
    config = tiny_config("classifier.epochs=1")
    train_classifier(tiny_data.images, tiny_data.labels, config, root / "cls", progress=False,
                     splits_path=root / "splits.json")
    train_segmenter(tiny_data.images, tiny_data.labels, config, root / "seg", progress=False,
                    splits_path=root / "splits.json")
    return TinyRuns(tiny_data.images, tiny_data.labels, root / "cls", root / "seg")
