"""The node's spool: durable, idempotent, every instance in exactly one state."""

from __future__ import annotations

from pneumoseg.node.spool import COMPLETE, Spool, pixel_hash


def test_an_instance_is_queued_once_and_a_corrected_one_again(tmp_path):
    spool = Spool(tmp_path)
    assert spool.receive("1.2.3", b"pixels-a") is True
    assert spool.receive("1.2.3", b"pixels-a") is False  # a resend: acknowledged, not queued twice
    assert spool.receive("1.2.3", b"pixels-b") is True  # the same UID with other pixels is another instance
    keys = [Spool.key_of(p) for p in sorted(spool.folder("queue").glob("*.dcm"))]
    assert keys == [f"1.2.3.{pixel_hash(b'pixels-a')}", f"1.2.3.{pixel_hash(b'pixels-b')}"]
    assert spool.status().queued == keys


def test_instances_are_read_in_arrival_order_and_move_through_the_states(tmp_path):
    spool = Spool(tmp_path)
    for uid in ("1.2.9", "1.2.1", "1.2.5"):
        spool.receive(uid, uid.encode())
    order = []
    while (queued := spool.next_queued()) is not None:
        key = Spool.key_of(queued)
        order.append(key.rsplit(".", 1)[0])
        if key.startswith("1.2.1"):
            spool.mark_failed(queued, "not a chest film:\n Modality MR")
            continue
        spool.store_results(key, {"sr.dcm": b"sr", "seg.dcm": b"seg"})
        spool.mark_done(queued)
    assert order == ["1.2.9", "1.2.1", "1.2.5"]
    status = spool.status()
    assert status.queued == [] and len(status.done) == 2 and len(status.outbox) == 2
    assert list(status.failed.values()) == ["not a chest film: Modality MR"]
    for folder in spool.unsent():
        assert sorted(p.name for p in folder.iterdir()) == [COMPLETE, "seg.dcm", "sr.dcm"]
        spool.mark_sent(folder)
    status = spool.status()
    assert status.outbox == [] and len(status.sent) == 2
    assert "queued 0, read 2, results waiting to be sent 0, sent 2, failed 1, skipped 0" in status.render()


def test_results_without_complete_are_neither_sent_nor_counted_done(tmp_path):
    """A crash while results were written leaves them incomplete: rebuilt, never sent half."""
    spool = Spool(tmp_path)
    spool.receive("1.2.3", b"x")
    key = Spool.key_of(spool.next_queued())
    (spool.result_folder(key)).mkdir(parents=True)
    (spool.result_folder(key) / "seg.dcm").write_bytes(b"half")
    assert not spool.results_complete(key) and spool.unsent() == []
    spool.store_results(key, {"seg.dcm": b"whole"})
    assert spool.results_complete(key) and [f.name for f in spool.unsent()] == [key]


def test_a_half_written_file_is_not_an_instance(tmp_path):
    spool = Spool(tmp_path)
    (spool.folder("queue") / ".00001-1.2.3.abc.dcm.x.tmp").write_bytes(b"torn")  # what a kill mid-write leaves
    assert spool.next_queued() is None
