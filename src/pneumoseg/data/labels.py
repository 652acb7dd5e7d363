"""Reading and writing SIIM label CSVs (``ImageId, EncodedPixels``) in every published variant.

The variants seen in the wild: with or without a UTF-8 BOM; header ``ImageId, EncodedPixels``
(stage 1, a space after each comma), ``ImageId,EncodedPixels`` (stage 2) or no header at all;
empty images as ``-1`` or `` -1``; gzip-compressed (``.csv.gz``). An image with several
pneumothorax instances has one row per instance and its mask is their union.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from pneumoseg.data.rle import (
    EMPTY_RLE,
    RleFormat,
    check_rle_params,
    pixels_to_mask,
    rle_runs,
    run_pixels,
)
from pneumoseg.errors import LabelFileError
from pneumoseg.io import atomic_path

HEADER_FIRST_FIELD = "imageid"
FIELD_LIMIT = 1 << 24
"""Largest CSV field read (16 MiB): a 1024² mask at its worst (alternating pixels) needs about
5 MB of RLE; Python's default of 131,072 characters refuses valid masks."""


@dataclass(frozen=True)
class ImageLabel:
    """The labels of one image: one RLE string per pneumothorax instance."""

    image_id: str
    rles: tuple[str, ...]  # one per instance, stripped; () for a negative image
    row: int  # 1-based line number of the image's first row in the file

    @property
    def positive(self) -> bool:
        return bool(self.rles)

    @property
    def n_instances(self) -> int:
        return len(self.rles)


@dataclass
class LabelSet:
    """All images of a label file, in order of first appearance."""

    path: Path
    images: dict[str, ImageLabel]
    # Line numbers of rows that add nothing: a repeat of an earlier identical row, or a -1
    # row for an image that also has RLE rows (whichever comes first).
    duplicate_rows: list[int] = field(default_factory=list)
    multi_row: dict[str, list[int]] = field(default_factory=dict)
    """ImageIds given on more than one row, with their lines: normal in a label file (one row
    per instance), a mistake in a submission (one row per image)."""

    @property
    def positive_ids(self) -> list[str]:
        return [image_id for image_id, label in self.images.items() if label.positive]

    @property
    def negative_ids(self) -> list[str]:
        return [image_id for image_id, label in self.images.items() if not label.positive]

    @property
    def n_instances(self) -> int:
        return sum(label.n_instances for label in self.images.values())

    def __len__(self) -> int:
        return len(self.images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.images

    def __getitem__(self, image_id: str) -> ImageLabel:
        return self.images[image_id]


def read_labels(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] = (1024, 1024),
    fmt: RleFormat = "relative",
    validate: bool = True,
) -> LabelSet:
    """Read a SIIM label CSV (any variant, ``.csv.gz`` too) into a :class:`LabelSet`.

    With ``validate``, every RLE string is parsed and checked against ``shape``; a malformed
    one raises :class:`LabelFileError` naming the file, the line and the ImageId.
    """
    check_rle_params(shape, fmt)
    path = Path(path)
    rows = list(_data_rows(path))
    if not rows:
        raise LabelFileError(f"{path}: no label rows (empty file or header only)")
    return _collect_images(path, rows, shape, fmt, validate)


def label_pixels(
    label: ImageLabel, shape: tuple[int, int] = (1024, 1024), fmt: RleFormat = "relative"
) -> np.ndarray:
    """Sorted flat column-major indices of the pixels in the union of the image's instances."""
    pixels = [run_pixels(*rle_runs(rle, shape, fmt)) for rle in label.rles]
    if len(pixels) == 1 and fmt == "relative":
        return pixels[0]  # one relative RLE's runs are sorted and disjoint by construction
    return _sorted_unique(np.concatenate(pixels)) if pixels else np.empty(0, dtype=np.int64)


def label_mask(
    label: ImageLabel, shape: tuple[int, int] = (1024, 1024), fmt: RleFormat = "relative"
) -> np.ndarray:
    """The image's bool mask: the union of its instances (all False for a negative image)."""
    return pixels_to_mask(label_pixels(label, shape, fmt), shape)


def write_label_csv(
    rows: Iterable[tuple[str, str]],
    path: str | os.PathLike[str],
    *,
    header: str | None = "ImageId,EncodedPixels",
) -> None:
    """Write ``(ImageId, EncodedPixels)`` rows atomically (gzip-compressed for ``.gz``).

    The file appears complete or not at all: rows go to a temporary file in the same folder
    that then replaces ``path``. ``header=None`` writes no header line.
    """
    path = Path(path)
    with atomic_path(path) as temporary:
        with _open_text(temporary, "w", compressed=path.suffix == ".gz") as stream:
            if header is not None:
                stream.write(header + "\n")
            csv.writer(stream, lineterminator="\n").writerows(
                _checked_row(row) for row in rows
            )


