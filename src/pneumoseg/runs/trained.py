"""Rebuilding a trained model from its run folder (config + safetensors checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pneumoseg.config import Config
from pneumoseg.data.preprocess import LEGACY, Normalisation
from pneumoseg.errors import PneumosegError
from pneumoseg.models.classifier import build_classifier
from pneumoseg.models.segmenter import build_segmenter
from pneumoseg.runs.checkpoint import DIGEST_KEY, fit_state, load_tensors, read_metadata
from pneumoseg.runs.files import validated


class ModelCheckpoint(BaseModel):
    """The metadata in a model checkpoint's header (``best``/``swa.safetensors``); what else
    training recorded (metrics, versions, time) is kept but not required."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["classifier", "segmenter"]
    config: Config
    epoch: int | str | None = None
    normalisation: dict | None = None
    content_sha256: str = Field(alias=DIGEST_KEY)


@dataclass
class TrainedModel:
    kind: str  # "classifier" | "segmenter"
    model: nn.Module
    config: Config
    run_dir: Path
    checkpoint: str  # "best" | "swa"
    normalisation: Normalisation = LEGACY
    """Recorded in the checkpoint; runs that record none were trained with ImageNet statistics."""
    digest: str = ""
    """The checkpoint's verified checksum over its weights and header (what identifies the model)."""

    @property
    def image_size(self) -> int:
        stage = self.config.classifier if self.kind == "classifier" else self.config.segmenter
        return stage.image_size


def checkpoint_path(run_dir: Path, which: str = "auto") -> Path:
    """``which``: "best", "swa", or "auto" (SWA when the run has one, else best)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PneumosegError(f"{run_dir}: run folder not found")
    if which == "auto":
        which = "swa" if has_checkpoint(run_dir, "swa") else "best"
    path = run_dir / f"{which}.safetensors"
    if not path.is_file():
        raise PneumosegError(f"{run_dir}: no {which} checkpoint ({path.name}); was the training finished?")
    return path


def has_checkpoint(run_dir: Path, which: str) -> bool:
    """Whether the run has its ``which`` ("best", "swa") checkpoint (an SWA run, a finished run)."""
    return (Path(run_dir) / f"{which}.safetensors").is_file()


def load_trained(run_dir: Path, which: str = "auto", *, expect: str | None = None) -> TrainedModel:
    """Build the model described by the checkpoint's config and load its weights, both verified
    by the checksum in the file before either is used."""
    path = checkpoint_path(run_dir, which)
    state, raw = load_tensors(path)
    meta = validated(ModelCheckpoint, raw, f"{path} (checkpoint metadata)")
    kind, config = meta.kind, meta.config
    if expect and kind != expect:
        raise PneumosegError(f"{run_dir} holds a {kind}, expected a {expect}")
    model = build_classifier(config.classifier) if kind == "classifier" else build_segmenter(config.segmenter)
    fit_state(model, state, path)
    model.eval()
    normalisation = Normalisation.from_json(meta.normalisation, str(path)) if meta.normalisation else LEGACY
    return TrainedModel(kind, model, config, Path(run_dir), path.stem, normalisation, meta.content_sha256)


def load_stage_models(run: Path, which: str, kind: str) -> list[TrainedModel]:
    """The run folder's model, or every fold of a CV folder (used as an ensemble)."""
    from pneumoseg.runs.cv import fold_runs, is_cv_folder

    return [load_trained(fold, which, expect=kind) for fold in (fold_runs(run) if is_cv_folder(run) else [run])]


def read_kind(run_dir: Path) -> str:
    """"classifier" or "segmenter", from the best checkpoint's header (not loading its weights)."""
    path = checkpoint_path(run_dir, "best")
    return validated(ModelCheckpoint, read_metadata(path) or {}, f"{path} (checkpoint metadata)").kind
