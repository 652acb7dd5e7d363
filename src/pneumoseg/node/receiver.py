"""The node's DICOM listener (pynetdicom): C-ECHO and C-STORE for chest radiographs.

Each received instance is in the :class:`~pneumoseg.node.spool.Spool` (fsynced) before the
success status goes back, so an instance the PACS saw accepted is never lost. Callers outside
the allow-list are rejected at association with the DICOM reason, and an object that cannot be
stored gets a DICOM failure status: never a crash, never a traceback in the log. Logs name
UIDs only, never patients.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from pneumoseg.node.spool import Spool

logger = logging.getLogger(__name__)

STORAGE_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                   DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage)
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def instance_bytes(dataset: Dataset, file_meta: FileMetaDataset) -> bytes:
    """The received instance as a DICOM file (preamble, file meta, dataset as it came)."""
    dataset.file_meta = file_meta
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def decodable_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixels pydicom can decode here, with the plugins installed.
    Only these are accepted at association, so a PACS sends an image in one the node can read
    (or transcodes it) instead of having it accepted and then failing."""
    from pydicom.pixels import get_decoder

    syntaxes = []
    for uid in ALL_TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                syntaxes.append(uid)
        except NotImplementedError:  # pydicom has no decoder for it at all (video, JPIP, ...)
            continue
    return syntaxes


def build_listener(spool: Spool, ae_title: str, *, allowed_callers: Sequence[str] = ()) -> tuple[AE, list]:
    """The Application Entity and its event handlers, ready for ``ae.start_server``."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    syntaxes = decodable_transfer_syntaxes()
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    if allowed_callers:
        ae.require_calling_aet = list(allowed_callers)

    def on_store(event) -> int:
        try:
            dataset = event.dataset
            uid = str(dataset.SOPInstanceUID)
            stored = spool.receive(uid, instance_bytes(dataset, event.file_meta))
        except OSError as exc:  # the disk is full or gone: ask the sender to try again later
            logger.warning("C-STORE refused, the spool cannot be written: %s", exc.strerror or exc)
            return OUT_OF_RESOURCES
        except Exception as exc:  # a dataset pydicom cannot parse or write back
            logger.warning("C-STORE refused, the object cannot be read: %s", type(exc).__name__)
            return CANNOT_UNDERSTAND
        logger.info("received %s%s from %s", uid, "" if stored else " (already received: not queued again)",
                    event.assoc.requestor.ae_title)
        return SUCCESS

    handlers = [(evt.EVT_C_ECHO, lambda event: SUCCESS), (evt.EVT_C_STORE, on_store)]
    return ae, handlers
