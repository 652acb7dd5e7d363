"""Which input normalisation a model's encoder expects: the mean and std its pretrained weights
were trained with, from the libraries' own records, never from numbers of ours.

- A timm classifier (``legacy_xception``, the talk's): timm's ``pretrained_cfg`` for it.
- An smp encoder (the segmenter, and ``smp:<encoder>`` classifiers): smp's preprocessing
  settings for its ImageNet weights when their ``config.json`` is in the local Hugging Face
  cache (smp keeps them on the hub); else timm's ``pretrained_cfg`` of the same network
  (:data:`SMP_TIMM_TWINS`), which is what smp's ports were converted from.

The recipe's backbones (Xception, InceptionResNetV2) were trained on inputs scaled to [-1, 1]
(mean = std = 0.5); ResNets and EfficientNets on ImageNet statistics. The same numbers are used
when training from scratch, so a run can later start from pretrained weights unchanged. Nothing
here touches the network.
"""

from __future__ import annotations

import json

import timm
from segmentation_models_pytorch.encoders import encoders as smp_encoders

from pneumoseg.config import CLASSIFIER_ENCODER_PREFIX, ClassifierConfig, SegmenterConfig
from pneumoseg.data.preprocess import IMAGENET, Normalisation

SMP_TIMM_TWINS = {
    "inceptionresnetv2": "inception_resnet_v2",
    "xception": "legacy_xception",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "efficientnet-b0": "efficientnet_b0",
}
"""smp encoder → the timm model with the same architecture and ImageNet weights."""


def timm_normalisation(arch: str) -> Normalisation | None:
    """timm's ``pretrained_cfg`` mean/std for ``arch`` (None when timm has no pretrained config)."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None or cfg.mean is None or cfg.std is None or len(cfg.mean) != 3:
        return None
    return Normalisation(tuple(cfg.mean), tuple(cfg.std), f"timm pretrained_cfg of {arch} ({cfg.tag})")


def _cached_smp_settings(encoder: str) -> Normalisation | None:
    """smp's own preprocessing settings, read only from the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    settings = smp_encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings:
        return None
    path = try_to_load_from_cache(settings["repo_id"], "config.json", revision=settings.get("revision"))
    if not isinstance(path, str):
        return None
    try:
        config = json.loads(open(path).read())
        return Normalisation(tuple(config["mean"]), tuple(config["std"]), f"smp {settings['repo_id']} config.json")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def smp_encoder_normalisation(encoder: str) -> Normalisation:
    """What the smp encoder's ImageNet weights expect (ImageNet statistics when nobody says)."""
    if encoder.startswith("tu-"):
        return timm_normalisation(encoder.removeprefix("tu-")) or IMAGENET
    twin = SMP_TIMM_TWINS.get(encoder)
    return _cached_smp_settings(encoder) or (timm_normalisation(twin) if twin else None) or IMAGENET


def classifier_normalisation(cfg: ClassifierConfig) -> Normalisation:
    if cfg.arch.startswith(CLASSIFIER_ENCODER_PREFIX):
        return smp_encoder_normalisation(cfg.arch.removeprefix(CLASSIFIER_ENCODER_PREFIX))
    return timm_normalisation(cfg.arch) or IMAGENET


def segmenter_normalisation(cfg: SegmenterConfig) -> Normalisation:
    return smp_encoder_normalisation(cfg.encoder)
