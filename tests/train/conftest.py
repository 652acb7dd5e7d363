"""Fixtures for the training tests: one recorded segmenter run that several tests inspect
(frozen encoder, SWA, outputs). The tiny dataset and configs are in tests/conftest.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pneumoseg.train import stages
from tests.helpers import TinyData
from tests.train.recording import RecordedRun, recorded_fit

@pytest.fixture
def fresh_labels(tiny_data: TinyData, tmp_path: Path) -> Path:
    """A copy of the labels CSV in a folder of its own, so that no splits.json sits beside it yet."""
    folder = tmp_path / "labels"
    folder.mkdir()
    return Path(shutil.copy(tiny_data.labels, folder / "train-rle.csv"))


@pytest.fixture(scope="session")
def seg_run(tiny_data: TinyData, tiny_config, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """One recorded segmenter run: 3 epochs, encoder frozen in epoch 1, SWA over epochs 2-3."""
    config = tiny_config("segmenter.epochs=3", "segmenter.frozen_epochs=1", "segmenter.swa_start=2",
                         "segmenter.swa_end=3")
    out = tmp_path_factory.mktemp("seg-run")
    with pytest.MonkeyPatch.context() as mp:
        return recorded_fit(mp, stages.train_segmenter, tiny_data.images, tiny_data.labels, config, out)
