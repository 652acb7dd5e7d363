"""``run.json`` and ``config.yaml``: what a training run was trained on (the split file, its SHA-256 and the fold),
how many images, and the input normalisation. Written by train, read by evaluate, report and
model cards, all through :class:`RunInfo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pneumoseg.config import Config, load_config, save_config
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_json
from pneumoseg.runs.files import validated

RUN_INFO = "run.json"
RUN_CONFIG = "config.yaml"


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["classifier", "segmenter"]
    splits: str
    """The split file's path when the run was trained (it may since have moved)."""
    splits_sha256: str | None = None
    """The split file's fingerprint: two runs share a split when these agree."""
    fold: int = Field(0, ge=0)
    n_train: int = Field(ge=0)
    n_val: int = Field(ge=0)
    normalisation: dict | None = None
    """Mean, std and source of the input normalisation (:class:`~pneumoseg.data.preprocess.Normalisation`)."""


def write_run_info(run_dir: Path, info: RunInfo) -> Path:
    path = Path(run_dir) / RUN_INFO
    atomic_write_json(path, info.model_dump(mode="json", exclude_none=True))
    return path


def read_run_info(run_dir: Path) -> RunInfo | None:
    """The run's :class:`RunInfo`, None when it has no run.json; one line when it is malformed."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumosegError(f"{path}: unreadable ({exc})") from None
    return validated(RunInfo, data, str(path))


def write_run_config(run_dir: Path, config: Config) -> Path:
    """The resolved config the run was trained with (``config.yaml``, for people and for reuse)."""
    path = Path(run_dir) / RUN_CONFIG
    save_config(config, path)
    return path


def read_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise PneumosegError(f"{run_dir}: no {RUN_CONFIG}; not a finished pneumoseg run folder")
    return load_config(path)
