"""``--pretrained imagenet`` and ``pneumoseg weights fetch`` from caches a test fills locally:
the files are put where timm, smp and torch look for them, so nothing touches the network."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

from pneumoseg.config import load_config
from pneumoseg.errors import PneumosegError
from pneumoseg.models import load_pretrained
from pneumoseg.models.imagenet import fetch_weights, imagenet_classifier, imagenet_segmenter
from pneumoseg.train.stages import classifier_stage, segmenter_stage
from tests.helpers import TINY_OVERRIDES

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _hub_file(cache, repo_id: str, filename: str, revision: str = SNAPSHOT):
    """Where huggingface_hub keeps ``filename`` of ``repo_id`` at ``revision`` (and `main` points there)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    path = repo / "snapshots" / revision / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _random_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    torch_home = tmp_path / "torch"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(torch_home))
    return cache, torch_home


def _warm_tiny_classifier(cache) -> dict[str, torch.Tensor]:
    """timm's test_resnet ImageNet weights, as timm would have downloaded them."""
    state = _random_state(timm.create_model("test_resnet", pretrained=False))
    save_file(state, str(_hub_file(cache, "timm/test_resnet.r160_in1k", "model.safetensors")))
    return state


def _warm_smp_resnet18(cache) -> dict[str, torch.Tensor]:
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    state = _random_state(smp.encoders.get_encoder("resnet18", weights=None))
    config = _hub_file(cache, settings["repo_id"], "config.json", settings["revision"])
    config.write_text('{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}')
    save_file(state, str(config.with_name("model.safetensors")))
    return state


def _same_except_head(model_state, expected, head_prefixes=("fc.", "head.")):
    checked = [k for k in expected if not k.startswith(head_prefixes)]
    assert checked and all(torch.equal(model_state[k], expected[k]) for k in checked)
    return len(checked)


def test_timm_classifier_loads_from_the_hub_cache(hub_cache):
    cache, _ = hub_cache
    expected = _warm_tiny_classifier(cache)
    cfg = load_config("demo", TINY_OVERRIDES).classifier
    model = imagenet_classifier(cfg)
    _same_except_head(model.state_dict(), expected)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1)


def test_the_talks_xception_loads_from_torchs_hub_cache(hub_cache):
    """legacy_xception's weights are published as a URL: timm reads them from TORCH_HOME."""
    _, torch_home = hub_cache
    expected = _random_state(timm.create_model("legacy_xception", pretrained=False))
    url = timm.models.get_pretrained_cfg("legacy_xception").url
    path = torch_home / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(expected, path)
    model = imagenet_classifier(load_config("siim").classifier)
    assert _same_except_head(model.state_dict(), expected) > 100


def test_smp_segmenter_and_encoder_classifier_load_smps_pinned_revision(hub_cache):
    cache, _ = hub_cache
    expected = _warm_smp_resnet18(cache)
    cfg = load_config("demo")
    segmenter = imagenet_segmenter(cfg.segmenter)
    assert _same_except_head(segmenter.encoder.state_dict(), expected) == len(expected)
    classifier = imagenet_classifier(cfg.classifier)  # smp:resnet18: the same encoder, pooled head
    _same_except_head(classifier.encoder.state_dict(), expected)


def test_a_cold_cache_offline_is_one_line_naming_the_fetch_command(hub_cache):
    cfg = load_config("siim")
    with pytest.raises(PneumosegError, match=r"not in the local cache.*pneumoseg weights fetch --config siim") as info:
        imagenet_segmenter(cfg.segmenter, "siim")
    assert "\n" not in str(info.value)
    with pytest.raises(PneumosegError, match="classifier legacy_xception: ImageNet weights not in the local cache"):
        imagenet_classifier(cfg.classifier, "siim")


def test_training_stages_start_from_the_warm_cache(hub_cache):
    cache, _ = hub_cache
    cls_expected = _warm_tiny_classifier(cache)
    config = load_config("demo", TINY_OVERRIDES)
    _same_except_head(classifier_stage(config, "imagenet").model.state_dict(), cls_expected)
    config = load_config("demo", [*TINY_OVERRIDES, "segmenter.encoder=resnet18"])
    seg_expected = _warm_smp_resnet18(cache)
    assert _same_except_head(segmenter_stage(config, "imagenet").model.encoder.state_dict(), seg_expected) == len(seg_expected)


def test_fetched_files_load_with_every_key_matched(hub_cache, tmp_path):
    cache, _ = hub_cache
    _warm_tiny_classifier(cache)
    _warm_smp_resnet18(cache)
    config = load_config("demo", [*TINY_OVERRIDES, "segmenter.encoder=resnet18"])
    cls_file, seg_file = fetch_weights(config, tmp_path / "weights", "demo")
    cls_stage = classifier_stage(config, cls_file)
    report = load_pretrained(cls_stage.model, cls_file)
    assert not report.missing and not report.unexpected and not report.mismatched
    seg_stage = segmenter_stage(config, seg_file)
    report = load_pretrained(seg_stage.model.encoder, seg_file, strip_prefix="encoder.")
    assert not report.missing and not report.unexpected and not report.mismatched


def test_cli_cold_cache_exits_2_with_one_line(hub_cache, tiny_data, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import assert_one_line_error, run_main

    overrides = [arg for o in TINY_OVERRIDES for arg in ("--set", o)]
    code, _, err = run_main(monkeypatch, capsys, "train", "cls", "--images", str(tiny_data.images), "--labels",
                            str(tiny_data.labels), "--out", str(tmp_path / "cls"), "--pretrained", "imagenet",
                            "--splits", str(tmp_path / "splits.json"), *overrides)
    assert_one_line_error(code, err, "classifier test_resnet", "pneumoseg weights fetch --config demo")


def test_cli_weights_fetch_writes_files_train_accepts(hub_cache, tmp_path, monkeypatch, capsys):
    from tests.train.test_cli import run_main

    cache, _ = hub_cache
    _warm_smp_resnet18(cache)  # the demo preset: resnet18 for both stages
    code, out, _ = run_main(monkeypatch, capsys, "weights", "fetch", "--config", "demo", "--out", str(tmp_path / "w"))
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert written == ["classifier-smp-resnet18-imagenet.safetensors", "segmenter-encoder-resnet18-imagenet.safetensors"]
    assert out.count("wrote ") == 2


@pytest.mark.parametrize("user_set", [True, False])
def test_downloads_are_allowed_only_when_the_user_did_not_choose_offline(hub_cache, monkeypatch, user_set):
    from pneumoseg.cli import base

    monkeypatch.setattr(base, "USER_CHOSE_OFFLINE", user_set)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base.allow_weight_downloads()
    assert hf_constants.HF_HUB_OFFLINE is (True if user_set else False)
