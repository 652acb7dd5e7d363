"""Train/validation splits of image ids, stratified by pneumothorax presence.

A split file is a JSON list of folds, ``[{"train": [ids...], "val": [ids...]}, ...]``: one
fold for a hold-out split (the seed talk's 83.33 % / 16.67 %), ``n_folds`` for k-fold
cross-validation. Splits are deterministic for a seed whatever order the ids come in, and
ids are sorted inside each list so that files diff cleanly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_json

Splits = list[dict[str, list[str]]]
PARTS = ("train", "val")


def holdout_split(
    image_ids: Sequence[str],
    positive: Sequence[bool],
    *,
    val_fraction: float = 1 / 6,
    seed: int = 0,
    stratify: bool = True,
) -> Splits:
    """One fold holding out ``val_fraction`` of the images (same positive rate when stratified)."""
    if not 0 < val_fraction < 1:
        raise PneumosegError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    ids, labels = _sorted_ids_and_labels(image_ids, positive)
    try:
        train, val = train_test_split(
            ids, test_size=val_fraction, random_state=seed, stratify=labels if stratify else None
        )
    except ValueError as exc:  # too few images, or a class too small to stratify
        raise _split_error(ids, labels, exc) from exc
    return [_fold(train, val)]


def kfold_split(
    image_ids: Sequence[str], positive: Sequence[bool], *, n_folds: int = 5, seed: int = 0
) -> Splits:
    """``n_folds`` stratified folds; every image is in exactly one fold's ``val``."""
    ids, labels = _sorted_ids_and_labels(image_ids, positive)
    try:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return [_fold(ids[train], ids[val]) for train, val in splitter.split(ids, labels)]
    except ValueError as exc:  # n_folds < 2, or more folds than images of a class
        raise _split_error(ids, labels, exc) from exc


def save_splits(splits: Splits, path: str | PathLike[str]) -> None:
    """Write ``splits`` as JSON atomically: a reader never sees a half-written file."""
    atomic_write_json(Path(path), splits)


def load_splits(path: str | PathLike[str]) -> Splits:
    """Read a split file; raises :class:`PneumosegError` naming the file if it is malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PneumosegError(f"{path}: cannot read split file ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PneumosegError(f"{path}: not a JSON split file ({exc})") from exc
    problem = _structure_problem(data)
    if problem:
        raise PneumosegError(f"{path}: invalid split file: {problem}")
    return data


def load_or_create_splits(
    path: str | PathLike[str],
    image_ids: Sequence[str],
    positive: Sequence[bool],
    *,
    n_folds: int | None = None,
    val_fraction: float = 1 / 6,
    seed: int = 0,
    save: bool = True,
) -> Splits:
    """Reuse the split file at ``path`` if it covers exactly these ids, else create it (and
    write it when ``save``; under torchrun only rank 0 writes, the others compute the same).

    ``n_folds=None`` makes a hold-out split, otherwise k folds. An existing file made for
    other images or another number of folds is an error, never silently replaced: results
    of models trained on it would no longer be comparable.
    """
    path = Path(path)
    if not path.exists():
        if n_folds is None:
            splits = holdout_split(image_ids, positive, val_fraction=val_fraction, seed=seed)
        else:
            splits = kfold_split(image_ids, positive, n_folds=n_folds, seed=seed)
        if save:
            save_splits(splits, path)
        return splits
    splits = load_splits(path)
    mismatch = _mismatch(splits, set(image_ids), n_folds or 1)
    if mismatch:
        raise PneumosegError(
            f"{path}: existing split file does not fit this data ({mismatch}); "
            "delete it to make a new split, or pass another splits path"
        )
    return splits


def _sorted_ids_and_labels(
    image_ids: Sequence[str], positive: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """Ids sorted (so a seed gives one split whatever the input order) with their labels."""
    if len(image_ids) != len(positive):
        raise PneumosegError(f"{len(image_ids)} image ids but {len(positive)} positive flags")
    if len(set(image_ids)) != len(image_ids):
        raise PneumosegError("image ids must be unique to split them")
    order = np.argsort(np.asarray(image_ids, dtype=str), kind="stable")
    return np.asarray(image_ids, dtype=str)[order], np.asarray(positive, dtype=bool)[order]


def _split_error(ids: np.ndarray, labels: np.ndarray, exc: ValueError) -> PneumosegError:
    return PneumosegError(f"cannot split {len(ids)} images ({int(labels.sum())} positive): {exc}")


def _fold(train: np.ndarray, val: np.ndarray) -> dict[str, list[str]]:
    return {"train": sorted(map(str, train)), "val": sorted(map(str, val))}


def _structure_problem(data: object) -> str | None:
    """What is wrong with a loaded split file, or None if it is a valid list of folds."""
    if not isinstance(data, list) or not data:
        return 'expected a non-empty list of folds [{"train": [...], "val": [...]}, ...]'
    for number, fold in enumerate(data):
        if not isinstance(fold, dict) or set(fold) != set(PARTS):
            return f'fold {number} must be an object with exactly the keys "train" and "val"'
        for part in PARTS:
            ids = fold[part]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                return f'fold {number}: "{part}" must be a list of image id strings'
            if len(set(ids)) != len(ids):
                return f'fold {number}: "{part}" lists an image id twice'
        if set(fold["train"]) & set(fold["val"]):
            return f"fold {number}: train and val share image ids"
    return None


def _mismatch(splits: Splits, image_ids: set[str], n_folds: int) -> str | None:
    """Why ``splits`` does not fit these ids and fold count, or None if it does."""
    if len(splits) != n_folds:
        return f"it has {len(splits)} fold(s), {n_folds} wanted"
    for number, fold in enumerate(splits):
        covered = set(fold["train"]) | set(fold["val"])
        if covered != image_ids:
            return (
                f"fold {number} lacks {len(image_ids - covered)} of the images "
                f"and has {len(covered - image_ids)} others"
            )
    return None
