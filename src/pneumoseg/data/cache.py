"""Preprocessing cache: each DICOM is decoded and resized once per resolution, then reused.

One store per resolution, ``{size}px/``:

- ``pixels.u8``: fixed-size slots of size×size uint8 pixels, read through one memory map (a hit
  is a copy out of the page cache: no file to open, nothing to parse or inflate);
- ``index.tsv``: a header line naming the store, then a line per entry, ``key slot rows columns``,
  appended after its slot is written.

A key hashes the file's absolute path, size and modification time, so an edited file is decoded
again into a new slot. Writers (DataLoader workers, folds trained in parallel) hold an exclusive
lock on ``lock`` while they append. A crash leaves at most an unindexed slot or a partial last
line, both ignored; an index line pointing past the end of a truncated ``pixels.u8`` is decoded
again. The cache lives in ``$PNEUMOSEG_CACHE``, else ``$XDG_CACHE_HOME/pneumoseg``, else
``~/.cache/pneumoseg``; it is safe to delete at any time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.preprocess import resize_to_uint8

PIXELS, INDEX, LOCK = "pixels.u8", "index.tsv", "lock"


def default_cache_dir() -> Path:
    if env := os.environ.get("PNEUMOSEG_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "pneumoseg"


class ImageCache:
    """Load an image at ``size``×``size`` as uint8 together with the source's (rows, columns)."""

    def __init__(self, size: int, root: Path | None = None, enabled: bool = True):
        self.size = size
        self.root = (Path(root) if root else default_cache_dir()) / f"{size}px"
        self.enabled = enabled
        self._forget()

    def _forget(self) -> None:
        self._entries: dict[str, tuple[int, int, int]] = {}  # key -> (slot, rows, columns)
        self._index_read = 0  # bytes of index.tsv parsed so far
        self._header = b""  # the index's first line, naming this store (a new store has another)
        self._map: np.memmap | None = None

    def __getstate__(self) -> dict:
        """DataLoader workers get the settings only; each maps the store itself (a memmap would pickle as a copy)."""
        return {"size": self.size, "root": self.root, "enabled": self.enabled}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._forget()

    @property
    def _slot_bytes(self) -> int:
        return self.size * self.size

    def _key(self, path: Path) -> str:
        stat = path.stat()
        return hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()

    def load(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        path = Path(path)
        if not self.enabled:
            return self._decode(path)
        key = self._key(path)
        hit = self._read(key)
        if hit is None:
            self._refresh()  # another process may have added it
            hit = self._read(key)
        if hit is not None:
            return hit
        image, shape = self._decode(path)  # missing, or its slot lost (truncated store): decoded again
        self._append(key, image, shape)
        return image, shape

    def _read(self, key: str) -> tuple[np.ndarray, tuple[int, int]] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        slot, rows, columns = entry
        pixels = self._slot(slot)
        return None if pixels is None else (np.array(pixels), (rows, columns))

    def _slot(self, slot: int) -> np.ndarray | None:
        """Slot ``slot`` of the memory map, remapped when the store has grown since it was mapped."""
        if self._map is None or slot >= len(self._map):
            try:
                slots = (self.root / PIXELS).stat().st_size // self._slot_bytes
            except FileNotFoundError:
                return None
            if slot >= slots:
                return None
            self._map = np.memmap(self.root / PIXELS, np.uint8, "r", shape=(slots, self.size, self.size))
        return self._map[slot]

    def _refresh(self) -> None:
        """Parse the index lines appended since the last look (all of them when the store was replaced)."""
        try:
            with open(self.root / INDEX, "rb") as fh:
                header = fh.readline()
                if not header.endswith(b"\n"):
                    return
                if header != self._header:  # deleted and made again: what was known is of another store
                    self._forget()
                    self._header, self._index_read = header, len(header)
                fh.seek(self._index_read)
                data = fh.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]  # a partial last line (a crashed writer) is ignored
        self._index_read += len(complete)
        for line in complete.decode("ascii", "replace").splitlines():
            fields = line.split("\t")
            if len(fields) == 4 and all(f.isdigit() for f in fields[1:]):
                self._entries[fields[0]] = (int(fields[1]), int(fields[2]), int(fields[3]))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append(self, key: str, image: np.ndarray, shape: tuple[int, int]) -> None:
        with self._locked():
            self._refresh()
            if self._read(key) is not None:
                return  # another process wrote it meanwhile
            fd = os.open(self.root / PIXELS, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                slot = -(-os.fstat(fd).st_size // self._slot_bytes)  # after any partial slot a crash left
                os.pwrite(fd, np.ascontiguousarray(image, np.uint8).tobytes(), slot * self._slot_bytes)
            finally:
                os.close(fd)
            line = f"{key}\t{slot}\t{shape[0]}\t{shape[1]}\n"
            with open(self.root / INDEX, "ab") as index:
                if index.tell() == 0:  # a new store: its name first, in the same write
                    line = f"pneumoseg-cache\t{self.size}\t{uuid.uuid4().hex}\n" + line
                index.write(line.encode("ascii"))
        self._refresh()

    def _decode(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        dicom = read_dicom(path)
        return resize_to_uint8(dicom.pixels, self.size), dicom.shape
