"""Shared fixtures: the real SIIM sample beside the checkout, and offline settings."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pneumoseg.config import Config, load_config
from pneumoseg.data.synth import generate_dataset
from pneumoseg.train.stages import train_classifier, train_segmenter
from tests.helpers import TINY_OVERRIDES, TinyData, TinyRuns

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("PNEUMOSEG_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "siim-sample"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real SIIM-ACR sample (11 DICOMs + label files); tests needing it skip when absent."""
    if not (SAMPLE_DIR / "dicom").is_dir():
        pytest.skip(f"real SIIM sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_dicoms(sample_dir: Path) -> list[Path]:
    return sorted((sample_dir / "dicom").glob("*.dcm"))


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


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    """``tiny_config("segmenter.epochs=3", ...)``: the demo preset at test size plus overrides."""

    def make(*overrides: str) -> Config:
        return load_config("demo", [*TINY_OVERRIDES, *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_runs(tiny_data, tiny_config, tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """A classifier and a segmenter trained briefly on ``tiny_data`` (for inference and serving tests)."""
    root = tmp_path_factory.mktemp("tiny-runs")
    config = tiny_config("classifier.epochs=1")
    train_classifier(tiny_data.images, tiny_data.labels, config, root / "cls", progress=False,
                     splits_path=root / "splits.json")
    train_segmenter(tiny_data.images, tiny_data.labels, config, root / "seg", progress=False,
                    splits_path=root / "splits.json")
    return TinyRuns(tiny_data.images, tiny_data.labels, root / "cls", root / "seg")
