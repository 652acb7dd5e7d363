"""Checkpoints without pickle: tensors in safetensors, their metadata inside the same file.

``<name>.safetensors`` holds a model's weights and, in the safetensors header (key
``pneumoseg``), a JSON with the config, epoch, metrics, package versions and a SHA-256 over
that metadata and the tensors, which is checked on load so that a truncated or altered file
(weights or header) is refused. Because the
metadata travels inside the one file, which is written atomically (temp + rename), a process
killed at any moment leaves either the old checkpoint or the new one, never a mismatched pair.
``<name>.json`` beside it repeats the metadata (plus the file's SHA-256) for people and tools;
loading does not need it, and files without that checksum are refused. Training state for ``--resume`` (optimizer, scheduler, SWA
model, RNG) is flattened into ``last-state.safetensors`` the same way.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pneumoseg.errors import PneumosegError
from pneumoseg.io import SEAL_KEY, atomic_save, atomic_write_json, canonical_json, sha256_of

_VERSIONED = ("pneumoseg", "torch", "timm", "segmentation-models-pytorch", "albumentations", "pydicom")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


META_KEY = "pneumoseg"  # the safetensors header key holding the JSON metadata
DIGEST_KEY = SEAL_KEY  # in that metadata: the checksum over the rest of it and the tensors


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def content_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 over the metadata (canonical JSON, without the digest itself) and every tensor:
    a changed config value is caught like a changed weight."""
    digest = hashlib.sha256(canonical_json(meta))
    digest.update(tensor_digest(tensors).encode())
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors, ``meta`` + a checksum over it and the tensors in its header)
    atomically, then the JSON sidecar for humans (``path`` alone is enough to load)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    embedded = json.loads(json.dumps({
        **meta, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
    }, default=str))
    embedded[DIGEST_KEY] = content_digest(tensors, embedded)
    header = {META_KEY: json.dumps(embedded, separators=(",", ":"))}
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    atomic_write_json(path.with_suffix(".json"), {**embedded, "weights": path.name, "sha256": sha256_of(path)})


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata embedded by :func:`save_tensors` (None for an older file without it);
    reads only the header, refusing a file that is not a whole safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise PneumosegError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise PneumosegError(f"{path}: truncated or damaged checkpoint ({exc})") from None
    if META_KEY not in header:
        return None
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise PneumosegError(f"{path}: damaged checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise PneumosegError(f"{path}: damaged checkpoint metadata (not a JSON object)")
    return meta


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`, refusing files whose checksum differs."""
    path = Path(path)
    meta = read_metadata(path)
    if meta is None:
        raise PneumosegError(f"{path}: not a pneumoseg checkpoint (no metadata in its header); "
                             "use --pretrained for foreign weight files")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise PneumosegError(f"{path}: unreadable checkpoint ({exc})") from None
    if DIGEST_KEY not in meta:
        raise PneumosegError(f"{path}: written by an older pneumoseg whose checksum did not cover the header; "
                             "train it again")
    if meta[DIGEST_KEY] != content_digest(tensors, meta):
        raise PneumosegError(f"{path}: checksum of the weights and header does not match the one saved with them; "
                             "the file is truncated or was altered")
    return tensors, meta


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    save_tensors(path, model.state_dict(), meta)


def load_model_state(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model`` (strict) and return the metadata."""
    state, meta = load_tensors(path)
    fit_state(model, state, path)
    return meta


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` (read from ``path``) into ``model``, strictly; one line when it does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PneumosegError(f"{path}: weights do not fit the model built from its config ({str(exc).splitlines()[0]})") from None


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and plain values (JSON)."""
    tensors, plain = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{key}"] = value
            else:
                plain[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in plain["plain"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}
