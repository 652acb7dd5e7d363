"""Offline pretrained weights: safetensors or weights-only .pth, never arbitrary pickles."""

from __future__ import annotations

import os
import pickle
import shlex

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file

from pneumoseg.config import ClassifierConfig, SegmenterConfig
from pneumoseg.errors import PneumosegError
from pneumoseg.models import build_classifier, build_segmenter, load_pretrained
from pneumoseg.models.weights import read_state_dict
from pneumoseg.runs.checkpoint import save_model

CLS = ClassifierConfig(arch="test_resnet")
SEG = SegmenterConfig(encoder="tu-test_resnet")


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_pth_state_dict_is_read_weights_only(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 4}, path)
    model = build_classifier(CLS)
    report = load_pretrained(model, path)
    assert report.loaded == len(source.state_dict()) and not report.mismatched and not report.unexpected
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_is_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(PneumosegError, match="refused"):
        load_pretrained(build_classifier(CLS), path)
    assert not marker.exists()


def test_the_payload_would_run_under_a_plain_unpickle(tmp_path):
    """Guards the test above: the payload is real, so its not running proves the refusal."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_timm_state_dict_in_safetensors_loads_with_head_mismatch_reported(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1000)  # an ImageNet head
    path = tmp_path / "test_resnet.safetensors"
    save_file(source.state_dict(), str(path))
    model = build_classifier(CLS)
    head_before = model.get_classifier().weight.detach().clone()
    report = load_pretrained(model, path)
    assert sorted(report.mismatched) == ["fc.bias", "fc.weight"]
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert report.loaded == len(source.state_dict()) - 2 and not report.unexpected
    assert "shape-mismatched 2" in report.summary()
    assert torch.equal(model.get_classifier().weight, head_before)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items() if not k.startswith("fc."))


def test_smp_model_state_dict_loads_into_the_encoder(tmp_path):
    source = smp.create_model("Unet", encoder_name="tu-test_resnet", encoder_weights=None, classes=3)
    path = tmp_path / "unet.pth"
    torch.save(source.state_dict(), path)
    model = build_segmenter(SEG)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    report = load_pretrained(model.encoder, path, strip_prefix="encoder.")
    assert report.loaded == len(source.encoder.state_dict()) and not report.missing and not report.mismatched
    assert report.unexpected and all(k.startswith(("decoder.", "segmentation_head.")) for k in report.unexpected)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    assert all(torch.equal(model.decoder.state_dict()[k], v) for k, v in decoder_before.items())


def test_a_plain_encoder_state_dict_and_a_pneumoseg_checkpoint_also_fit(tmp_path):
    source = build_segmenter(SEG)
    save_file(source.encoder.state_dict(), str(tmp_path / "encoder.safetensors"))
    save_model(tmp_path / "best.safetensors", source, {"epoch": 1})
    for name in ("encoder.safetensors", "best.safetensors"):
        model = build_segmenter(SEG)
        report = load_pretrained(model.encoder, tmp_path / name, strip_prefix="encoder.")
        assert report.loaded == len(source.encoder.state_dict()) and not report.missing


def test_a_timm_backbone_checkpoint_fits_a_timm_universal_encoder(tmp_path):
    """smp's ``tu-`` encoders keep the timm backbone under ``model.``; a timm file has no prefix."""
    source = timm.create_model("test_resnet", num_classes=1000)
    save_file(source.state_dict(), str(tmp_path / "test_resnet.safetensors"))
    model = build_segmenter(SEG)
    assert all(k.startswith("model.") for k in model.encoder.state_dict())
    report = load_pretrained(model.encoder, tmp_path / "test_resnet.safetensors", strip_prefix="encoder.")
    assert not report.missing and not report.mismatched
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.encoder.state_dict()[f"model.{key}"], value)


def test_unusable_files_are_refused(tmp_path):
    model = build_classifier(CLS)
    with pytest.raises(PneumosegError, match="not found"):
        load_pretrained(model, tmp_path / "missing.pth")
    save_file({"something.else": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PneumosegError, match="none of its 1 tensors"):
        load_pretrained(model, tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PneumosegError, match="safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(PneumosegError):
        read_state_dict(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(PneumosegError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pth")
