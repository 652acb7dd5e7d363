"""Checkpoints without pickle: tensors in safetensors, everything else in a JSON beside them.

``<name>.safetensors`` holds a model's weights; ``<name>.json`` holds the config, epoch,
metrics, package versions and the SHA-256 of the weights, which is checked on load so that a
truncated or altered file is refused. Training state for ``--resume`` (optimizer, scheduler,
SWA model, RNG) is flattened into ``last-state.safetensors`` + ``last-state.json`` the same way.
All writes are atomic.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_save, atomic_write_json

_VERSIONED = ("pneumoseg", "torch", "timm", "segmentation-models-pytorch", "albumentations", "pydicom")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and its JSON sidecar (``meta`` + checksum), both atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp)))
    sidecar = {**meta, "weights": path.name, "sha256": sha256_of(path),
               "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions()}
    atomic_write_json(path.with_suffix(".json"), sidecar)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a pair written by :func:`save_tensors`, refusing files whose checksum differs."""
    sidecar_path = path.with_suffix(".json")
    if not path.is_file() or not sidecar_path.is_file():
        raise PneumosegError(f"{path}: checkpoint not found (needs both {path.name} and {sidecar_path.name})")
    try:
        meta = json.loads(sidecar_path.read_text())
    except json.JSONDecodeError as exc:
        raise PneumosegError(f"{sidecar_path}: damaged checkpoint metadata ({exc})") from None
    if meta.get("sha256") != sha256_of(path):
        raise PneumosegError(f"{path}: checksum does not match {sidecar_path.name}; the file is truncated or was altered")
    try:
        return load_file(str(path)), meta
    except (SafetensorError, OSError) as exc:
        raise PneumosegError(f"{path}: unreadable checkpoint ({exc})") from None


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    save_tensors(path, model.state_dict(), meta)


def load_model_state(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model`` (strict) and return the metadata."""
    state, meta = load_tensors(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PneumosegError(f"{path}: weights do not fit the model built from its config ({str(exc).splitlines()[0]})") from None
    return meta


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
