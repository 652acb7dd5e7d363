"""`pneumoseg node` as a real process: samples stored in by C-STORE come back as results at the
(in-process) PACS; SIGKILL and a restart lose nothing and send nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pydicom
import pytest

pytest.importorskip("pynetdicom", reason="pynetdicom is in the dev extra: `make test` installs it")

from tests.helpers import stop_process  # noqa: E402
from tests.node.test_receiver import _free_port, _scu  # noqa: E402
from tests.node.test_sender import FakePacs  # noqa: E402


def _start_node(tiny_runs, spool, port, pacs_port, log):
    return subprocess.Popen(
        [sys.executable, "-m", "pneumoseg.cli", "node", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
         "--spool", str(spool), "--port", str(port), "--send-to", f"PACS@127.0.0.1:{pacs_port}",
         "--allow-caller", "PACS"], env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_echo(port, deadline):
    while time.monotonic() < deadline:
        assoc = _scu().associate("127.0.0.1", port, ae_title="PNEUMOSEG")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.3)
    raise AssertionError("the node did not start")


def _wait(predicate, deadline, what):
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_samples_stored_in_come_back_once_even_across_a_sigkill(tiny_runs, sample_dicoms, tmp_path):
    pacs = FakePacs(_free_port())
    pacs.start()
    port, spool = _free_port(), tmp_path / "spool"
    log = open(tmp_path / "node.log", "w")
    node = _start_node(tiny_runs, spool, port, pacs.port, log)
    try:
        _wait_for_echo(port, time.monotonic() + 120)
        assoc = _scu().associate("127.0.0.1", port, ae_title="PNEUMOSEG")
        for path in sample_dicoms:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        assoc.release()
        node.send_signal(signal.SIGKILL)  # mid-queue, most likely: nothing acknowledged may be lost
        node.wait(timeout=30)
        node = _start_node(tiny_runs, spool, port, pacs.port, log)
        _wait_for_echo(port, time.monotonic() + 120)
        assoc = _scu().associate("127.0.0.1", port, ae_title="PNEUMOSEG")  # and a resend of one sample
        assert assoc.send_c_store(pydicom.dcmread(sample_dicoms[0])).Status == 0x0000
        assoc.release()
        sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in sample_dicoms}

        def answered() -> set[str]:
            return {ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                    .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for ds in list(pacs.stored.values()) if ds.Modality == "SR"}

        _wait(lambda: answered() >= sources, time.monotonic() + 240, "not every sample was answered")
        time.sleep(2)  # anything more that arrives now would be a duplicate
        srs = [ds for ds in pacs.stored.values() if ds.Modality == "SR"]
        assert len(srs) == len(sources)  # one SR per sample: nothing processed twice
    finally:
        stop_process(node)
        pacs.stop()
        log.close()
    status = subprocess.run([sys.executable, "-m", "pneumoseg.cli", "node", "status", "--spool", str(spool)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and f"sent {len(sources)}, failed 0, skipped 0" in status.stdout, status.stdout
    assert "Traceback" not in (tmp_path / "node.log").read_text()
