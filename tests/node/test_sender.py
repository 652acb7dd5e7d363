"""The node's sender against an in-process storage SCP standing in for the PACS (the Orthanc
integration test is the real one): sent once accepted, kept while the PACS is down."""

from __future__ import annotations

import pydicom
import pytest

pytest.importorskip("pynetdicom", reason="pynetdicom is in the dev extra: `make test` installs it")
from pynetdicom import AE, AllStoragePresentationContexts, evt  # noqa: E402

from pneumoseg.errors import PneumosegError  # noqa: E402
from pneumoseg.node.sender import DimseDestination, parse_destination, send_pending  # noqa: E402
from pneumoseg.node.worker import process_next  # noqa: E402
from tests.infer.test_findings import RectanglePipeline  # noqa: E402
from tests.node.test_receiver import _free_port  # noqa: E402
from tests.node.test_worker import _spool_with  # noqa: E402


class FakePacs:
    """A storage SCP that keeps what it receives by SOPInstanceUID."""

    def __init__(self, port: int) -> None:
        self.port, self.stored, self.server = port, {}, None

    def start(self) -> None:
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts

        def on_store(event):
            self.stored[event.dataset.SOPInstanceUID] = event.dataset
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        self.server.shutdown()


def test_results_reach_the_pacs_once_and_wait_while_it_is_down(sample_dicoms, tmp_path):
    spool = _spool_with(tmp_path, sample_dicoms[:3])
    while process_next(spool, RectanglePipeline()) is not None:
        pass
    pacs = FakePacs(_free_port())
    destination = DimseDestination("PACS", "127.0.0.1", pacs.port)
    assert send_pending(spool, destination, "PNEUMOSEG") == 0  # down: nothing marked sent
    assert len(spool.unsent()) == 3
    pacs.start()
    try:
        assert send_pending(spool, destination, "PNEUMOSEG") == 3
        assert spool.unsent() == [] and len(spool.status().sent) == 3
        assert len(pacs.stored) == 9  # SEG, SR and SC of each
        modalities = sorted(ds.Modality for ds in pacs.stored.values())
        assert modalities == ["OT"] * 3 + ["SEG"] * 3 + ["SR"] * 3  # Secondary Capture, SEG, SR of each
        assert send_pending(spool, destination, "PNEUMOSEG") == 0  # nothing is sent twice
    finally:
        pacs.stop()
    sources = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in sample_dicoms[:3]}
    assert {ds.StudyInstanceUID for ds in pacs.stored.values()} == sources  # filed into the patients' studies


@pytest.mark.parametrize("text", ["ORTHANC", "ORTHANC@host", "A@b:0", "TOO_LONG_AE_TITLE_X@h:1"])
def test_a_bad_destination_is_a_one_line_error(text):
    with pytest.raises(PneumosegError, match="give AET@host:port"):
        DimseDestination.parse(text)
    assert str(DimseDestination.parse("ORTHANC@127.0.0.1:4242")) == "ORTHANC@127.0.0.1:4242"
