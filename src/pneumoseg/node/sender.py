"""The node's sender: each read instance's results to the PACS, by C-STORE (pynetdicom SCU)
or STOW-RS (dicomweb-client).

A result folder is marked sent only after every object in it got a success status; a
destination that is down, or refuses, leaves it in the outbox for the next try (the node
backs off between tries). Objects are sent as stored, so a resend after a crash carries the
same SOPInstanceUIDs, which the PACS files as the same instances.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE

from pneumoseg.errors import PneumosegError
from pneumoseg.infer.dicomweb import store_datasets
from pneumoseg.node.spool import Spool

logger = logging.getLogger(__name__)

SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class DimseDestination:
    """A PACS reached by C-STORE."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DimseDestination:
        """``AET@host:port``, e.g. ``ORTHANC@127.0.0.1:4242``."""
        match = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d{1,5})", text.strip())
        if not match or not 0 < int(match.group(3)) < 65536:
            raise PneumosegError(f"--send-to {text!r}: give AET@host:port, e.g. ORTHANC@127.0.0.1:4242")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, objects: list[Dataset], calling_ae: str) -> bool:
        """C-STORE ``objects`` in one association; True when all were accepted."""
        ae = AE(ae_title=calling_ae)
        for ds in objects:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            logger.warning("not sent: %s did not accept an association", self)
            return False
        try:
            for ds in objects:
                code = getattr(assoc.send_c_store(ds), "Status", None)
                if code not in SUCCESS_OR_WARNING:
                    logger.warning("not sent: %s answered %s for %s", self,
                                   "no status" if code is None else f"0x{code:04X}", ds.SOPInstanceUID)
                    return False
        finally:
            assoc.release()
        return True


@dataclass(frozen=True)
class StowDestination:
    """A PACS reached by STOW-RS (DICOMweb)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def send(self, objects: list[Dataset], calling_ae: str) -> bool:
        """Store ``objects`` in one request; True when all were stored (``calling_ae`` is unused)."""
        try:
            store_datasets(self.url, objects)
        except PneumosegError as exc:
            logger.warning("not sent: %s", exc)
            return False
        return True


Destination = DimseDestination | StowDestination


def parse_destination(send_to: str | None, stow: str | None) -> Destination | None:
    """The destination named by ``--send-to AET@host:port`` or ``--stow URL`` (not both)."""
    if send_to and stow:
        raise PneumosegError("give --send-to AET@host:port or --stow URL, not both")
    if stow:
        if not stow.startswith(("http://", "https://")):
            raise PneumosegError(f"--stow {stow!r}: a DICOMweb URL starts with http:// or https://")
        return StowDestination(stow)
    return DimseDestination.parse(send_to) if send_to else None


def send_folder(folder: Path, destination: Destination, calling_ae: str) -> bool:
    """Send every object in ``folder``; True when all were accepted."""
    objects = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    if not destination.send(objects, calling_ae):
        logger.warning("the results of %s wait in the outbox", folder.name)
        return False
    return True


def send_pending(spool: Spool, destination: Destination, calling_ae: str) -> int:
    """Send the outbox, oldest first; stop at the first failure (the destination is likely down).
    Returns how many instances' results were sent."""
    sent = 0
    for folder in spool.unsent():
        if not send_folder(folder, destination, calling_ae):
            break
        spool.mark_sent(folder)
        logger.info("sent the results of %s to %s", folder.name, destination)
        sent += 1
    return sent
