"""The node's worker on spooled real samples: results for every read image, negatives
included; skips and failures with reasons; nothing built twice after a crash."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pneumoseg.infer.pipeline import Prediction
from pneumoseg.node.spool import Spool
from pneumoseg.data.read_filter import ReadFilter
from pneumoseg.node.worker import process_next
from tests.helpers import dciodvfy_errors
from tests.infer.test_findings import RectanglePipeline


class EmptyPipeline(RectanglePipeline):
    def predict(self, images):
        return [Prediction(0.125, False, None, np.zeros((1024, 1024), bool)) for _ in images]


class NeverCalled(RectanglePipeline):
    def predict(self, images):
        raise AssertionError("the pipeline ran again")


def _spool_with(tmp_path, sample_dicoms, *, extra: dict[str, bytes] | None = None) -> Spool:
    spool = Spool(tmp_path / "spool")
    for path in sample_dicoms:
        spool.receive(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID, path.read_bytes())
    for uid, data in (extra or {}).items():
        spool.receive(uid, data)
    return spool


def _drain(spool: Spool, pipeline) -> list[str]:
    keys = []
    while (key := process_next(spool, pipeline)) is not None:
        keys.append(key)
    return keys


def test_every_sample_gets_seg_sr_and_sc_and_other_objects_are_set_aside(sample_dicoms, tmp_path):
    mr = pydicom.dcmread(sample_dicoms[0])
    mr.Modality, mr.SOPInstanceUID = "MR", "1.2.3.4.5"
    buffer = io.BytesIO()
    mr.save_as(buffer)
    spool = _spool_with(tmp_path, sample_dicoms, extra={"1.2.3.4.5": buffer.getvalue(), "9.9.9": b"not DICOM"})
    assert len(_drain(spool, RectanglePipeline())) == len(sample_dicoms) + 2
    status = spool.status()
    assert len(status.done) == len(sample_dicoms) == len(status.outbox)
    assert [reason for key, reason in status.skipped.items() if key.startswith("1.2.3.4.5.")] == [
        "Modality MR is not one of CR, DX"]
    assert any(key.startswith("9.9.9.") and "not a DICOM file" in reason for key, reason in status.failed.items())
    for folder in spool.unsent():
        assert sorted(p.name for p in folder.glob("*.dcm")) == ["sc.dcm", "seg.dcm", "sr.dcm"]
        for path in folder.glob("*.dcm"):
            assert dciodvfy_errors(path) == [], path
        source_uid = folder.name.rsplit(".", 1)[0]
        assert pydicom.dcmread(folder / "sr.dcm").CurrentRequestedProcedureEvidenceSequence  # references it
        assert hd.sr.srread(folder / "sr.dcm").content.get_planar_roi_measurement_groups()
        seg = pydicom.dcmread(folder / "seg.dcm")
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source_uid


def test_a_healthy_film_gets_an_sr_saying_so_and_a_secondary_capture(sample_dicoms, tmp_path):
    spool = _spool_with(tmp_path, sample_dicoms[:2])
    _drain(spool, EmptyPipeline())
    for folder in spool.unsent():
        assert sorted(p.name for p in folder.glob("*.dcm")) == ["sc.dcm", "sr.dcm"]
        [group] = hd.sr.srread(folder / "sr.dcm").content.get_image_measurement_groups()
        assert [e.value.meaning for e in group.get_qualitative_evaluations()] == ["Absent"]


def test_after_a_crash_between_results_and_done_nothing_is_built_twice(sample_dicoms, tmp_path):
    spool = _spool_with(tmp_path, sample_dicoms[:1])
    queued = spool.next_queued()
    key = Spool.key_of(queued)
    spool.store_results(key, {"sr.dcm": b"stored before the crash"})  # ...then the process died
    assert process_next(spool, NeverCalled()) == key
    assert spool.status().done == [key]
    assert (spool.result_folder(key) / "sr.dcm").read_bytes() == b"stored before the crash"


@pytest.mark.parametrize(("keyword", "value", "reason"), [
    ("BodyPartExamined", "KNEE", "BodyPartExamined KNEE is not one of CHEST"),
    ("ViewPosition", "LL", "ViewPosition LL is not one of PA, AP"),
    ("ViewPosition", None, "ViewPosition (none) is not one of PA, AP"),
])
def test_the_filter_names_what_it_skipped(keyword, value, reason):
    ds = pydicom.Dataset()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    if value is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
    assert ReadFilter().reason_to_skip(ds) == reason
    assert ReadFilter(views=()).reason_to_skip(ds) == (None if keyword == "ViewPosition" else reason)
