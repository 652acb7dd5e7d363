"""The preprocessing cache: a raw entry per file and size, read back without decoding; an
edited source or a damaged entry is decoded again."""

from __future__ import annotations

import os
import shutil

import numpy as np

from pneumoseg.data import cache as cache_module
from pneumoseg.data.cache import ImageCache
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.preprocess import resize_to_uint8


def _no_decoding(monkeypatch):
    def refuse(path):
        raise AssertionError(f"{path} was decoded again")

    monkeypatch.setattr(cache_module, "read_dicom", refuse)


def test_an_entry_is_read_back_without_decoding(sample_dicoms, tmp_path, monkeypatch):
    cache = ImageCache(64, tmp_path)
    image, shape = cache.load(sample_dicoms[0])
    expected = read_dicom(sample_dicoms[0])
    assert shape == expected.shape and np.array_equal(image, resize_to_uint8(expected.pixels, 64))
    (entry,) = list((tmp_path / "64px").rglob("*.raw"))
    assert entry.stat().st_size == 8 + 64 * 64  # raw: the source shape, then the pixels
    _no_decoding(monkeypatch)
    again, again_shape = cache.load(sample_dicoms[0])
    assert again_shape == shape and np.array_equal(again, image) and again.dtype == np.uint8


def test_an_edited_file_or_a_damaged_entry_is_decoded_again(sample_dicoms, tmp_path):
    source = tmp_path / "film.dcm"
    shutil.copy(sample_dicoms[0], source)
    cache = ImageCache(32, tmp_path / "cache")
    first, _ = cache.load(source)
    (entry,) = list((tmp_path / "cache").rglob("*.raw"))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    rebuilt, shape = cache.load(source)
    assert np.array_equal(rebuilt, first) and entry.stat().st_size == 8 + 32 * 32
    shutil.copy(sample_dicoms[1], source)
    os.utime(source, ns=(1, 1))
    other, _ = cache.load(source)
    assert np.array_equal(other, resize_to_uint8(read_dicom(sample_dicoms[1]).pixels, 32))
    assert len(list((tmp_path / "cache").rglob("*.raw"))) == 2


def test_a_disabled_cache_writes_nothing(sample_dicoms, tmp_path):
    ImageCache(32, tmp_path, enabled=False).load(sample_dicoms[0])
    assert not any(tmp_path.rglob("*.raw"))
