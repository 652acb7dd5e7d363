"""Loading weights from local files only: safetensors, or ``.pth`` read with ``weights_only``.

Nothing here touches the network. A foreign ``.pth`` is unpickled with
``torch.load(weights_only=True)``, which refuses arbitrary Python objects, so a file from a
stranger cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from pneumoseg.errors import PneumosegError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "weights")
_PREFIXES = ("module.", "model.", "_orig_mod.", "encoder.")


@dataclass
class LoadReport:
    path: Path
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def some(keys: list[str]) -> str:
            return f"{len(keys)}" + (f" (e.g. {', '.join(keys[:3])})" if keys else "")

        return (
            f"pretrained weights from {self.path}: {self.loaded} tensors loaded, "
            f"missing {some(self.missing)}, unexpected {some(self.unexpected)}, shape-mismatched {some(self.mismatched)}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise PneumosegError(f"{path}: weight file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PneumosegError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0]
        raise PneumosegError(f"{path}: refused to load, the file holds more than tensors ({first})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise PneumosegError(f"{path}: not a readable PyTorch weight file ({str(exc).splitlines()[0]})") from None
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise PneumosegError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _key_variants(key: str, prefixes: tuple[str, ...]) -> list[str]:
    """``key`` and what it becomes as wrapper prefixes are stripped off its front, one by one."""
    variants = [key]
    while stripped := next((key.removeprefix(p) for p in prefixes if key.startswith(p)), None):
        key = stripped
        variants.append(key)
    return variants


def _match_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                extra_prefix: str | None) -> dict[str, torch.Tensor]:
    """Rename ``state``'s keys to the model's: strip wrapper prefixes (``module.``, ``model.``,
    ``_orig_mod.``, ``extra_prefix``) only as far as needed for a key to match, and add the
    model's own wrapper prefix when all its keys share one (smp's ``tu-`` timm encoders keep the
    timm backbone under ``model.``). Keys that match nothing keep their original name."""
    prefixes = _PREFIXES + ((extra_prefix,) if extra_prefix else ())
    heads = {k.split(".", 1)[0] for k in own}
    own_prefix = f"{heads.pop()}." if len(heads) == 1 and all("." in k for k in own) else ""
    out = {}
    for key, value in state.items():
        variants = _key_variants(key, prefixes)
        candidates = variants + [own_prefix + v for v in variants] if own_prefix else variants
        out[next((c for c in candidates if c in own), key)] = value
    return out


def load_pretrained(model: nn.Module, path: Path, *, strip_prefix: str | None = None) -> LoadReport:
    """Load matching tensors from ``path`` into ``model`` (non-strict) and report what matched.

    For a segmenter pass ``model.encoder`` with ``strip_prefix="encoder."`` so that both a plain
    encoder/backbone state dict and a whole smp model's state dict fit. Tensors whose shape
    differs (a classifier head of 1000 classes, say) are skipped and reported.
    """
    own = model.state_dict()
    state = _match_keys(read_state_dict(path), own, strip_prefix)
    report = LoadReport(path=Path(path))
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(key)
        else:
            usable[key] = value
    if not usable:
        raise PneumosegError(f"{path}: none of its {len(state)} tensors match the model's parameters")
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    report.missing = [k for k in own if k not in usable]
    return report
