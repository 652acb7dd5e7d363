"""Each model is fed the normalisation its encoder's pretrained weights expect, recorded with
the run and used again wherever the run is loaded (torch and ONNX back-ends)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from huggingface_hub import constants as hf_constants
from segmentation_models_pytorch.encoders import encoders as smp_encoders

from pneumoseg.config import load_config
from pneumoseg.data.cache import ImageCache
from pneumoseg.data.datasets import XrayDataset, match_samples
from pneumoseg.data.index import index_images
from pneumoseg.data.labels import read_labels
from pneumoseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, LEGACY, Normalisation, to_model_input
from pneumoseg.errors import PneumosegError
from pneumoseg.infer.onnx_backend import build_onnx_pipeline
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.models.normalisation import (
    classifier_normalisation,
    segmenter_normalisation,
    smp_encoder_normalisation,
)
from pneumoseg.runs.trained import load_trained
from pneumoseg.runs.checkpoint import load_tensors, save_tensors

HALF = (0.5, 0.5, 0.5)


def test_the_recipe_encoders_take_inputs_in_minus_one_to_one():
    """The talk's Xception and InceptionResNetV2 were trained on [-1, 1] inputs; resnet18 on ImageNet's."""
    siim, demo = load_config("siim"), load_config("demo")
    assert classifier_normalisation(siim.classifier).mean == HALF == classifier_normalisation(siim.classifier).std
    assert segmenter_normalisation(siim.segmenter).mean == HALF == segmenter_normalisation(siim.segmenter).std
    assert "legacy_xception" in classifier_normalisation(siim.classifier).source
    for norm in (classifier_normalisation(demo.classifier), segmenter_normalisation(demo.segmenter)):
        assert norm.mean == IMAGENET_MEAN and norm.std == IMAGENET_STD
    assert smp_encoder_normalisation("xception").mean == HALF
    assert smp_encoder_normalisation("tu-inception_resnet_v2").std == HALF


def test_smp_settings_in_the_local_hub_cache_win(tmp_path, monkeypatch):
    """smp keeps its encoders' preprocessing in the hub's config.json: when that file is cached
    (as `--pretrained imagenet` leaves it), it is read, with no network."""
    settings = smp_encoders["resnet18"]["pretrained_settings"]["imagenet"]
    owner, name = settings["repo_id"].split("/")
    snapshot = tmp_path / f"models--{owner}--{name}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    norm = smp_encoder_normalisation("resnet18")
    assert norm.mean == (0.1, 0.2, 0.3) and norm.std == (0.4, 0.5, 0.6) and "config.json" in norm.source


def test_to_model_input_applies_mean_and_std():
    grey = np.array([[0, 255]], np.uint8)
    x = to_model_input(grey, Normalisation(HALF, HALF))
    assert x.shape == (3, 1, 2)
    np.testing.assert_allclose(x[:, 0, 0], -1.0)
    np.testing.assert_allclose(x[:, 0, 1], 1.0)
    with pytest.raises(ValueError):
        Normalisation(HALF, (0.5, 0.0, 0.5))
    with pytest.raises(PneumosegError, match="run.json: bad normalisation"):
        Normalisation.from_json({"mean": [0.5]}, "run.json")


def test_datasets_feed_the_stage_normalisation(tiny_data):
    labels = read_labels(tiny_data.labels)
    sample = match_samples(index_images(tiny_data.images)[0], labels, [next(iter(labels.images))])[0]
    cache = ImageCache(32, None, enabled=False)
    half = XrayDataset([sample], cache, with_mask=False, normalisation=Normalisation(HALF, HALF))[0]["image"]
    imagenet = XrayDataset([sample], cache, with_mask=False)[0]["image"]
    np.testing.assert_allclose((half * 0.5 + 0.5)[0], (imagenet[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]), atol=1e-6)
    assert half.min() >= -1 and half.max() <= 1


def test_runs_record_the_normalisation_and_inference_uses_it(tiny_runs):
    """The tiny runs' backbone is timm's test_resnet, whose pretrained_cfg says mean = std = 0.5."""
    for run in (tiny_runs.cls, tiny_runs.seg):
        recorded = json.loads((run / "run.json").read_text())["normalisation"]
        assert recorded["mean"] == list(HALF) and recorded["std"] == list(HALF) and "test_resnet" in recorded["source"]
        assert load_trained(run, "best").normalisation.mean == HALF
    pipeline = build_torch_pipeline(tiny_runs.cls, tiny_runs.seg)
    assert pipeline.classifier.normalisation.mean == HALF and pipeline.segmenter.normalisation.std == HALF


def test_runs_that_record_none_load_with_imagenet_statistics(tiny_runs, tmp_path):
    """A checkpoint from before normalisation was recorded predicts as it always did."""
    old = tmp_path / "old-seg"
    shutil.copytree(tiny_runs.seg, old)
    for name in ("best.safetensors", "swa.safetensors"):
        tensors, meta = load_tensors(old / name)
        meta.pop("normalisation")
        save_tensors(old / name, tensors, meta)
    trained = load_trained(old, "auto")
    assert trained.normalisation == LEGACY and trained.normalisation.mean == IMAGENET_MEAN


def test_onnx_manifest_normalisation_drives_the_onnx_back_end(tiny_runs, tmp_path):
    from pneumoseg.export import export_onnx

    pytest.importorskip("onnxruntime")
    export_onnx(tiny_runs.cls, tiny_runs.seg, tmp_path / "onnx", check_outputs=False)
    pipeline = build_onnx_pipeline(tmp_path / "onnx")
    assert pipeline.classifier.normalisation.mean == HALF and pipeline.segmenter.normalisation.mean == HALF
    manifest = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    for kind in ("classifier", "segmenter"):
        del manifest[kind]["normalisation"]
    (tmp_path / "onnx" / "onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(PneumosegError, match="onnx.json: content_sha256 does not match"):
        build_onnx_pipeline(tmp_path / "onnx")  # an edited manifest is refused, not read with other statistics
