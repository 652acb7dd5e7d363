"""Losses: BCE for the classifier; Dice + BCE (the talk's "Dice + CE") for the segmenter."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn


class DiceBCELoss(nn.Module):
    """``dice_weight * soft Dice loss + bce_weight * binary cross-entropy`` on logits."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        self.dice = DiceLoss(mode="binary", from_logits=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * self.bce(logits, target)
