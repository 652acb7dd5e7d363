"""Losses: DiceBCELoss against a hand computation, and both stages' losses fall on a learnable batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pneumoseg.train.losses import DiceBCELoss
from pneumoseg.train.stages import classifier_stage, segmenter_stage


def hand_dice_bce(logits: torch.Tensor, target: torch.Tensor, dice_weight: float, bce_weight: float) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dice = 1 - 2 * (p * target).sum() / (p.sum() + target.sum())
    return dice_weight * dice + bce_weight * F.binary_cross_entropy(p, target)


@pytest.mark.parametrize(("dice_weight", "bce_weight"), [(1.0, 1.0), (2.0, 0.5), (0.0, 1.0), (1.0, 0.0)])
def test_dice_bce_matches_hand_computation(dice_weight, bce_weight):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=gen) * 3
    target = (torch.rand(3, 1, 8, 8, generator=gen) > 0.7).float()
    loss = DiceBCELoss(dice_weight, bce_weight)(logits, target)
    torch.testing.assert_close(loss, hand_dice_bce(logits, target, dice_weight, bce_weight), rtol=1e-5, atol=1e-6)


def test_dice_bce_is_near_zero_for_a_confident_correct_prediction():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert DiceBCELoss()(logits, target).item() < 1e-6
    assert DiceBCELoss()(-logits, target).item() > 10  # and large for the opposite


def learnable_batch(n: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    """Half the images have a bright square (the 'pneumothorax'), half are plain noise."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(n, 3, size, size, generator=gen) * 0.3
    mask = torch.zeros(n, 1, size, size)
    for i in range(0, n, 2):
        y, x = 8 + 6 * i, 12 + 4 * i
        mask[i, :, y:y + 20, x:x + 20] = 1
    image = image + 2.0 * mask
    label = mask.amax(dim=(1, 2, 3)).view(n, 1)
    return {"image": image, "mask": mask, "label": label}


def losses_over_steps(stage, batch: dict[str, torch.Tensor], steps: int, lr: float) -> list[float]:
    model = stage.model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = stage.loss_fn(model(batch["image"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_classifier_loss_falls_on_a_learnable_batch(tiny_config):
    stage = classifier_stage(tiny_config())
    batch = learnable_batch()
    losses = losses_over_steps(stage, batch, steps=15, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_segmenter_loss_falls_on_a_learnable_batch(tiny_config):
    stage = segmenter_stage(tiny_config())
    batch = learnable_batch()
    losses = losses_over_steps(stage, batch, steps=15, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses
    # the stage's loss is DiceBCELoss on the mask with the configured weights
    logits = stage.model.eval()(batch["image"]).detach()
    expected = DiceBCELoss(stage.cfg.dice_weight, stage.cfg.bce_weight)(logits, batch["mask"])
    torch.testing.assert_close(stage.loss_fn(logits, batch), expected)
