"""The first-stage classifier: timm models built from the presets, offline, with one logit."""

from __future__ import annotations

import pytest
import torch

from pneumoseg.config import ClassifierConfig, load_config
from pneumoseg.errors import ConfigError
from pneumoseg.models import build_classifier
from pneumoseg.train.stages import classifier_stage


def test_siim_preset_is_legacy_xception_with_one_output():
    cfg = load_config("siim").classifier
    model = build_classifier(cfg)
    assert cfg.arch == "legacy_xception"
    assert type(model).__name__ == "Xception" and model.pretrained_cfg["architecture"] == "legacy_xception"
    assert model.num_classes == 1 and model.get_classifier().out_features == 1


def test_siim_classifier_trains_one_step_at_reduced_size():
    config = load_config("siim")
    stage = classifier_stage(config)
    model = stage.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.classifier.lr)
    batch = {"image": torch.randn(2, 3, 96, 96), "label": torch.tensor([[1.0], [0.0]])}
    before = model.get_classifier().weight.detach().clone()
    logits = model(batch["image"])
    assert logits.shape == (2, 1)
    loss = stage.loss_fn(logits, batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.get_classifier().weight, before)


def test_demo_preset_classifier_forward():
    model = build_classifier(load_config("demo").classifier).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1)


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="classifier.arch"):
        build_classifier(ClassifierConfig(arch="no_such_net"))
