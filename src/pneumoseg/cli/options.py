"""Command-line values checked before any work starts: each bad one is a one-line
:class:`~pneumoseg.errors.PneumosegError` (exit code 2 from the CLI), never a traceback after
the images were processed."""

from __future__ import annotations

import re
from pathlib import Path

from pneumoseg.errors import PneumosegError

RLE_FORMATS = ("relative", "standard")


def tta_flag(value: str) -> bool:
    """``--tta``: none or hflip."""
    if value not in {"none", "hflip"}:
        raise PneumosegError(f"--tta must be none or hflip, not {value!r}")
    return value == "hflip"


def device_name(value: str) -> str:
    """``--device``: cpu, cuda, cuda:N or auto (CUDA when present); CUDA must exist."""
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
        raise PneumosegError(f"--device must be cpu, cuda, cuda:N or auto, not {value!r}")
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise PneumosegError(f"--device {value}: this machine has no CUDA GPU that torch can use (try --device cpu)")
    return value


def rle_format(value: str) -> str:
    if value not in RLE_FORMATS:
        raise PneumosegError(f"--rle must be {' or '.join(RLE_FORMATS)}, not {value!r}")
    return value


def at_least(option: str, value: int, low: int = 1) -> int:
    if value < low:
        raise PneumosegError(f"{option} must be at least {low}, not {value}")
    return value


def output_file(option: str, path: Path | None) -> Path | None:
    """A file to write: not an existing folder."""
    if path is not None and Path(path).is_dir():
        raise PneumosegError(f"{option} {path}: is a folder; give a file name")
    return path


def output_folder(option: str, path: Path | None) -> Path | None:
    """A folder to write into: not an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise PneumosegError(f"{option} {path}: is a file; give a folder")
    return path
