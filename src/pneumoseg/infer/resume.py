"""What makes ``predict`` safe to kill and rerun: a lock on the output, and a partial file that
remembers which settings and models made its rows.

``<out>.partial`` starts with a fingerprint line (a JSON object of everything that decides a
row: model checksums and back-end, input sizes, TTA, post-processing, RLE format, which extra
outputs are written), then one CSV row per finished image. A rerun keeps the rows only when its
own fingerprint is the same; otherwise it refuses, or starts over with ``restart``.

``<out>.lock`` is held with ``flock`` for the whole run. The kernel drops the lock when the
process dies, however it dies, so a lock file left by a dead process is simply taken over.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pneumoseg.errors import PneumosegError
from pneumoseg.io import shown

MARK = "#pneumoseg-partial "
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
"""Paths whose names are not UTF-8 are written and read back byte for byte."""


def partial_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".partial")


def lock_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".lock")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` exclusively, or refuse in one line when another live run holds it."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise PneumosegError(f"{shown(out)} is being written by another pneumoseg predict ({holder}); "
                                 "wait for it to finish or choose another --out") from None
        if _same_file(fh, path):  # not a lock file that its last holder removed meanwhile
            break
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        fh.close()


def _same_file(fh: IO[str], path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return False


def read_partial(out: Path, fingerprint: dict[str, Any], *, restart: bool) -> dict[str, tuple[str, str, str]]:
    """path -> (ImageId, rle, findings line) of the rows an interrupted run with this
    ``fingerprint`` finished (the findings line is empty without ``--findings``).

    A partial file made with another fingerprint is refused (or removed, with ``restart``); a
    torn last line is ignored."""
    path = partial_path(out)
    if restart:
        path.unlink(missing_ok=True)
    if not path.is_file():
        return {}
    with open(path, newline="", **ENCODING) as fh:
        first = fh.readline()
        differs = _differences(_stored_fingerprint(first), fingerprint)
        if differs:
            raise PneumosegError(f"{shown(path)}: left by an interrupted run with other {differs}; rerun with "
                                 "those, or add --restart to start over")
        return {row[0]: (row[1], row[2], row[3]) for row in csv.reader(fh) if len(row) == 4 and row[2].strip()}


def _stored_fingerprint(line: str) -> dict[str, Any] | None:
    if not line.startswith(MARK):
        return None
    try:
        stored = json.loads(line[len(MARK):])
    except json.JSONDecodeError:
        return None
    return stored if isinstance(stored, dict) else None


def _differences(stored: dict[str, Any] | None, fingerprint: dict[str, Any]) -> str:
    """The names of the settings that differ ("" when none), for the refusal message."""
    if stored is None:
        return "settings (its fingerprint line is missing or damaged)"
    keys = sorted(k for k in stored.keys() | fingerprint.keys() if stored.get(k) != fingerprint.get(k))
    return ", ".join(keys) and f"settings ({', '.join(keys)})"


def open_partial(out: Path, fingerprint: dict[str, Any]) -> IO[str]:
    """The partial file opened for appending rows; a new one starts with the fingerprint line."""
    path = partial_path(out)
    fresh = not path.is_file()
    fh = open(path, "a", newline="", **ENCODING)
    if fresh:
        fh.write(MARK + json.dumps(fingerprint, sort_keys=True, separators=(",", ":")) + "\n")
        fh.flush()
    return fh
