"""The node's settings: one pydantic model, read from a YAML file (``--config``) with the
command line's options on top, validated whichever way a value came, and saved into the
spool (``node.yaml``) each time the node starts, so the spool says how it was filled.

Relative paths in the file are relative to the file's folder (a service's config names the
spool and runs beside it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pneumoseg.config import format_validation_error
from pneumoseg.data.read_filter import ReadFilter
from pneumoseg.errors import ConfigError
from pneumoseg.io import atomic_write_text

PATH_FIELDS = ("spool", "cls", "seg", "model")
AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")  # printable ASCII without backslash, 1-16 characters


def _ae_title(value: str) -> str:
    value = value.strip()
    if not AE_TITLE.fullmatch(value):
        raise ValueError(f"{value!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
    return value


class NodeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spool: Path
    cls: Path | None = None
    seg: Path | None = None
    model: Path | None = None
    ae_title: str = "PNEUMOSEG"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    send_to: str | None = Field(None, description="AET@host:port of the PACS (C-STORE)")
    stow: str | None = Field(None, description="DICOMweb URL of the PACS (STOW-RS)")
    allow_callers: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=lambda: list(ReadFilter().modalities))
    body_parts: list[str] = Field(default_factory=lambda: list(ReadFilter().body_parts))
    views: list[str] = Field(default_factory=lambda: list(ReadFilter().views))
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between tries while the PACS is down")
    device: str = "cpu"

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return _ae_title(value)

    @field_validator("allow_callers")
    @classmethod
    def _check_callers(cls, values: list[str]) -> list[str]:
        return [_ae_title(v) for v in values]

    @field_validator("modalities", "body_parts", "views")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return [v.strip().upper() for v in values if v.strip()]

    def read_filter(self) -> ReadFilter:
        return ReadFilter(tuple(self.modalities), tuple(self.body_parts), tuple(self.views))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the node config must be a mapping of settings")
    for key in PATH_FIELDS:  # relative to the file, as a service's config expects
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(path.parent / data[key])
    return data


def load_node_settings(config: Path | None, options: dict[str, Any]) -> NodeSettings:
    """Settings from ``config`` (YAML) with the command line's ``options`` on top (None and
    empty lists are options not given); one line naming the source and field when invalid."""
    data = _read_file(config) if config is not None else {}
    given = {key: value for key, value in options.items() if value not in (None, [], ())}
    data.update(given)
    source = f"{config} (with the command line)" if config and given else str(config or "command line")
    try:
        return NodeSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def save_node_settings(settings: NodeSettings, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
