"""Shared fixtures: the real SIIM sample beside the checkout, and offline settings."""

import os
from pathlib import Path

import pytest

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
