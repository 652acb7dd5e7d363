"""The node's spool: a queue on disk that survives a crash at any point.

Every state is a folder, and an instance moves between them by ``rename`` (atomic on one file
system), so after a SIGKILL each instance is in exactly one state:

Instances are keyed ``<SOPInstanceUID>.<pixel hash>`` (a corrected image under the same UID
is a new instance).

- ``queue/<seq>-<key>.dcm``: received (written to a temporary file, fsynced, renamed,
  the folder fsynced, all before the sender is told it succeeded), waiting to be read;
- ``done/<key>.dcm``: read; its results wait in ``outbox/<SOPInstanceUID>/``;
- ``failed/<key>.dcm`` with ``.reason``: could not be read (a reason, no traceback);
- ``skipped/<key>.dcm`` with ``.reason``: not what the node reads (the filter's reason);
- ``outbox/<key>/*.dcm`` + ``COMPLETE``: results written, to be sent;
- ``sent/<key>/``: every result was accepted by the destination.

``seen/<key>`` marks an instance as received: the same instance sent
again is acknowledged and not queued twice. Results are built once (``COMPLETE``) and sent
as stored, so a resend after a crash carries the same SOPInstanceUIDs, which a PACS files as
the same objects, never as duplicates.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pneumoseg.io import atomic_write_bytes

STATES = ("queue", "done", "failed", "skipped", "outbox", "sent", "seen")
COMPLETE = "COMPLETE"


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pixel_hash(data: bytes) -> str:
    """A short fingerprint of an instance's bytes (its pixels and header)."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class SpoolStatus:
    queued: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    outbox: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"queued {len(self.queued)}, read {len(self.done)}, results waiting to be sent {len(self.outbox)}, "
                 f"sent {len(self.sent)}, failed {len(self.failed)}, skipped {len(self.skipped)}"]
        lines += [f"  failed {uid}: {reason}" for uid, reason in sorted(self.failed.items())]
        lines += [f"  skipped {uid}: {reason}" for uid, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)

    def folder(self, state: str) -> Path:
        return self.root / state

    def receive(self, sop_uid: str, data: bytes) -> bool:
        """Store a received instance durably; False when the same instance was received before."""
        key = f"{sop_uid}.{pixel_hash(data)}"
        marker = self.folder("seen") / key
        if marker.exists():
            return False
        name = f"{time.time_ns():020d}-{key}.dcm"
        atomic_write_bytes(self.folder("queue") / name, data)
        _fsync_folder(self.folder("queue"))
        atomic_write_bytes(marker, b"")
        return True

    def next_queued(self) -> Path | None:
        """The oldest queued instance (names start with the time it arrived)."""
        queued = sorted(self.folder("queue").glob("*.dcm"))
        return queued[0] if queued else None

    @staticmethod
    def key_of(queued: Path) -> str:
        """``<SOPInstanceUID>.<pixel hash>``: what identifies an instance and its results."""
        return queued.stem.split("-", 1)[1]

    def result_folder(self, key: str) -> Path:
        return self.folder("outbox") / key

    def results_complete(self, key: str) -> bool:
        return (self.result_folder(key) / COMPLETE).exists() or (self.folder("sent") / key).is_dir()

    def store_results(self, key: str, objects: dict[str, bytes]) -> None:
        """Write an instance's results, then ``COMPLETE`` last: a crash before it leaves an
        incomplete folder that is rebuilt, never sent half."""
        folder = self.result_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in objects.items():
            atomic_write_bytes(folder / name, data)
        atomic_write_bytes(folder / COMPLETE, b"")
        _fsync_folder(folder)

    def mark_done(self, queued: Path) -> None:
        os.replace(queued, self.folder("done") / f"{self.key_of(queued)}.dcm")
        _fsync_folder(self.folder("done"))

    def mark_failed(self, queued: Path, reason: str, *, state: str = "failed") -> None:
        """Set ``queued`` aside in ``state`` (failed or skipped) with its one-line reason."""
        key = self.key_of(queued)
        atomic_write_bytes(self.folder(state) / f"{key}.reason", (" ".join(reason.split()) + "\n").encode())
        os.replace(queued, self.folder(state) / f"{key}.dcm")

    def unsent(self) -> list[Path]:
        """Result folders that are complete and not yet accepted by the destination, oldest first."""
        folders = [f for f in self.folder("outbox").iterdir() if (f / COMPLETE).exists()]
        return sorted(folders, key=lambda f: (f / COMPLETE).stat().st_mtime_ns)

    def mark_sent(self, folder: Path) -> None:
        os.replace(folder, self.folder("sent") / folder.name)
        _fsync_folder(self.folder("sent"))

    def status(self) -> SpoolStatus:
        failed, skipped = ({p.stem: p.read_text().strip() for p in self.folder(state).glob("*.reason")}
                           for state in ("failed", "skipped"))
        return SpoolStatus(
            queued=[self.key_of(p) for p in sorted(self.folder("queue").glob("*.dcm"))],
            done=sorted(p.stem for p in self.folder("done").glob("*.dcm")),
            outbox=sorted(f.name for f in self.unsent()),
            sent=sorted(f.name for f in self.folder("sent").iterdir() if f.is_dir()),
            failed=failed,
            skipped=skipped,
        )
