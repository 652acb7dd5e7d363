"""Fixtures for the training tests: a tiny synthetic SIIM dataset, CPU-sized configs, and one
recorded segmenter run that several tests inspect (frozen encoder, SWA, outputs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pneumoseg.config import Config, load_config
from pneumoseg.data.synth import generate_dataset
from pneumoseg.train import stages
from tests.train.recording import RecordedRun, recorded_fit

# Sized for a 2-core CPU: 64 px, 4 images a batch, a couple of epochs, and timm's tiny test
# networks (no download; ~5x cheaper than the demo's resnet18) -- the loop, not the network, is
# under test here. tests/models covers the preset architectures. One thread: on a busy 2-core
# machine two OpenMP threads wait on each other and tiny ops get 10x slower.
TINY_OVERRIDES = [
    "runtime.device=cpu",
    "runtime.threads=1",
    "classifier.arch=test_resnet",
    "segmenter.encoder=tu-test_resnet",
    "classifier.image_size=64",
    "classifier.batch_size=4",
    "classifier.epochs=2",
    "segmenter.image_size=64",
    "segmenter.batch_size=4",
    "segmenter.epochs=2",
    "segmenter.frozen_epochs=1",
    "segmenter.swa_start=2",
    "segmenter.swa_end=2",
]


@dataclass(frozen=True)
class TinyData:
    root: Path
    images: Path
    labels: Path


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Every test (and subprocess) uses a throw-away preprocessing cache, never ~/.cache."""
    path = tmp_path_factory.mktemp("pneumoseg-cache")
    old = os.environ.get("PNEUMOSEG_CACHE")
    os.environ["PNEUMOSEG_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PNEUMOSEG_CACHE", None)
    else:
        os.environ["PNEUMOSEG_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """24 synthetic 64×64 images, half positive: the 5:1 split holds both classes on each side."""
    root = tmp_path_factory.mktemp("tiny-siim")
    generate_dataset(root, 24, seed=0, size=64, positive_rate=0.5, progress=False)
    return TinyData(root, root / "dicom-images-train", root / "train-rle.csv")


@pytest.fixture
def fresh_labels(tiny_data: TinyData, tmp_path: Path) -> Path:
    """A copy of the labels CSV in a folder of its own, so that no splits.json sits beside it yet."""
    folder = tmp_path / "labels"
    folder.mkdir()
    return Path(shutil.copy(tiny_data.labels, folder / "train-rle.csv"))


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    """``tiny_config("segmenter.epochs=3", ...)``: the demo preset at test size plus overrides."""

    def make(*overrides: str) -> Config:
        return load_config("demo", [*TINY_OVERRIDES, *overrides])

    return make


@pytest.fixture(scope="session")
def seg_run(tiny_data: TinyData, tiny_config, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """One recorded segmenter run: 3 epochs, encoder frozen in epoch 1, SWA over epochs 2-3."""
    config = tiny_config("segmenter.epochs=3", "segmenter.frozen_epochs=1", "segmenter.swa_start=2",
                         "segmenter.swa_end=3")
    out = tmp_path_factory.mktemp("seg-run")
    with pytest.MonkeyPatch.context() as mp:
        return recorded_fit(mp, stages.train_segmenter, tiny_data.images, tiny_data.labels, config, out)
