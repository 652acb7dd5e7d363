"""The preprocessing cache: one memory-mapped store of fixed-size slots per resolution with an
appended index; hits are read back without decoding, an edited source or a lost slot is decoded
again, and processes filling it at once neither clash nor duplicate."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil

import numpy as np

from pneumoseg.data import cache as cache_module
from pneumoseg.data.cache import INDEX, PIXELS, ImageCache
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.preprocess import resize_to_uint8


def _no_decoding(monkeypatch):
    def refuse(path):
        raise AssertionError(f"{path} was decoded again")

    monkeypatch.setattr(cache_module, "read_dicom", refuse)


def _expected(path, size):
    return resize_to_uint8(read_dicom(path).pixels, size)


def _index_lines(store):
    header, *entries = (store / INDEX).read_text().splitlines()
    assert header.startswith("pneumoseg-cache\t")
    return entries


def test_entries_are_slots_of_one_store_read_back_without_decoding(sample_dicoms, tmp_path, monkeypatch):
    cache = ImageCache(64, tmp_path)
    first, shape = cache.load(sample_dicoms[0])
    cache.load(sample_dicoms[1])
    assert shape == read_dicom(sample_dicoms[0]).shape and np.array_equal(first, _expected(sample_dicoms[0], 64))
    store = tmp_path / "64px"
    assert (store / PIXELS).stat().st_size == 2 * 64 * 64  # raw slots, nothing else
    assert len(_index_lines(store)) == 2
    _no_decoding(monkeypatch)
    for reader in (cache, ImageCache(64, tmp_path)):  # the same object, and a new process's view
        again, again_shape = reader.load(sample_dicoms[0])
        assert again_shape == shape and np.array_equal(again, first) and again.dtype == np.uint8
        again[:] = 0  # a copy: the caller may write to it
        assert np.array_equal(reader.load(sample_dicoms[0])[0], first)


def test_an_edited_file_or_a_lost_slot_is_decoded_again(sample_dicoms, tmp_path):
    source = tmp_path / "film.dcm"
    shutil.copy(sample_dicoms[0], source)
    cache = ImageCache(32, tmp_path / "cache")
    first, _ = cache.load(source)
    store = tmp_path / "cache" / "32px"
    with open(store / PIXELS, "r+b") as fh:
        fh.truncate(100)  # damaged: the indexed slot is gone
    rebuilt, _ = ImageCache(32, tmp_path / "cache").load(source)
    assert np.array_equal(rebuilt, first)
    assert (store / PIXELS).stat().st_size == 2 * 32 * 32  # written after the partial slot
    shutil.copy(sample_dicoms[1], source)
    os.utime(source, ns=(1, 1))
    other, _ = cache.load(source)
    assert np.array_equal(other, _expected(sample_dicoms[1], 32))
    assert len(_index_lines(store)) == 3


def test_a_partial_index_line_from_a_crashed_writer_is_ignored(sample_dicoms, tmp_path):
    cache = ImageCache(32, tmp_path)
    cache.load(sample_dicoms[0])
    with open(tmp_path / "32px" / INDEX, "ab") as fh:
        fh.write(b"0123abc\t7")  # no newline: a writer died mid-line
    image, _ = ImageCache(32, tmp_path).load(sample_dicoms[1])
    assert np.array_equal(image, _expected(sample_dicoms[1], 32))
    again = ImageCache(32, tmp_path)
    assert np.array_equal(again.load(sample_dicoms[0])[0], _expected(sample_dicoms[0], 32))


def test_a_deleted_store_is_made_again(sample_dicoms, tmp_path):
    cache = ImageCache(32, tmp_path)
    cache.load(sample_dicoms[0])
    shutil.rmtree(tmp_path / "32px")
    image, _ = cache.load(sample_dicoms[1])
    assert np.array_equal(image, _expected(sample_dicoms[1], 32))
    assert len(_index_lines(tmp_path / "32px")) == 1  # the new store holds only what came after
    assert np.array_equal(cache.load(sample_dicoms[0])[0], _expected(sample_dicoms[0], 32))


def test_a_pickled_cache_carries_settings_not_pixels(sample_dicoms, tmp_path, monkeypatch):
    cache = ImageCache(64, tmp_path)
    for path in sample_dicoms:
        cache.load(path)
    blob = pickle.dumps(cache)
    assert len(blob) < 1000  # what a DataLoader worker receives
    _no_decoding(monkeypatch)
    assert np.array_equal(pickle.loads(blob).load(sample_dicoms[2])[0], cache.load(sample_dicoms[2])[0])


def _fill(root, paths):
    cache = ImageCache(48, root)
    for path in paths:
        cache.load(path)


def test_processes_filling_the_store_at_once_write_each_entry_once(sample_dicoms, tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fill, args=(tmp_path, sample_dicoms[::step])) for step in (1, -1, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    lines = _index_lines(tmp_path / "48px")
    assert len(lines) == len({line.split()[0] for line in lines}) == len(sample_dicoms)
    cache = ImageCache(48, tmp_path)
    for path in sample_dicoms:
        assert np.array_equal(cache.load(path)[0], _expected(path, 48))


def test_a_disabled_cache_writes_nothing(sample_dicoms, tmp_path):
    ImageCache(32, tmp_path, enabled=False).load(sample_dicoms[0])
    assert not any(tmp_path.iterdir())
