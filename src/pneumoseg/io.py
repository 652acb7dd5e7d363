"""Atomic file writes: readers (and a rerun after a crash) see the old file or the whole new one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

_UMASK = os.umask(0o022)  # read the process umask (the only way is to set it) and put it back
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save(path: Path, save: Callable[[Path], Any]) -> None:
    """Let a library's ``save(tmp_path)`` write the file, then move it into place."""
    with atomic_path(path) as tmp:
        save(tmp)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    with open(path, "rb") as fh:
        return sha256_of_stream(fh)


def sha256_of_stream(fh: BinaryIO) -> str:
    """The SHA-256 of what is left to read in a binary file object, in 1 MiB blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def shown(path: str | PathLike[str]) -> str:
    """A path as text that can always be printed and written as UTF-8: bytes of a name that
    are not UTF-8 (kept by Python as surrogate escapes) appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


SEAL_KEY = "content_sha256"
"""The key of a JSON file's own checksum (:func:`sealed`), over the rest of the file."""


def canonical_json(obj: dict[str, Any]) -> bytes:
    """``obj`` without its :data:`SEAL_KEY`, as canonical JSON (sorted keys, no spaces): what
    every checksum over a JSON document is taken of."""
    plain = {k: v for k, v in obj.items() if k != SEAL_KEY}
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str).encode()


def json_digest(obj: dict[str, Any]) -> str:
    """SHA-256 of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def sealed(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its checksum added, so that an edit or damage is refused on reading."""
    plain = json.loads(json.dumps(obj, default=str))  # what reading the file gives back
    return {**plain, SEAL_KEY: json_digest(plain)}


def check_seal(obj: dict[str, Any], where: str) -> None:
    """Refuse ``obj`` (read from ``where``) when its checksum is missing or differs.

    This detects damage and hand edits, not a determined forger (who can recompute it): the
    values are changed through the command line's options instead, which are validated."""
    from pneumoseg.errors import PneumosegError

    if SEAL_KEY not in obj:
        raise PneumosegError(f"{where}: no {SEAL_KEY}; written by an older pneumoseg or by hand, write it again")
    if obj[SEAL_KEY] != json_digest(obj):
        raise PneumosegError(f"{where}: {SEAL_KEY} does not match the contents; the file was edited or damaged "
                             "(change values with command-line options, or write it again)")
