"""Every DICOM object pneumoseg writes passes dciodvfy with no "Error" line: the synthetic
films (8-bit JPEG and 12/16-bit MONOCHROME1) and the DICOM SEG on real and synthetic sources."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.synth.dicom_writer import SynthUids, write_synth_dicom
from pneumoseg.infer.dicom_seg import build_dicom_seg
from pneumoseg.io import atomic_save
from tests.helpers import dciodvfy_errors


def _film(tmp_path, bits: int):
    rng = np.random.default_rng(bits)
    image = rng.integers(0, 255, (256, 256), dtype=np.uint8) if bits == 8 else \
        rng.integers(0, 2**16 - 1, (256, 256), dtype=np.uint16)
    path = tmp_path / f"film{bits}.dcm"
    uids = SynthUids(*(pydicom.uid.generate_uid() for _ in range(3)))
    write_synth_dicom(path, image, uids, patient_number=7, view="PA", pixel_spacing_mm=0.168, sex="F", age=38,
                      bits_stored=bits)
    return path


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_synthetic_films_pass_dciodvfy(tmp_path, bits):
    assert dciodvfy_errors(_film(tmp_path, bits)) == []


def _seg_of_a_rectangle(source, tmp_path):
    image = read_dicom(source)
    mask = np.zeros(image.shape, bool)
    mask[image.shape[0] // 4:image.shape[0] // 2, image.shape[1] // 8:image.shape[1] // 3] = True
    path = tmp_path / f"{source.stem}-seg.dcm"
    atomic_save(path, build_dicom_seg(image, mask).save_as)
    return path, mask


def test_a_seg_on_every_real_sample_passes_dciodvfy_and_reads_back(sample_dicoms, tmp_path):
    for source in sample_dicoms:
        path, mask = _seg_of_a_rectangle(source, tmp_path)
        assert dciodvfy_errors(path) == [], source.name
        seg = hd.seg.segread(path)
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])
        assert np.array_equal(pixels[0, :, :, 0].astype(bool), mask)


@pytest.mark.parametrize("bits", [12, 16])
def test_a_seg_on_a_high_bit_depth_monochrome1_film_passes_dciodvfy(tmp_path, bits):
    source = _film(tmp_path, bits)
    assert pydicom.dcmread(source).PhotometricInterpretation == "MONOCHROME1"
    path, _ = _seg_of_a_rectangle(source, tmp_path)
    assert dciodvfy_errors(path) == []
