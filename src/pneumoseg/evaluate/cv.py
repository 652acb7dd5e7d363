"""Out-of-fold outputs of a cross-validation: every training image predicted by the fold that
did not train on it, so post-processing can be chosen (and the ablation scored) on all of them.

They are computed once per pair of CV folders and kept in the segmenter CV's ``oof/`` folder
as memory-mapped ``.npy`` files at a reduced, stated resolution (``OOF_SIZE``; float16 maps),
so 12,000 films at 1024² never sit in memory: 12,047 × 256² × 2 bytes is 1.6 GB on disk per
variant, read page by page. A fold's rows are written as soon as it is done, and a fold is
not computed again on a rerun.

Variants, as the ablation needs them (:func:`~pneumoseg.evaluate.validation.ablation_outputs`):
``best`` (with the classifier), ``swa`` and ``swa+tta``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from pneumoseg.data.datasets import Sample
from pneumoseg.data.split_samples import SPLITS_FILE, load_split
from pneumoseg.errors import PneumosegError
from pneumoseg.evaluate.validation import ablation_outputs, check_same_split
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.io import atomic_write_json
from pneumoseg.runs.cv import fold_run, fold_runs, read_cv
from pneumoseg.runs.run_info import read_run_config

OOF_SIZE = 256
SHARED = {"images": np.uint8, "truth": np.bool_, "truth_fraction": np.float64, "spacing": np.float64}


@dataclass(frozen=True)
class OofStore:
    folder: Path
    n_folds: int
    size: int

    @property
    def meta_path(self) -> Path:
        return self.folder / "oof.json"

    def array_path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def done_path(self, fold: int) -> Path:
        return self.folder / f"fold-{fold}.done"


def _store(cls_cv: Path | None, seg_cv: Path, size: int) -> OofStore:
    """One store per classifier CV (or none: segmentation alone) and size."""
    manifest = read_cv(seg_cv)
    tag = "seg-only" if cls_cv is None else f"cls-{(read_cv(cls_cv).content_sha256 or '')[:12]}"
    return OofStore(Path(seg_cv) / "oof" / f"{tag}-{size}", manifest.n_folds, size)


def _fold_samples(seg_cv: Path, images: Path, labels: Path, n_folds: int) -> list[list[Sample]]:
    data = read_run_config(fold_run(seg_cv, 0)).data
    return [load_split(images, labels, data, Path(seg_cv) / SPLITS_FILE, fold=k).val for k in range(n_folds)]


def _check_folds(cls_cv: Path | None, seg_cv: Path) -> None:
    seg_runs = fold_runs(seg_cv)
    if cls_cv is None:
        return
    cls_runs = fold_runs(cls_cv)
    if len(cls_runs) != len(seg_runs):
        raise PneumosegError(f"{cls_cv} has {len(cls_runs)} folds and {seg_cv} {len(seg_runs)}; train both with one --folds")
    for cls_run, seg_run in zip(cls_runs, seg_runs):
        check_same_split(cls_run, seg_run)


def _create(store: OofStore, ids: list[str], variants: list[str], gated: bool, cls_cv: Path | None) -> None:
    store.folder.mkdir(parents=True, exist_ok=True)
    n, s = len(ids), store.size
    shapes = {"images": (n, s, s), "truth": (n, s, s), "truth_fraction": (n,), "spacing": (n, 2)}
    for name, dtype in SHARED.items():
        open_memmap(store.array_path(name), mode="w+", dtype=dtype, shape=shapes[name]).flush()
    for variant in variants:
        open_memmap(store.array_path(f"{variant}.seg_prob"), mode="w+", dtype=np.float16, shape=(n, s, s)).flush()
        if gated:
            open_memmap(store.array_path(f"{variant}.cls_prob"), mode="w+", dtype=np.float32, shape=(n,)).flush()
    atomic_write_json(store.meta_path, {"image_ids": ids, "n_folds": store.n_folds, "eval_size": s,
                                        "variants": variants, "classifier_cv": str(cls_cv) if cls_cv else None})


def _write_fold(store: OofStore, rows: slice, outputs: dict[str, ModelOutputs]) -> None:
    first = next(iter(outputs.values()))
    for name in SHARED:
        array = open_memmap(store.array_path(name), mode="r+")
        array[rows] = getattr(first, name)
        array.flush()
    for variant, out in outputs.items():
        array = open_memmap(store.array_path(f"{variant}.seg_prob"), mode="r+")
        array[rows] = out.seg_prob
        array.flush()
        if out.cls_prob is not None:
            array = open_memmap(store.array_path(f"{variant}.cls_prob"), mode="r+")
            array[rows] = out.cls_prob
            array.flush()


def _read(store: OofStore) -> dict[str, ModelOutputs]:
    meta = json.loads(store.meta_path.read_text())
    shared = {name: np.load(store.array_path(name), mmap_mode="r") for name in SHARED}
    outputs = {}
    for variant in meta["variants"]:
        cls_path = store.array_path(f"{variant}.cls_prob")
        outputs[variant] = ModelOutputs(meta["image_ids"], shared["images"], shared["truth"],
                                        np.load(store.array_path(f"{variant}.seg_prob"), mmap_mode="r"),
                                        np.load(cls_path) if cls_path.is_file() else None,
                                        shared["truth_fraction"], shared["spacing"])
    return outputs


def oof_outputs(cls_cv: Path | None, seg_cv: Path, images: Path, labels: Path, *, size: int | None = None,
                device: str = "cpu", progress: bool = True) -> dict[str, ModelOutputs]:
    """The ablation's outputs on every training image, out of fold (computed on first use), at
    ``size`` (default: ``OOF_SIZE``, or the segmenter's input size when smaller)."""
    _check_folds(cls_cv, seg_cv)
    size = size or min(OOF_SIZE, read_run_config(fold_run(seg_cv, 0)).segmenter.image_size)
    store = _store(cls_cv, seg_cv, size)
    folds = _fold_samples(seg_cv, images, labels, store.n_folds)
    ids = [s.image_id for fold in folds for s in fold]
    if store.meta_path.is_file() and json.loads(store.meta_path.read_text())["image_ids"] != ids:
        raise PneumosegError(f"{store.folder}: made from other images; delete it to compute the out-of-fold outputs again")
    offsets = np.cumsum([0] + [len(fold) for fold in folds])
    for k, samples in enumerate(folds):
        if store.done_path(k).exists():
            continue
        cls_run = fold_run(cls_cv, k) if cls_cv is not None else None
        outputs = ablation_outputs(cls_run, fold_run(seg_cv, k), samples, device=device, size=size,
                                   desc=f"out-of-fold, fold {k}", progress=progress)
        if not store.meta_path.is_file():
            _create(store, ids, list(outputs), cls_cv is not None, cls_cv)
        _write_fold(store, slice(offsets[k], offsets[k + 1]), outputs)
        store.done_path(k).touch()
    return _read(store)


def oof_source(cv_dir: Path, size: int) -> dict[str, object]:
    """What a post-processing tuned on these outputs records about them."""
    return {"out_of_fold": True, "n_folds": read_cv(cv_dir).n_folds, "eval_size": size}
