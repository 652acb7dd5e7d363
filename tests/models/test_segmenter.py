"""The second-stage segmenter: smp models built from the presets, offline, one output channel."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from pneumoseg.config import SegmenterConfig, load_config
from pneumoseg.errors import ConfigError
from pneumoseg.models import build_segmenter
from pneumoseg.models.segmenter import set_encoder_frozen
from pneumoseg.train.stages import segmenter_stage


def test_siim_preset_is_fpn_with_inceptionresnetv2_encoder():
    model = build_segmenter(load_config("siim").segmenter)
    assert isinstance(model, smp.FPN)
    assert type(model.encoder).__name__ == "InceptionResNetV2Encoder"
    assert model.segmentation_head[0].out_channels == 1


def test_siim_segmenter_trains_one_step_at_reduced_size():
    config = load_config("siim")
    stage = segmenter_stage(config)
    model = stage.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.segmenter.lr)
    mask = torch.zeros(2, 1, 128, 128)
    mask[0, :, 40:80, 30:60] = 1
    batch = {"image": torch.randn(2, 3, 128, 128), "mask": mask}
    logits = model(batch["image"])
    assert logits.shape == (2, 1, 128, 128)
    loss = stage.loss_fn(logits, batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_demo_preset_segmenter_forward():
    cfg = load_config("demo").segmenter
    model = build_segmenter(cfg).eval()
    assert isinstance(model, smp.FPN) and cfg.encoder == "resnet18"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_set_encoder_frozen_toggles_gradients_and_batchnorm_mode():
    model = build_segmenter(SegmenterConfig(encoder="tu-test_resnet"))
    set_encoder_frozen(model, True)
    model.train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # train() leaves a frozen encoder's BN alone
    set_encoder_frozen(model, False)
    model.train()
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in bns)


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="segmenter"):
        build_segmenter(SegmenterConfig(encoder="no_such_encoder"))
