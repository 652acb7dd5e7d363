"""The first stage: an image classifier with one logit (pneumothorax present).

Two kinds, named by ``classifier.arch``:

- a timm model name (``legacy_xception``, the talk's; ``resnet18``, ...);
- ``smp:<encoder>``: the segmenter's encoder (segmentation-models-pytorch) with a pooled linear
  head, :class:`EncoderClassifier`. It has the segmenter's parameter names, so a trained
  segmenter checkpoint loads into it with ``--pretrained``: the classifier then starts from
  what the segmenter learned about pneumothorax, and can train its head alone with the encoder
  frozen (``classifier.frozen_epochs``).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from pneumoseg.config import CLASSIFIER_ENCODER_PREFIX, ClassifierConfig
from pneumoseg.errors import ConfigError

HEAD_STAGES = 2
"""The head pools the two deepest encoder stages: the stride-16 stage still resolves a thin
pleural line that the stride-32 stage blurs (on the demo's data the frozen features of both gave
a validation ROC-AUC of 0.89 against 0.83 for the last stage alone; docs/experiments.md)."""


class EncoderClassifier(nn.Module):
    """An smp encoder; max and mean pooling of its last ``HEAD_STAGES`` feature maps; BatchNorm
    and one linear logit. Max pooling keeps a small local finding that mean pooling dilutes."""

    def __init__(self, encoder_name: str, weights: str | None = None):
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder_name, in_channels=3, weights=weights)
        width = 2 * sum(self.encoder.out_channels[-HEAD_STAGES:])
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, 1))
        self.encoder_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-HEAD_STAGES:]
        pooled = [torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1) for f in features]
        return self.head(torch.cat(pooled, dim=1))

    def freeze_encoder(self) -> None:
        """No gradient and fixed BatchNorm statistics for the encoder (smp models' API)."""
        self._set_encoder_frozen(True)

    def unfreeze_encoder(self) -> None:
        self._set_encoder_frozen(False)

    def _set_encoder_frozen(self, frozen: bool) -> None:
        self.encoder_frozen = frozen
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> EncoderClassifier:
        """A frozen encoder keeps its BatchNorm statistics: it stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    """Build ``cfg.arch`` with random weights and a single output logit.

    ImageNet weights come through :mod:`pneumoseg.models.imagenet`; a local file is loaded by
    :func:`pneumoseg.models.load_pretrained`.
    """
    if cfg.arch.startswith(CLASSIFIER_ENCODER_PREFIX):
        encoder = cfg.arch.removeprefix(CLASSIFIER_ENCODER_PREFIX)
        try:
            return EncoderClassifier(encoder)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"classifier.arch {cfg.arch!r}: {exc}") from None
    try:
        return timm.create_model(cfg.arch, pretrained=False, num_classes=1, in_chans=3)
    except RuntimeError as exc:  # timm raises RuntimeError("Unknown model ...")
        raise ConfigError(f"classifier.arch: {exc}") from None
