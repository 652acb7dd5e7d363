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


def test_encoder_classifier_takes_a_trained_segmenters_encoder(tmp_path):
    """``smp:<encoder>`` has the segmenter's parameter names: a segmenter checkpoint fills its
    whole encoder, and only the head is left to train."""
    from safetensors.torch import save_file

    from pneumoseg.models import build_segmenter, load_pretrained

    config = load_config("demo", ["classifier.arch=smp:resnet18", "segmenter.encoder=resnet18"])
    segmenter = build_segmenter(config.segmenter)
    save_file(segmenter.state_dict(), str(tmp_path / "seg.safetensors"))
    model = build_classifier(config.classifier)
    report = load_pretrained(model, tmp_path / "seg.safetensors")
    assert report.mismatched == []
    assert {k.split(".")[0] for k in report.missing} == {"head"}
    encoder_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert report.loaded == len(encoder_keys)
    for key in encoder_keys:
        assert torch.equal(model.state_dict()[key], segmenter.state_dict()[key])
    assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 1)


def test_frozen_encoder_classifier_trains_only_its_head():
    config = load_config("demo", ["classifier.arch=smp:resnet18", "classifier.frozen_epochs=1"])
    stage = classifier_stage(config)
    model = stage.model.train()
    stage.set_frozen(model, True)
    model.train()
    assert not model.encoder.training and model.head.training  # BatchNorm statistics of the encoder stay fixed
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head[1].weight.detach().clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = {"image": torch.rand(4, 3, 64, 64), "label": torch.tensor([[1.0], [0.0], [1.0], [0.0]])}
    stage.loss_fn(model(batch["image"]), batch).backward()
    optimizer.step()
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(model.head[1].weight, head_before)
    stage.set_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters()) and model.encoder.training


@pytest.mark.parametrize("overrides, message", [
    (["classifier.arch=resnet18", "classifier.frozen_epochs=1"], "needs an encoder to freeze"),
    (["classifier.augment.crop=64"], "augment.crop is for the segmenter"),
    (["segmenter.augment.crop=1024"], "must lie in 32..image_size"),
    (["classifier.arch=smp:no_such_encoder"], "classifier.arch"),
])
def test_classifier_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_classifier(load_config("demo", overrides).classifier)
