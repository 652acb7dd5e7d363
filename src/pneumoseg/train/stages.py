"""Training entry points: ``train_classifier`` and ``train_segmenter`` over a SIIM-layout folder.

Both read the images and labels, reuse (or create) the seeded stratified ``splits.json`` (at
``--splits``, else in the run folder), build
the datasets and the model, load local pretrained weights when given, and hand over to the
shared loop in :mod:`pneumoseg.train.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pneumoseg.config import Config
from pneumoseg.data.augment import build_train_transform
from pneumoseg.data.cache import ImageCache
from pneumoseg.data.datasets import Sample, XrayDataset
from pneumoseg.data.split_samples import SPLITS_FILE, SplitData, load_split, split_record
from pneumoseg.errors import PneumosegError
from pneumoseg.metrics import SegmentationMetric, classification_metrics
from pneumoseg.models import (
    build_classifier,
    build_segmenter,
    classifier_normalisation,
    load_pretrained,
    segmenter_normalisation,
)
from pneumoseg.models.imagenet import imagenet_classifier, imagenet_segmenter, is_imagenet
from pneumoseg.models.segmenter import set_encoder_frozen
from pneumoseg.runtime import configure_torch
from pneumoseg.runs.run_info import RunInfo, write_run_info
from pneumoseg.train import distributed
from pneumoseg.train.loop import FitResult, Stage, Trainer
from pneumoseg.train.losses import DiceBCELoss


def resolve_splits_path(out: Path, splits_path: Path | None) -> Path:
    """Where training keeps its split: ``--splits`` when given, else the run folder (never
    beside the user's labels, which may sit on a read-only mount)."""
    return Path(splits_path) if splits_path else Path(out) / SPLITS_FILE


def training_split(images: Path, labels: Path, config: Config, out: Path, *, fold: int,
                   splits_path: Path | None) -> SplitData:
    split = load_split(images, labels, config.data, resolve_splits_path(out, splits_path), fold=fold, create=True,
                       save=distributed.env_info().is_main)
    _say(f"split: {split.splits_path} ({'created' if split.created else 'reused'}), fold {fold}")
    return split


class ClassifierMeter:
    """Collects probabilities to compute MCC, precision, recall, accuracy and ROC-AUC."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def update(self, logits: torch.Tensor, batch: dict[str, Any]) -> None:
        self.scores.append(torch.sigmoid(logits).flatten().cpu().numpy())
        self.labels.append(batch["label"].flatten().cpu().numpy() > 0.5)

    def aggregate(self) -> dict[str, float]:
        metrics = classification_metrics(np.concatenate(self.labels), np.concatenate(self.scores), self.threshold)
        return {k: float(metrics[k]) for k in ("mcc", "precision", "recall", "accuracy", "roc_auc")}


class SegmenterMeter:
    """Per-image IoU, F1 and F2 of the thresholded prediction (mean over images)."""

    def __init__(self) -> None:
        self.metric = SegmentationMetric()

    def update(self, logits: torch.Tensor, batch: dict[str, Any]) -> None:
        pred = (torch.sigmoid(logits[:, 0]) > 0.5).cpu().numpy()
        self.metric.update(pred, batch["mask"][:, 0].cpu().numpy() > 0.5)

    def aggregate(self) -> dict[str, float]:
        scores = self.metric.aggregate()
        return {k: float(scores[k]) for k in ("iou", "f1", "f2")}


def _say(text: str) -> None:
    if distributed.env_info().is_main:
        tqdm.write(text)


def _load_weights(model: nn.Module, pretrained: Path | None, *, strip_prefix: str | None = None) -> None:
    if pretrained is None:
        _say("no --pretrained weights given: training starts from random initialisation")
        return
    _say(load_pretrained(model, pretrained, strip_prefix=strip_prefix).summary())


def _datasets(config: Config, stage: Stage, train: list[Sample], val: list[Sample]):
    cache = ImageCache(stage.cfg.image_size, Path(config.data.cache_dir) if config.data.cache_dir else None,
                       enabled=config.data.cache)
    common = dict(with_mask=stage.kind == "segmenter", seed=config.seed, normalisation=stage.normalisation)
    train_set = XrayDataset(train, cache, build_train_transform(stage.cfg.augment), **common)
    val_set = XrayDataset(val, cache, None, **common)
    return train_set, val_set


def classifier_stage(config: Config, pretrained: Path | str | None = None) -> Stage:
    """``pretrained``: a local weight file, "imagenet" (the libraries' cache) or None (scratch)."""
    torch.manual_seed(config.seed)
    if is_imagenet(pretrained):
        model = imagenet_classifier(config.classifier, config.name)
        _say(f"pretrained: ImageNet weights for {config.classifier.arch} from the timm/smp cache")
    else:
        model = build_classifier(config.classifier)
        _load_weights(model, pretrained)
    bce = nn.BCEWithLogitsLoss()
    return Stage(kind="classifier", model=model, cfg=config.classifier,
                 loss_fn=lambda logits, batch: bce(logits, batch["label"]),
                 new_meter=lambda: ClassifierMeter(config.classifier.threshold), select_metric="mcc",
                 frozen_epochs=config.classifier.frozen_epochs,
                 set_frozen=set_encoder_frozen if config.classifier.frozen_epochs else None,
                 normalisation=classifier_normalisation(config.classifier))


def segmenter_stage(config: Config, pretrained: Path | str | None = None) -> Stage:
    """``pretrained``: a local weight file for the encoder, "imagenet" (the smp cache) or None."""
    cfg = config.segmenter
    torch.manual_seed(config.seed)
    if is_imagenet(pretrained):
        model = imagenet_segmenter(cfg, config.name)
        _say(f"pretrained: ImageNet weights for the {cfg.encoder} encoder from the smp cache")
    else:
        model = build_segmenter(cfg)
        _load_weights(model.encoder, pretrained, strip_prefix="encoder.")
    loss = DiceBCELoss(cfg.dice_weight, cfg.bce_weight)
    return Stage(kind="segmenter", model=model, cfg=cfg, loss_fn=lambda logits, batch: loss(logits, batch["mask"]),
                 new_meter=SegmenterMeter, select_metric="iou", frozen_epochs=cfg.frozen_epochs,
                 set_frozen=set_encoder_frozen, swa_window=(cfg.swa_start, cfg.swa_end),
                 normalisation=segmenter_normalisation(cfg))


def segmenter_samples(samples: list[Sample], negative_fraction: float, seed: int) -> list[Sample]:
    """All positive images plus a seeded share of the negatives."""
    positives = [s for s in samples if s.positive]
    negatives = [s for s in samples if not s.positive]
    n_neg = int(round(negative_fraction * len(negatives)))
    picked = np.random.default_rng(seed).permutation(len(negatives))[:n_neg]
    return positives + [negatives[i] for i in sorted(picked)]


def _fit(stage: Stage, config: Config, split: SplitData, train: list[Sample], val: list[Sample], out: Path,
         *, resume: bool, progress: bool) -> FitResult:
    configure_torch(config.runtime)
    train_set, val_set = _datasets(config, stage, train, val)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if distributed.env_info().is_main:  # under torchrun only rank 0 writes
        write_run_info(out, RunInfo(stage=stage.kind, **split_record(split), n_train=len(train), n_val=len(val),
                                    normalisation=stage.normalisation.to_json()))
        tqdm.write(f"input normalisation: mean {list(stage.normalisation.mean)}, std {list(stage.normalisation.std)} "
                   f"({stage.normalisation.source})")
    return Trainer(stage, train_set, val_set, config, out, progress=progress).fit(resume=resume)


def train_classifier(images: Path, labels: Path, config: Config, out: Path, *, fold: int = 0,
                     pretrained: Path | str | None = None, resume: bool = False, splits_path: Path | None = None,
                     progress: bool = True) -> FitResult:
    """Train the first stage on all labelled images of the split; best checkpoint by validation MCC."""
    split = training_split(images, labels, config, out, fold=fold, splits_path=splits_path)
    return _fit(classifier_stage(config, pretrained), config, split, split.train, split.val, out,
                resume=resume, progress=progress)


def train_segmenter(images: Path, labels: Path, config: Config, out: Path, *, fold: int = 0,
                    pretrained: Path | str | None = None, resume: bool = False, splits_path: Path | None = None,
                    progress: bool = True) -> FitResult:
    """Train the second stage on the positive images (plus a configurable share of negatives),
    validated on the split's positive images; best checkpoint by IoU, plus the SWA checkpoint."""
    split = training_split(images, labels, config, out, fold=fold, splits_path=splits_path)
    train = segmenter_samples(split.train, config.segmenter.negative_fraction, config.seed)
    val = [s for s in split.val if s.positive]
    if not train or not val:
        raise PneumosegError(f"the split has {len(train)} positive training and {len(val)} positive validation "
                             "images; the segmenter needs at least one of each")
    return _fit(segmenter_stage(config, pretrained), config, split, train, val, out, resume=resume, progress=progress)
