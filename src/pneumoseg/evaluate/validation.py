"""Which labelled images a system is scored on, its model outputs there, and its final masks.

Samples: the validation split the segmenter was trained with (:func:`validation_samples`) or
every labelled image of a held-out folder (:func:`labelled_samples`). Either list goes through
the same :func:`outputs_from_runs`. Masks are scored at the outputs' evaluation size (see
:mod:`pneumoseg.infer.outputs`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pneumoseg.config import PostprocessConfig
from pneumoseg.data.datasets import Sample, match_samples
from pneumoseg.data.index import index_images
from pneumoseg.data.labels import read_labels
from pneumoseg.data.split_samples import load_split
from pneumoseg.errors import PneumosegError
from pneumoseg.metrics import dice_scores
from pneumoseg.infer.outputs import ModelOutputs, collect_outputs
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.postprocess import postprocess
from pneumoseg.runs.run_info import read_run_config, read_run_info
from pneumoseg.runs.trained import has_checkpoint


def recorded_splits(run_dir: Path) -> Path | None:
    """The splits.json a training run used (from its run.json), if recorded."""
    info = read_run_info(run_dir)
    return Path(info.splits) if info else None


def check_same_split(cls_run: Path | None, seg_run: Path) -> None:
    """Both stages must have been validated on one split file (same SHA-256) and fold: otherwise
    the classifier's validation images were training images of the segmenter, or the reverse."""
    if cls_run is None:
        return
    cls, seg = read_run_info(cls_run), read_run_info(seg_run)
    if cls is None and seg is None:
        return  # nothing recorded to compare; the split file given is used for both
    both_hashed = cls is not None and seg is not None and cls.splits_sha256 and seg.splits_sha256
    for key, what in (("splits_sha256" if both_hashed else "splits", "split files"), ("fold", "folds")):
        ours, theirs = getattr(cls, key, None), getattr(seg, key, None)
        if ours != theirs:
            raise PneumosegError(f"{cls_run} and {seg_run} were trained on different {what} ({ours} and {theirs}); "
                                 "train both on one --splits file and fold")


def validation_samples(seg_run: Path, images: Path, labels: Path, *, splits_path: Path | None = None,
                       fold: int = 0, cls_run: Path | None = None) -> list[Sample]:
    """The validation images of the split the segmenter (and the classifier, checked to share
    it) was trained with. The split file is only read, never made."""
    check_same_split(cls_run, seg_run)
    info = read_run_info(seg_run)
    trained_fold = info.fold if info else fold
    if trained_fold != fold:
        raise PneumosegError(f"{seg_run} was trained on fold {trained_fold}, not --fold {fold}")
    config = read_run_config(seg_run)
    splits_path = splits_path or recorded_splits(seg_run)
    if splits_path is None:
        raise PneumosegError(f"{seg_run}: the run records no split (no run.json); pass the split file it was "
                             "trained with as --splits")
    return load_split(images, labels, config.data, splits_path, fold=fold).val


def labelled_samples(images: Path, labels: Path) -> list[Sample]:
    """Every image under ``images`` that has a row in ``labels`` (a held-out test set)."""
    index, _ = index_images(images)
    label_set = read_labels(labels)
    ids = [i for i in label_set.images if i in index]
    if not ids:
        raise PneumosegError(f"no image in {images} has a label in {labels}; run `pneumoseg check-data`")
    return match_samples(index, label_set, ids)


def outputs_from_runs(cls_run: Path | None, seg_run: Path, samples: list[Sample], *, checkpoint: str = "auto",
                      tta: bool = False, device: str = "cpu", desc: str = "inference",
                      progress: bool = True, size: int | None = None) -> ModelOutputs:
    """Run the trained models (the classifier only when ``cls_run`` is given) on ``samples``."""
    pipeline = build_torch_pipeline(cls_run, seg_run, seg_checkpoint=checkpoint, tta=tta, device=device)
    return collect_outputs(samples, pipeline.segmenter, pipeline.classifier, desc=desc, progress=progress, size=size)


def predicted_masks(out: ModelOutputs, post: PostprocessConfig, *, gated: bool = True) -> np.ndarray:
    """Final masks at the evaluation size for one post-processing setting, (N, S, S) bool."""
    masks = np.stack([postprocess(p.astype(np.float32), post) for p in out.seg_prob]) if len(out.seg_prob) \
        else np.zeros(out.truth.shape, bool)
    if gated and out.cls_prob is not None:
        masks[out.cls_prob < post.cls_threshold] = False
    return masks


def per_image_dice(out: ModelOutputs, post: PostprocessConfig, *, gated: bool = True) -> np.ndarray:
    """SIIM Dice per image for one post-processing setting (gated by the classifier)."""
    return dice_scores(predicted_masks(out, post, gated=gated), out.truth)


def ablation_outputs(cls_run: Path, seg_run: Path, samples: list[Sample], *, tta: bool = True, device: str = "cpu",
                     desc: str = "inference", progress: bool = True, size: int | None = None) -> dict[str, ModelOutputs]:
    """The outputs the ablation needs on ``samples`` (any labelled list): three passes at most.

    Best checkpoint with the classifier; SWA checkpoint without it (the classifier
    probabilities are the same, so they are reused); and, with ``tta``, the final checkpoint
    (SWA, else best) with hflip TTA on both models. ``size``: the evaluation size (default:
    the segmenter's input size, at most 512).
    """
    has_swa = has_checkpoint(seg_run, "swa")
    common = dict(device=device, progress=progress, size=size)
    outputs = {"best": outputs_from_runs(cls_run, seg_run, samples, checkpoint="best", desc=f"{desc} (best)", **common)}
    if has_swa:
        swa = outputs_from_runs(None, seg_run, samples, checkpoint="swa", desc=f"{desc} (SWA)", **common)
        outputs["swa"] = dataclasses.replace(swa, cls_prob=outputs["best"].cls_prob)
    if tta:
        which = "swa" if has_swa else "best"
        outputs[f"{which}+tta"] = outputs_from_runs(cls_run, seg_run, samples, checkpoint=which, tta=True,
                                                    desc=f"{desc} ({which} + TTA)", **common)
    return outputs
