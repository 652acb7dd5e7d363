"""A cross-validation folder: one stage trained on every fold of one split file.

::

    CV_DIR/
      cv.json            what it is: stage, number of folds, the split file's SHA-256 (sealed)
      config.yaml        the config every fold was trained with (data.n_folds = K)
      splits.json        K stratified folds; every image is in exactly one fold's val
      fold-0/ ...        an ordinary run folder per fold (pneumoseg train ... --fold k)
      fold-0.done.json   written when fold 0 finished: a rerun skips it
      oof/               out-of-fold model outputs (segmenter CVs; pneumoseg.evaluate.cv)
      postprocess.json   chosen on the out-of-fold outputs (pneumoseg tune --cv)

A CV folder is accepted wherever a run folder is (``--cls``, ``--seg``): its finished folds
are loaded as an ensemble.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_json, check_seal, sealed
from pneumoseg.runs.files import validated

CV_FILE = "cv.json"
CV_FORMAT = "pneumoseg-cv"
CV_VERSION = 1


class CvManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["pneumoseg-cv"] = CV_FORMAT
    format_version: int = CV_VERSION
    stage: Literal["classifier", "segmenter"]
    n_folds: int = Field(ge=2)
    splits_sha256: str
    content_sha256: str | None = None


class FoldDone(BaseModel):
    """What ``fold-K.done.json`` records of a finished fold."""

    model_config = ConfigDict(extra="forbid")

    fold: int = Field(ge=0)
    seconds: float
    best: dict[str, Any] = {}
    """The fold's selected epoch: its validation metrics."""


def is_cv_folder(path: Path | None) -> bool:
    return path is not None and (Path(path) / CV_FILE).is_file()


def fold_run(cv_dir: Path, fold: int) -> Path:
    return Path(cv_dir) / f"fold-{fold}"


def _done_path(cv_dir: Path, fold: int) -> Path:
    return Path(cv_dir) / f"fold-{fold}.done.json"


def read_cv(cv_dir: Path) -> CvManifest:
    path = Path(cv_dir) / CV_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumosegError(f"{path}: unreadable ({exc})") from None
    check_seal(data, str(path))
    return validated(CvManifest, data, str(path))


def write_cv(cv_dir: Path, manifest: CvManifest) -> None:
    atomic_write_json(Path(cv_dir) / CV_FILE, sealed(manifest.model_dump(mode="json", exclude_none=True)))


def mark_fold_done(cv_dir: Path, done: FoldDone) -> None:
    atomic_write_json(_done_path(cv_dir, done.fold), done.model_dump(mode="json"))


def fold_done(cv_dir: Path, fold: int) -> FoldDone | None:
    path = _done_path(cv_dir, fold)
    if not path.is_file():
        return None
    try:
        return validated(FoldDone, json.loads(path.read_text()), str(path))
    except json.JSONDecodeError:
        raise PneumosegError(f"{path}: unreadable; delete it to train fold {fold} again") from None


def finished_folds(cv_dir: Path) -> list[int]:
    manifest = read_cv(cv_dir)
    return [k for k in range(manifest.n_folds) if fold_done(cv_dir, k) is not None]


def fold_runs(cv_dir: Path, *, complete: bool = True) -> list[Path]:
    """The run folders of the finished folds; with ``complete``, one line unless all are."""
    manifest = read_cv(cv_dir)
    done = finished_folds(cv_dir)
    if complete and len(done) < manifest.n_folds:
        missing = sorted(set(range(manifest.n_folds)) - set(done))
        raise PneumosegError(f"{cv_dir}: fold(s) {', '.join(map(str, missing))} of {manifest.n_folds} not trained; "
                             "run `pneumoseg cv train` again to finish them")
    return [fold_run(cv_dir, k) for k in done]
