"""A whole synthetic dataset in the SIIM release layout."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pneumoseg.data.rle import EMPTY_RLE, rle_encode
from pneumoseg.data.synth.card import ImageRecord, render_card
from pneumoseg.data.synth.dicom_writer import synth_uids, write_synth_dicom
from pneumoseg.data.synth.pneumothorax import load_shape_bank
from pneumoseg.data.synth.radiograph import synth_radiograph
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_text

HIGH_BIT_DEPTH_RATE = 0.15  # share of training files written 12/16-bit MONOCHROME1 (test: none)
CARD_NAME = "dataset-card.md"
TWO_INSTANCE_RATE = 0.20  # share of positive images with two instances (real: 23 % with two or more)


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate_dataset`` wrote."""

    out: Path
    size: int
    seed: int
    n_train: int
    n_test: int
    n_positive_train: int
    n_positive_test: int
    n_instances_train: int
    n_instances_test: int
    train_csv: Path
    test_csv: Path | None
    seconds: float
    card: Path | None = None

    def render(self) -> str:
        """A short multi-line report for the command line."""
        lines = [f"Synthetic dataset in {self.out} ({self.size}x{self.size}, seed {self.seed}, "
                 f"{self.seconds:.1f} s)"]
        for split, n, positive, instances, csv_path in (
            ("train", self.n_train, self.n_positive_train, self.n_instances_train, self.train_csv),
            ("test", self.n_test, self.n_positive_test, self.n_instances_test, self.test_csv),
        ):
            if n:
                images = self.out / f"dicom-images-{split}"
                lines.append(f"  {split}: {n} images, {positive} with pneumothorax "
                             f"({instances} instances); images in {images}, labels in {csv_path}")
        if self.card is not None:
            lines.append(f"  dataset card: {self.card}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _SplitResult:
    n_images: int
    n_positive: int
    n_instances: int


# Separate random streams per split, so adding test images changes no training image.
SPLIT_STREAMS = {"train": 0, "test": 1}


def _planned_instances(rng: np.random.Generator, n: int, positive_rate: float) -> np.ndarray:
    """Instances per image: exactly round(n * positive_rate) positives, ``TWO_INSTANCE_RATE`` of
    them doubles."""
    counts = np.zeros(n, np.int64)
    positives = rng.permutation(n)[: round(n * positive_rate)]
    counts[positives] = 1 + (rng.random(len(positives)) < TWO_INSTANCE_RATE)
    return counts


def _clear_previous(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier dataset in ``out`` unless asked to replace it."""
    previous = [out / name for split in SPLIT_STREAMS
                for name in (f"dicom-images-{split}", f"{split}-rle.csv")] + [out / CARD_NAME]
    found = [p for p in previous if p.exists()]
    if found and not overwrite:
        raise PneumosegError(
            f"{out} already holds a dataset ({found[0].name}); pass overwrite=True to replace it"
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


IMAGES_PER_WORKER = 16
"""Below this many images per process, starting processes costs more than it saves."""


@dataclass(frozen=True)
class _ImageJob:
    folder: Path
    split: str
    index: int
    n_instances: int
    patient_number: int
    seed: int
    size: int


def _make_image(job: _ImageJob) -> tuple[ImageRecord, list[str]]:
    """Render and write one film: its record and its label rows. Everything is drawn from the
    image's own generator, so images can be made in any order, in any process."""
    cv2.setNumThreads(1)  # one process per core: no nested OpenCV threads
    rng = np.random.default_rng([job.seed, SPLIT_STREAMS[job.split], job.index])
    radiograph = synth_radiograph(rng, job.size, job.n_instances, load_shape_bank())
    uids = synth_uids(job.seed, job.split, job.index)
    sex, age = str(rng.choice(["M", "F"])), int(rng.integers(16, 90))
    deep = job.split == "train" and rng.random() < HIGH_BIT_DEPTH_RATE
    bits = int(rng.choice([12, 16])) if deep else 8
    write_synth_dicom(
        job.folder / uids.study / uids.series / f"{uids.sop}.dcm",
        radiograph.film if deep else radiograph.image, uids,
        patient_number=job.patient_number, view=radiograph.view,
        pixel_spacing_mm=radiograph.pixel_spacing_mm, sex=sex, age=age, bits_stored=bits,
    )
    record = ImageRecord(job.split, radiograph.n_instances, float(radiograph.mask.sum()) * (1024 / job.size) ** 2,
                         radiograph.lookalikes, bits, radiograph.view)
    rows = [f"{uids.sop}, {rle_encode(m, fmt='relative')}" for m in radiograph.instances]
    return record, rows or [f"{uids.sop}, {EMPTY_RLE}"]


def _made_in_order(jobs: list[_ImageJob], workers: int) -> Iterator[tuple[ImageRecord, list[str]]]:
    """:func:`_make_image` over ``jobs``, in order, in ``workers`` processes (spawned, not forked:
    a fork of a process that has started torch's or OpenCV's thread pools can deadlock)."""
    if workers <= 1:
        yield from map(_make_image, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_make_image, jobs, chunksize=4)


def _generate_split(out: Path, split: str, n: int, first_patient: int, *, seed: int, size: int,
                    positive_rate: float, progress: bool, workers: int,
                    records: list[ImageRecord]) -> _SplitResult:
    plan = _planned_instances(np.random.default_rng([seed, SPLIT_STREAMS[split]]), n, positive_rate)
    jobs = [_ImageJob(out / f"dicom-images-{split}", split, index, int(plan[index]), first_patient + index, seed, size)
            for index in range(n)]
    rows = ["ImageId, EncodedPixels"]  # stage-1 style: a space after each comma
    made = _made_in_order(jobs, min(workers, max(1, n // IMAGES_PER_WORKER)))
    split_records = []
    for record, image_rows in tqdm(made, total=n, desc=f"synth {split}", disable=not progress, unit="img"):
        split_records.append(record)
        rows += image_rows
    atomic_write_text(out / f"{split}-rle.csv", "\n".join(rows) + "\n")
    records.extend(split_records)
    return _SplitResult(n, sum(r.n_instances > 0 for r in split_records), sum(r.n_instances for r in split_records))


def generate_dataset(
    out: Path,
    n: int,
    *,
    test_n: int = 0,
    seed: int = 0,
    size: int = 1024,
    positive_rate: float = 0.23,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> SynthSummary:
    """Write a synthetic SIIM-layout dataset of ``n`` training (and ``test_n`` test) images.

    Layout: ``out/dicom-images-train/<Study>/<Series>/<SOP>.dcm`` and ``out/train-rle.csv``
    (stage-1 style: ``ImageId, EncodedPixels``, one row per pneumothorax instance, ``-1`` for
    negatives); likewise ``dicom-images-test/`` and ``test-rle.csv`` when ``test_n > 0``.
    Exactly ``round(n * positive_rate)`` training images are positive (likewise for test).
    Deterministic: the same arguments give byte-identical files, whatever ``workers`` (processes;
    default: one per CPU core). An earlier dataset in ``out`` is an error unless ``overwrite``
    (then it is deleted first).
    """
    if n < 1 or test_n < 0 or size < 64 or not 0.0 <= positive_rate <= 1.0:
        raise PneumosegError(
            f"invalid synthetic dataset request: n={n} (>= 1), test_n={test_n} (>= 0), "
            f"size={size} (>= 64), positive_rate={positive_rate} (0..1)"
        )
    started = time.perf_counter()
    out = Path(out)
    _clear_previous(out, overwrite)
    records: list[ImageRecord] = []
    common = dict(seed=seed, size=size, positive_rate=positive_rate, progress=progress,
                  workers=max(1, workers or os.cpu_count() or 1), records=records)
    train = _generate_split(out, "train", n, 0, **common)
    test = _generate_split(out, "test", test_n, n, **common) if test_n else _SplitResult(0, 0, 0)
    command = (f"pneumoseg synth OUT --n {n} --test-n {test_n} --seed {seed} --size {size} "
               f"--positive-rate {positive_rate:g}")
    atomic_write_text(out / CARD_NAME, render_card(records, seed=seed, size=size, command=command))
    return SynthSummary(
        out=out, size=size, seed=seed,
        n_train=train.n_images, n_test=test.n_images,
        n_positive_train=train.n_positive, n_positive_test=test.n_positive,
        n_instances_train=train.n_instances, n_instances_test=test.n_instances,
        train_csv=out / "train-rle.csv", test_csv=out / "test-rle.csv" if test_n else None,
        card=out / CARD_NAME,
        seconds=time.perf_counter() - started,
    )
