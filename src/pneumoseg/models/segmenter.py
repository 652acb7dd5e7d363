"""The second stage: a segmentation-models-pytorch model (the talk's FPN + InceptionResNetV2)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from pneumoseg.config import SegmenterConfig
from pneumoseg.errors import ConfigError


def build_segmenter(cfg: SegmenterConfig, *, encoder_weights: str | bool | None = None) -> nn.Module:
    """Build ``smp.create_model(cfg.arch, cfg.encoder)`` with one output channel and random weights
    (``encoder_weights``: smp's pretrained encoder, used by :mod:`pneumoseg.models.imagenet`)."""
    try:
        return smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=encoder_weights, in_channels=3,
                                classes=1)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"segmenter {cfg.arch}/{cfg.encoder}: {exc}") from None


def set_encoder_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (no gradient, BatchNorm statistics fixed) or release the encoder of an smp model (or of
    an :class:`~pneumoseg.models.classifier.EncoderClassifier`, which has the same two methods)."""
    if frozen:
        model.freeze_encoder()
    else:
        model.unfreeze_encoder()
