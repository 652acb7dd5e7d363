"""``--pretrained imagenet``: the recipe's ImageNet starts, through the libraries' own download
and cache, and ``pneumoseg weights fetch``, which saves them as files for air-gapped servers.

- timm classifiers: ``timm.create_model(arch, pretrained=True)``; timm reads the Hugging Face
  hub cache (``HF_HOME``) or, for weights published as a URL (``legacy_xception``), torch's hub
  cache (``TORCH_HOME``/hub/checkpoints).
- smp encoders (the segmenter, ``smp:<encoder>`` classifiers): ``encoder_weights="imagenet"``,
  which smp loads from its ``smp-hub`` repositories at a pinned revision (the hub cache).

With ``HF_HUB_OFFLINE`` set (the CLI's default) only the caches are read. A cold cache gives a
one-line error that names the command to run where there is internet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from pneumoseg.config import CLASSIFIER_ENCODER_PREFIX, ClassifierConfig, Config, SegmenterConfig
from pneumoseg.errors import PneumosegError
from pneumoseg.models.classifier import EncoderClassifier
from pneumoseg.models.segmenter import build_segmenter

IMAGENET = "imagenet"
"""The ``--pretrained`` value that asks for the libraries' ImageNet weights instead of a file."""


def is_imagenet(pretrained: Path | str | None) -> bool:
    return pretrained is not None and str(pretrained) == IMAGENET


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _url_weights_missing(arch: str) -> Path | None:
    """For timm weights published only as a URL: the torch hub cache file, when it is absent."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or cfg.hf_hub_id or not cfg.url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
    return None if path.is_file() else path


@contextmanager
def _from_library(what: str, config_name: str) -> Iterator[None]:
    """Turn the libraries' download and cache errors into one line that says what to do."""
    hint = (f"where there is internet, run `pneumoseg weights fetch --config {config_name} --out weights` and pass "
            "--pretrained weights/<file>, or copy the filled caches (HF_HOME, TORCH_HOME) here")
    try:
        yield
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        where = "not in the local cache (HF_HUB_OFFLINE is set)" if offline() else "could not be fetched"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PneumosegError(f"{what}: ImageNet weights {where} ({first}); {hint}") from None


def imagenet_classifier(cfg: ClassifierConfig, config_name: str = "siim") -> nn.Module:
    """``cfg.arch`` with ImageNet weights (its 1000-class head replaced by one logit)."""
    what = f"classifier {cfg.arch}"
    with _from_library(what, config_name):
        if cfg.arch.startswith(CLASSIFIER_ENCODER_PREFIX):
            # not build_classifier: it reports library errors as config errors, without the hint
            return EncoderClassifier(cfg.arch.removeprefix(CLASSIFIER_ENCODER_PREFIX), IMAGENET)
        missing = _url_weights_missing(cfg.arch) if offline() else None
        if missing is not None:
            raise FileNotFoundError(f"no {missing}")
        return timm.create_model(cfg.arch, pretrained=True, num_classes=1, in_chans=3)


def imagenet_segmenter(cfg: SegmenterConfig, config_name: str = "siim") -> nn.Module:
    """The smp model with its encoder's ImageNet weights (decoder and head random)."""
    with _from_library(f"segmenter encoder {cfg.encoder}", config_name):
        return build_segmenter(cfg, encoder_weights=True if cfg.encoder.startswith("tu-") else IMAGENET)


def fetch_weights(config: Config, out_dir: Path, config_name: str) -> list[Path]:
    """Fetch both stages' ImageNet weights (into the libraries' caches) and save them as
    safetensors files in ``out_dir`` that ``--pretrained FILE`` accepts: the classifier whole,
    the segmenter's encoder alone. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier = imagenet_classifier(config.classifier, config_name)
    encoder = imagenet_segmenter(config.segmenter, config_name).encoder
    files = [(out_dir / f"classifier-{_safe(config.classifier.arch)}-imagenet.safetensors", classifier),
             (out_dir / f"segmenter-encoder-{_safe(config.segmenter.encoder)}-imagenet.safetensors", encoder)]
    for path, model in files:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"source": "ImageNet weights via timm/smp", "config": config_name})
    return [path for path, _ in files]


def _safe(name: str) -> str:
    return name.replace(":", "-").replace("/", "-")
