"""The DICOM node against a real PACS (Orthanc): the 11 real SIIM samples stored into the node
with pynetdicom's storescu are each answered in Orthanc (an SR, a Secondary Capture, and a SEG
when positive, in the sample's study, referencing it), across a SIGKILL of the node, a resend,
and an Orthanc outage; an unknown caller and a non-image object get DICOM answers, not
tracebacks. Results go by C-STORE here, by STOW-RS in the second test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

pytest.importorskip("pynetdicom", reason="pynetdicom is in the dev extra: `make test` installs it")


from pneumoseg.infer.dicomweb import store_datasets  # noqa: E402
from pneumoseg.node.spool import Spool  # noqa: E402
from tests.helpers import stop_process  # noqa: E402
from tests.node.orthanc import Orthanc  # noqa: E402
from tests.node.test_receiver import _free_port, _scu  # noqa: E402

CALLER = "STORESCU"


def _wait_for_echo(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        assoc = _scu(CALLER).associate("127.0.0.1", port, ae_title="PNEUMOSEG")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.3)
    raise AssertionError("the node did not start")


def _wait(predicate, deadline: float, what: str) -> None:
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def _node_config(tmp_path: Path, tiny_runs, port: int, **destination) -> Path:
    """A node YAML file as a service would have it (the spool relative to the file)."""
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({"cls": str(tiny_runs.cls), "seg": str(tiny_runs.seg), "spool": "spool",
                                      "port": port, "allow_callers": [CALLER, Orthanc.ae_title], "retry_max_s": 2, **destination}))
    return config


def _start_node(config: Path, log):
    return subprocess.Popen([sys.executable, "-m", "pneumoseg.cli", "node", "--config", str(config)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)


def _storescu(port: int, paths: list[Path]) -> None:
    """pynetdicom's storescu app, as a modality or a PACS would send."""
    done = subprocess.run([sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port),
                           *map(str, paths), "-aet", CALLER, "-aec", "PNEUMOSEG", "-cx"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _results_by_study(orthanc: Orthanc, studies: set[str]) -> dict[str, Counter]:
    """Per study, how many objects of each modality Orthanc holds besides the radiograph."""
    return {study: Counter(tags["Modality"] for tags in orthanc.study_instances(study)
                           if tags.get("Modality") != "CR") for study in studies}


def _referenced_sources(orthanc: Orthanc, studies: set[str]) -> Counter:
    """How often each instance is referenced by an SR's evidence or a SEG's referenced series."""
    counts = Counter()
    for study in studies:
        for tags in orthanc.study_instances(study):
            if tags.get("Modality") == "SR":
                items = [sop for item in tags["CurrentRequestedProcedureEvidenceSequence"]
                         for series in item["ReferencedSeriesSequence"] for sop in series["ReferencedSOPSequence"]]
                counts.update(f"SR:{sop['ReferencedSOPInstanceUID']}" for sop in items)
            if tags.get("Modality") == "SEG":
                counts.update(f"SEG:{sop['ReferencedSOPInstanceUID']}" for series in tags["ReferencedSeriesSequence"]
                              for sop in series["ReferencedInstanceSequence"])
    return counts


def _new_study_copy(source: Path, out: Path) -> Path:
    """A sample as a new patient study (new UIDs): what arrives while the PACS is down."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out)
    return out


def _without_pixels(source: Path, out: Path) -> Path:
    ds = pydicom.dcmread(source)
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(out)
    return out


def _assert_answered(orthanc: Orthanc, spool: Path, sources: dict[str, str]) -> None:
    """Every source has exactly one SR and one Secondary Capture in its study, and a SEG exactly
    when the node found a pneumothorax; SR and SEG reference the source."""
    results = _results_by_study(orthanc, set(sources.values()))
    references = _referenced_sources(orthanc, set(sources.values()))
    for uid, study in sources.items():
        (sent,) = [folder for folder in (spool / "sent").iterdir() if folder.name.startswith(uid + ".")]
        positive = (sent / "seg.dcm").exists()
        assert results[study] == Counter({"SR": 1, "OT": 1, **({"SEG": 1} if positive else {})}), (uid, results[study])
        assert references[f"SR:{uid}"] == 1 and references[f"SEG:{uid}"] == int(positive), uid


def test_every_sample_is_answered_in_orthanc_across_a_sigkill_a_resend_and_an_outage(tiny_runs, sample_dicoms,
                                                                                      tmp_path):
    node_port = _free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"pneumoseg": ("PNEUMOSEG", node_port)})
    orthanc.start()
    config = _node_config(tmp_path, tiny_runs, node_port, send_to=f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}")
    spool, log = tmp_path / "spool", open(tmp_path / "node.log", "w")
    sources = {str(ds.SOPInstanceUID): str(ds.StudyInstanceUID)
               for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sample_dicoms)}
    node = _start_node(config, log)
    try:
        _wait_for_echo(node_port, time.monotonic() + 120)
        assert orthanc.post("/modalities/pneumoseg/echo", {}) == {}  # the node is a modality Orthanc knows
        _storescu(node_port, sample_dicoms)
        queue = Spool(spool)
        _wait(lambda: queue.status().done, time.monotonic() + 120, "the node read nothing")
        node.send_signal(signal.SIGKILL)  # mid-queue: what was acknowledged must not be lost
        node.wait(timeout=30)
        assert queue.status().queued, "the queue was empty before the kill: the test killed too late"
        node = _start_node(config, log)
        _wait(lambda: len(queue.status().sent) == len(sources), time.monotonic() + 300, "not every sample was sent")
        _assert_answered(orthanc, spool, sources)

        count = orthanc.instance_count()
        _wait_for_echo(node_port, time.monotonic() + 60)
        _storescu(node_port, sample_dicoms)  # a resend: acknowledged, not read or sent again
        time.sleep(3)
        assert orthanc.instance_count() == count and len(queue.status().sent) == len(sources)

        orthanc.stop()  # PACS down while results are made
        late = _new_study_copy(sample_dicoms[0], tmp_path / "late.dcm")
        _storescu(node_port, [late])
        _wait(lambda: queue.status().outbox, time.monotonic() + 120, "the late image was not read")
        time.sleep(3)  # a few failed sends, backing off
        assert len(queue.status().sent) == len(sources)
        orthanc.start()
        _wait(lambda: len(queue.status().sent) == len(sources) + 1, time.monotonic() + 60,
              "results made while Orthanc was down did not arrive")
        late_ds = pydicom.dcmread(late, stop_before_pixels=True)
        _assert_answered(orthanc, spool, {**sources, str(late_ds.SOPInstanceUID): str(late_ds.StudyInstanceUID)})

        stranger = _scu("STRANGER").associate("127.0.0.1", node_port, ae_title="PNEUMOSEG")
        assert stranger.is_rejected
        _storescu(node_port, [_without_pixels(sample_dicoms[1], tmp_path / "no-pixels.dcm")])
        _wait(lambda: queue.status().failed, time.monotonic() + 60, "the object without pixels was not set aside")
    finally:
        stop_process(node)
        orthanc.stop()
        log.close()
    (reason,) = Spool(spool).status().failed.values()
    assert "pixel" in reason.lower()
    text = (tmp_path / "node.log").read_text()
    assert "Traceback" not in text
    assert not any(str(ds.PatientName) in text or str(ds.PatientID) in text
                   for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sample_dicoms))
    assert yaml.safe_load((spool / "node.yaml").read_text())["allow_callers"] == [CALLER, Orthanc.ae_title]


def test_images_routed_by_orthanc_come_back_by_stow_rs(tiny_runs, sample_dicoms, tmp_path):
    """The hospital's path: the images are in the PACS, which sends them to the node; the
    results go back by DICOMweb."""
    node_port = _free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"pneumoseg": ("PNEUMOSEG", node_port)})
    orthanc.start()
    config = _node_config(tmp_path, tiny_runs, node_port, stow=orthanc.dicomweb)
    log = open(tmp_path / "node.log", "w")
    node = _start_node(config, log)
    try:
        _wait_for_echo(node_port, time.monotonic() + 120)
        store_datasets(orthanc.dicomweb, [pydicom.dcmread(p) for p in sample_dicoms[:2]])
        orthanc.post("/modalities/pneumoseg/store", {"Resources": orthanc.post("/tools/find", {
            "Level": "Instance", "Query": {}}), "Synchronous": True})
        queue = Spool(tmp_path / "spool")
        _wait(lambda: len(queue.status().sent) == 2, time.monotonic() + 120, "the results were not stored")
        sources = {str(ds.SOPInstanceUID): str(ds.StudyInstanceUID)
                   for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sample_dicoms[:2])}
        _assert_answered(orthanc, tmp_path / "spool", sources)
    finally:
        stop_process(node)
        orthanc.stop()
        log.close()
    assert "Traceback" not in (tmp_path / "node.log").read_text()
