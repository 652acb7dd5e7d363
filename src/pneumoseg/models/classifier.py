"""The first stage: a timm image classifier with one logit (pneumothorax present)."""

from __future__ import annotations

import timm
from torch import nn

from pneumoseg.config import ClassifierConfig
from pneumoseg.errors import ConfigError


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    """Build ``cfg.arch`` from timm with random weights and a single output logit.

    Pretrained weights are never fetched here; :func:`pneumoseg.models.load_pretrained`
    loads a local file the user names.
    """
    try:
        return timm.create_model(cfg.arch, pretrained=False, num_classes=1, in_chans=3)
    except RuntimeError as exc:  # timm raises RuntimeError("Unknown model ...")
        raise ConfigError(f"classifier.arch: {exc}") from None
