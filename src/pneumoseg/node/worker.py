"""The node's worker: takes spooled instances in arrival order, skips what it should not read
(with the reason), runs the pipeline and stores every read image's results -- SEG, SR and
Secondary Capture for a finding; SR and Secondary Capture for a healthy film, the SR stating
that no pneumothorax was detected -- before marking the instance done.

Processing is idempotent: an instance whose results are already complete (a crash after they
were written) is marked done without running again, so nothing is built or sent twice.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from pydicom.dataset import Dataset

from pneumoseg.data.dicom import read_dicom, read_header
from pneumoseg.data.read_filter import ReadFilter
from pneumoseg.data.preprocess import resize_mask
from pneumoseg.errors import DicomReadError
from pneumoseg.infer.dicom_outputs import build_dicom_objects
from pneumoseg.infer.findings import image_measurement
from pneumoseg.infer.pipeline import TwoStagePipeline
from pneumoseg.node.spool import Spool

logger = logging.getLogger(__name__)


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def results_for(path: Path, pipeline: TwoStagePipeline) -> dict[str, bytes]:
    """The DICOM objects for one instance, by file name."""
    image = read_dicom(path)
    (pred,) = pipeline.predict([image.pixels])
    mask = resize_mask(pred.mask, image.shape)
    objects = build_dicom_objects(image, mask, image_measurement(image, mask), pred.probability, negative_sr=True)
    return {f"{kind}.dcm": _encoded(dataset) for kind, dataset in objects.items()}


def process_next(spool: Spool, pipeline: TwoStagePipeline, read_filter: ReadFilter = ReadFilter()) -> str | None:
    """Read the oldest queued instance; its key, or None when the queue is empty."""
    queued = spool.next_queued()
    if queued is None:
        return None
    key = Spool.key_of(queued)
    if spool.results_complete(key):  # read before a crash: results stored, only the move was lost
        spool.mark_done(queued)
        return key
    try:
        reason = read_filter.reason_to_skip(read_header(queued))
        if reason is not None:
            logger.info("skipped %s: %s", key, reason)
            spool.mark_failed(queued, reason, state="skipped")
            return key
        spool.store_results(key, results_for(queued, pipeline))
    except DicomReadError as exc:
        logger.warning("failed %s: %s", key, exc)
        spool.mark_failed(queued, str(exc).split(": ", 1)[-1])
        return key
    except Exception as exc:  # a header highdicom cannot build on: set aside, keep reading the others
        logger.warning("failed %s: %s", key, type(exc).__name__)
        spool.mark_failed(queued, f"{type(exc).__name__}: {exc}")
        return key
    spool.mark_done(queued)
    logger.info("read %s", key)
    return key

