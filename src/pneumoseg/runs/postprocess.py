"""``postprocess.json`` and ``postprocess-seg-only.json``: the post-processing ``pneumoseg tune``
chose for each system, kept beside the segmenter run, sealed with their own checksum and read
through the one schema (:func:`pneumoseg.config.updated_postprocess`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pneumoseg.config import PostprocessConfig, updated_postprocess
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_json, check_seal, sealed
from pneumoseg.runs.files import validated

POSTPROCESS_FILES = {True: "postprocess.json", False: "postprocess-seg-only.json"}
"""Where ``pneumoseg tune`` saves each system's post-processing, beside the segmenter run:
two-stage (gated, True) and segmentation alone (False)."""


def postprocess_path(seg_run: Path, *, gated: bool = True) -> Path:
    return Path(seg_run) / POSTPROCESS_FILES[gated]


def load_postprocess(seg_run: Path, fallback: PostprocessConfig, *, gated: bool = True) -> PostprocessConfig:
    """The post-processing ``pneumoseg tune`` chose for this system, else ``fallback``.

    Two-stage (``gated``): postprocess.json. Segmentation alone: postprocess-seg-only.json,
    else postprocess.json's pixel rule (what runs were given before seg-only tuning existed)."""
    candidates = [postprocess_path(seg_run, gated=gated)] + ([] if gated else [postprocess_path(seg_run)])
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return fallback
    try:
        chosen = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumosegError(f"{path}: unreadable ({exc})") from None
    params = chosen.get("params", {}) if isinstance(chosen, dict) else None
    if not isinstance(params, dict):
        raise PneumosegError(f"{path}: no params object; run `pneumoseg tune` again")
    check_seal(chosen, str(path))
    validated(TunedPostprocess, chosen, str(path))
    return updated_postprocess(fallback, params, str(path))


class TunedPostprocess(BaseModel):
    """What ``pneumoseg tune`` writes: the system, the chosen ``params`` (validated again as a
    :class:`PostprocessConfig` when read), their validation score and the grid searched."""

    model_config = ConfigDict(extra="forbid")

    system: Literal["two-stage", "segmentation alone"]
    params: dict[str, Any]
    mean_dice: float
    all_empty_baseline: float
    n_images: int
    candidates: dict[str, dict[str, Any]] = {}
    grid: dict[str, list[float]] = {}
    source: dict[str, Any] | None = None
    """Where the tuning outputs came from when not one validation split (out-of-fold: K folds)."""
    content_sha256: str | None = None


def write_postprocess(record: dict[str, Any], seg_run: Path, *, gated: bool) -> Path:
    """Seal and write a tuning ``record`` (a :class:`TunedPostprocess`) beside the segmenter run."""
    path = postprocess_path(seg_run, gated=gated)
    checked = validated(TunedPostprocess, record, str(path))
    atomic_write_json(path, sealed(checked.model_dump(mode="json", exclude_none=True)))
    return path
