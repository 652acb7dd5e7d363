"""Preprocessing cache: each DICOM is decoded and resized once per resolution, then reused.

Entries are keyed by the file's absolute path, size and modification time, so an edited file
is decoded again. An entry is raw and uncompressed: the source's (rows, columns) as two
little-endian uint32, then the size×size uint8 pixels, read back in one call (no archive to
parse, nothing to inflate). The cache lives in ``$PNEUMOSEG_CACHE``, else ``$XDG_CACHE_HOME/pneumoseg``,
else ``~/.cache/pneumoseg``; it is safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.preprocess import resize_to_uint8
from pneumoseg.io import atomic_path

HEADER_BYTES = 8


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

    def _entry(self, path: Path) -> Path:
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.raw"

    def load(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        path = Path(path)
        if not self.enabled:
            return self._decode(path)
        entry = self._entry(path)
        try:
            data = np.fromfile(entry, dtype=np.uint8)
        except OSError:  # not cached yet
            data = None
        if data is not None and data.size == HEADER_BYTES + self.size * self.size:
            rows, columns = (int(v) for v in data[:HEADER_BYTES].view("<u4"))
            return data[HEADER_BYTES:].reshape(self.size, self.size), (rows, columns)
        image, shape = self._decode(path)  # missing, or damaged (wrong length): rebuilt
        with atomic_path(entry) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(np.asarray(shape, "<u4").tobytes())
                fh.write(np.ascontiguousarray(image, np.uint8).tobytes())
        return image, shape

    def _decode(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        dicom = read_dicom(path)
        return resize_to_uint8(dicom.pixels, self.size), dicom.shape
