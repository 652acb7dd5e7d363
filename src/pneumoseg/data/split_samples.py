"""The samples of one fold: a split file matched against an image folder and a label file.

Training may create the split file (seeded, stratified; :mod:`pneumoseg.data.splits`);
evaluation (tune, report) only reads it, so that it can never score a model on images other
than the ones it was validated on. A run records the split it used by path, SHA-256 and fold
(:func:`split_record`), so two runs can be checked to share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoseg.config import DataConfig
from pneumoseg.data.datasets import Sample, match_samples
from pneumoseg.data.index import index_images
from pneumoseg.data.labels import read_labels
from pneumoseg.data.splits import load_or_create_splits, load_splits
from pneumoseg.errors import PneumosegError
from pneumoseg.io import sha256_of

SPLITS_FILE = "splits.json"


@dataclass
class SplitData:
    train: list[Sample]
    val: list[Sample]
    splits_path: Path
    fold: int
    created: bool = False
    """True when this call wrote the split file."""


def load_split(images: Path, labels: Path, data: DataConfig, splits_path: Path, *, fold: int = 0,
               create: bool = False, save: bool = True) -> SplitData:
    """Match images with labels and pick fold ``fold`` of ``splits_path``.

    With ``create`` (training) a missing file is made from these images (written when ``save``);
    without it (evaluation) a missing file is a one-line error: scoring never makes a split."""
    index, _ = index_images(images)
    label_set = read_labels(labels)
    ids = [i for i in label_set.images if i in index]
    if not ids:
        raise PneumosegError(f"no image in {images} has a label in {labels}; run `pneumoseg check-data`")
    splits_path = Path(splits_path)
    existed = splits_path.is_file()
    if not existed and not create:
        raise PneumosegError(f"{splits_path}: split file not found; tune and report only read the split the runs "
                             "were trained with (pass it with --splits)")
    if create:
        positive = [label_set.images[i].positive for i in ids]
        splits = load_or_create_splits(splits_path, ids, positive, n_folds=data.n_folds,
                                       val_fraction=data.val_fraction, seed=data.split_seed, save=save)
    else:
        splits = load_splits(splits_path)
    if not 0 <= fold < len(splits):
        raise PneumosegError(f"--fold {fold} is out of range: {splits_path} has {len(splits)} fold(s)")
    chosen = splits[fold]
    return SplitData(match_samples(index, label_set, chosen["train"]), match_samples(index, label_set, chosen["val"]),
                     splits_path, fold, created=not existed)


def split_record(split: SplitData) -> dict[str, Any]:
    """What run.json keeps of the split: path, fingerprint and fold."""
    return {"splits": str(split.splits_path.resolve()), "splits_sha256": sha256_of(split.splits_path),
            "fold": split.fold}
