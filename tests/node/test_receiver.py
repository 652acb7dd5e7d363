"""The node's C-ECHO / C-STORE listener on loopback, driven by a pynetdicom SCU."""

from __future__ import annotations

import logging
import socket

import pydicom
import pytest

pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom is in the dev extra: `make test` installs it")
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import ComputedRadiographyImageStorage, SecondaryCaptureImageStorage, Verification  # noqa: E402

from pneumoseg.node.receiver import build_listener  # noqa: E402
from pneumoseg.node.spool import Spool  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def node(tmp_path):
    spool = Spool(tmp_path / "spool")
    ae, handlers = build_listener(spool, "PNEUMOSEG", allowed_callers=["PACS"])
    port = _free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield spool, port
    server.shutdown()


def _scu(calling: str = "PACS") -> AE:
    scu = AE(ae_title=calling)
    scu.add_requested_context(Verification)
    for sop_class in (ComputedRadiographyImageStorage, SecondaryCaptureImageStorage):
        for syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"):  # one context each, as storescu does
            scu.add_requested_context(sop_class, syntax)
    return scu


def test_echo_and_store_put_every_sample_in_the_spool_once(node, sample_dicoms):
    spool, port = node
    assoc = _scu().associate("127.0.0.1", port, ae_title="PNEUMOSEG")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    for path in sample_dicoms:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    assert assoc.send_c_store(pydicom.dcmread(sample_dicoms[0])).Status == 0x0000  # a resend: still a success
    assoc.release()
    queued = sorted(spool.folder("queue").glob("*.dcm"))
    assert len(queued) == len(sample_dicoms)  # the resend was not queued again
    stored = {pydicom.dcmread(p).SOPInstanceUID: p for p in queued}
    for path in sample_dicoms:
        original = pydicom.dcmread(path)
        copy = pydicom.dcmread(stored[original.SOPInstanceUID])
        assert copy.PixelData == original.PixelData and copy.PatientID == original.PatientID  # filed into its study


def test_an_unknown_caller_is_rejected_with_the_dicom_reason_and_no_traceback(node, caplog):
    spool, port = node
    with caplog.at_level(logging.WARNING):
        assoc = _scu("STRANGER").associate("127.0.0.1", port, ae_title="PNEUMOSEG")
    assert assoc.is_rejected and not assoc.is_established
    assert "Traceback" not in caplog.text
    assert spool.next_queued() is None


def test_a_non_image_object_is_refused_by_presentation_context(node):
    """A structured report is not an image the node reads: no context is accepted for it."""
    _, port = node
    scu = AE(ae_title="PACS")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive 3D SR
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title="PNEUMOSEG")
    assert assoc.is_established
    assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
    assoc.release()


def test_only_transfer_syntaxes_pydicom_can_decode_are_accepted(node):
    """An image offered in a syntax without a decoder here is refused at negotiation (the PACS
    then sends or transcodes to one the node reads), never accepted and failed later."""
    from pydicom.pixels import get_decoder

    _, port = node
    htj2k = "1.2.840.10008.1.2.4.203"  # High-Throughput JPEG 2000: needs a plugin the node does not install
    if get_decoder(htj2k).is_available:
        pytest.skip("an HTJ2K decoder is installed here")
    scu = AE(ae_title="PACS")
    scu.add_requested_context(SecondaryCaptureImageStorage, htj2k)
    scu.add_requested_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.4.50")
    assoc = scu.associate("127.0.0.1", port, ae_title="PNEUMOSEG")
    assert assoc.is_established
    assert [c.transfer_syntax[0] for c in assoc.accepted_contexts] == ["1.2.840.10008.1.2.4.50"]
    assoc.release()
