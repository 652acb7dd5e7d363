"""``onnx.json``, the manifest of an ``export-onnx`` folder: read it and verify it (its own
checksum, and each model file's SHA-256) before anything in the folder is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pneumoseg.errors import PneumosegError
from pneumoseg.io import sha256_of
from pneumoseg.runs.files import checked_document, validated

MANIFEST = "onnx.json"
FORMAT = "pneumoseg-onnx"
FORMAT_VERSION = 3  # 2: onnx.json carries its own checksum, verified with each model file's; 3: fold ensembles
READABLE_VERSIONS = (2, 3)


class OnnxMember(BaseModel):
    """One fold's model file in an ensemble entry."""

    model_config = ConfigDict(extra="allow")

    file: str
    sha256: str


class OnnxModelEntry(BaseModel):
    """One stage of the folder; the export records more (arch, tensor specs, source run). A CV
    folder's folds are ``members`` (averaged); ``file`` is then the first member's."""

    model_config = ConfigDict(extra="allow")

    file: str
    sha256: str
    image_size: int = Field(ge=32)
    normalisation: dict[str, Any]
    postprocess: dict[str, Any] | None = None
    members: list[OnnxMember] | None = None

    def files(self) -> list[OnnxMember]:
        return self.members or [OnnxMember(file=self.file, sha256=self.sha256)]


class OnnxManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["pneumoseg-onnx"]
    format_version: Literal[2, 3]
    opset: int
    classifier: OnnxModelEntry | None = None
    segmenter: OnnxModelEntry
    content_sha256: str


def load_manifest(onnx_dir: Path, *, need_classifier: bool = True) -> dict[str, Any]:
    """Read and check ``onnx_dir/onnx.json`` and that the model files it names are present."""
    onnx_dir = Path(onnx_dir)
    path = onnx_dir / MANIFEST
    if not onnx_dir.is_dir():
        raise PneumosegError(f"{onnx_dir}: ONNX folder not found (create it with `pneumoseg export-onnx`)")
    if not path.is_file():
        raise PneumosegError(f"{onnx_dir}: no {MANIFEST}; not a finished `pneumoseg export-onnx` folder")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PneumosegError(f"{path}: unreadable ({exc})") from None
    checked_document(manifest, str(path), fmt=FORMAT, version=READABLE_VERSIONS, what="pneumoseg ONNX manifest",
                     advice="; export again")
    checked = validated(OnnxManifest, manifest, str(path))
    for kind in ("classifier", "segmenter") if need_classifier else ("segmenter",):
        entry = getattr(checked, kind)
        if entry is None:
            raise PneumosegError(f"{path}: no {kind} entry")
        for member in entry.files():
            model_file = onnx_dir / member.file
            if not model_file.is_file():
                raise PneumosegError(f"{onnx_dir}: {member.file} is missing (named in {MANIFEST})")
            if sha256_of(model_file) != member.sha256:
                raise PneumosegError(f"{model_file}: its SHA-256 differs from the one in {MANIFEST}; the file was "
                                     "altered, damaged or replaced (export again)")
    return manifest
