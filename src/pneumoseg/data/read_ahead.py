"""Decoding DICOMs ahead of the model: batches read in worker processes while the current one
is computed. The workers import this module and the DICOM reader only (not torch or the
models), so they start in a fraction of a second."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from pathlib import Path

from pneumoseg.data.dicom import DicomImage, read_dicom
from pneumoseg.errors import DicomReadError


def read_batch(paths: list[Path]) -> tuple[list[DicomImage], dict[str, str]]:
    """The batch's decoded images, and the files that could not be read with their reasons."""
    images, errors = [], {}
    for path in paths:
        try:
            images.append(read_dicom(path))
        except DicomReadError as exc:
            errors[str(path)] = str(exc)
    return images, errors


def read_ahead(chunks: list[list[Path]], workers: int) -> Iterator[tuple[list[DicomImage], dict[str, str]]]:
    """:func:`read_batch` of each chunk, in order. With ``workers`` > 0 the chunks are decoded
    in that many processes, up to ``workers`` chunks ahead of the one the model is on, so the
    decoding (JPEG, LUTs) overlaps the compute; at most ``workers`` + 1 chunks are held."""
    if workers == 0:
        yield from map(read_batch, chunks)
        return
    context = multiprocessing.get_context("spawn")  # not fork: the parent's torch threads do not survive it
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        upcoming = iter(chunks)
        pending = deque(pool.submit(read_batch, chunk) for chunk in islice(upcoming, workers + 1))
        while pending:
            decoded = pending.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(read_batch, following))
            yield decoded