def _checked_row(row: tuple[str, str]) -> tuple[str, str]:
    if len(row) != 2 or not all(isinstance(value, str) for value in row):
        raise ValueError(f"label rows must be (ImageId, EncodedPixels) string pairs, got {row!r}")
    return row


def _open_text(path: Path, mode: str, *, compressed: bool) -> IO[str]:
    """Open a (possibly gzip) text file; reading drops a UTF-8 BOM if there is one."""
    encoding = "utf-8-sig" if mode == "r" else "utf-8"
    if compressed:
        return gzip.open(path, mode + "t", encoding=encoding, newline="")
    return open(path, mode, encoding=encoding, newline="")


def _data_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, ImageId, EncodedPixels)`` for each data row, fields stripped.

    Blank lines are skipped. A first row whose first field is ``ImageId`` (any case) is the
    header; anything else there is data, so a headerless file loses no row.
    """
    reader = None
    previous_limit = csv.field_size_limit(FIELD_LIMIT)
    try:
        with _open_text(path, "r", compressed=path.suffix == ".gz") as stream:
            reader = csv.reader(stream, skipinitialspace=True)
            first_row = True
            for fields in reader:
                values = [value.strip() for value in fields]
                if values in ([], [""]):
                    continue  # blank or whitespace-only line
                line = reader.line_num
                if first_row and values[0].lower() == HEADER_FIRST_FIELD:
                    _check_column_count(path, line, values)
                else:
                    yield _parse_row(path, line, values)
                first_row = False
    except FileNotFoundError:
        raise LabelFileError(f"{path}: label file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        # csv counts the line it failed on among those read
        where = f" line {reader.line_num}" if reader is not None and isinstance(error, csv.Error) else ""
        raise LabelFileError(f"{path}{where}: cannot read as a UTF-8 CSV label file ({error})") from None
    finally:
        csv.field_size_limit(previous_limit)


def _check_column_count(path: Path, line: int, values: list[str]) -> None:
    if len(values) != 2:
        raise LabelFileError(
            f"{path} line {line}: expected 2 columns (ImageId, EncodedPixels), got {len(values)}"
        )


def _parse_row(path: Path, line: int, values: list[str]) -> tuple[int, str, str]:
    _check_column_count(path, line, values)
    image_id, rle = values
    if not image_id:
        raise LabelFileError(f"{path} line {line}: missing ImageId")
    return line, image_id, rle


def _collect_images(
    path: Path,
    rows: list[tuple[int, str, str]],
    shape: tuple[int, int],
    fmt: RleFormat,
    validate: bool,
) -> LabelSet:
    """Group rows by ImageId, keeping each distinct RLE once and noting redundant rows."""
    first_line: dict[str, int] = {}
    lines_of: dict[str, list[int]] = {}
    rles: dict[str, list[str]] = {}
    empty_lines: dict[str, list[int]] = {}
    duplicate_rows: list[int] = []
    for line, image_id, rle in rows:
        first_line.setdefault(image_id, line)
        lines_of.setdefault(image_id, []).append(line)
        instances = rles.setdefault(image_id, [])
        if rle in ("", EMPTY_RLE):
            empty_lines.setdefault(image_id, []).append(line)
        elif rle in instances:
            duplicate_rows.append(line)
        else:
            if validate:
                _validate_rle(path, line, image_id, rle, shape, fmt)
            instances.append(rle)
    for image_id, lines in empty_lines.items():
        # A negative image needs one -1 row; any more, or any for a positive image, are redundant.
        duplicate_rows.extend(lines if rles[image_id] else lines[1:])
    images = {
        image_id: ImageLabel(image_id, tuple(rles[image_id]), line)
        for image_id, line in first_line.items()
    }
    multi_row = {image_id: lines for image_id, lines in lines_of.items() if len(lines) > 1}
    return LabelSet(path, images, sorted(duplicate_rows), multi_row)


def _validate_rle(
    path: Path, line: int, image_id: str, rle: str, shape: tuple[int, int], fmt: RleFormat
) -> None:
    try:
        rle_runs(rle, shape, fmt)
    except ValueError as error:
        raise LabelFileError(f"{path} line {line} (ImageId {image_id}): {error}") from None


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Like ``np.unique`` for integers, several times faster than its hash-based path here."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]]
