"""Stored values to display grey (data/intensity.py through read_dicom): windows, VOI LUTs,
rescale, presentation shape, palette colour, the >8-bit stretch, spacing, and headers that
disagree with their pixels. Expectations are the standard's formulas written out by hand."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from PIL import Image

from pneumoseg.data.dicom import read_dicom
from tests.data.test_dicom import assert_read_error, write_dicom

RNG = np.random.default_rng(0)


def _linear_window(v, center, width):
    """PS3.3 C.11.2.1.2.1 (VOI LUT Function LINEAR), as a share of the output range."""
    return np.clip((v - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def test_a_15_bit_monochrome1_cr_reads_with_its_window(tmp_path):
    """A CR from a public-corpus-like archive: 15 bits, MONOCHROME1, a narrow lung window."""
    stored = RNG.integers(0, 2**15, (24, 32), dtype=np.uint16)
    path = write_dicom(tmp_path / "cr15.dcm", stored, "MONOCHROME1", 15, WindowCenter=16000, WindowWidth=9000)
    expected = 1 - _linear_window(stored.astype(float), 16000, 9000)  # MONOCHROME1: high = dark after inversion
    np.testing.assert_allclose(read_dicom(path).pixels, expected, atol=1e-5)


def test_first_of_several_windows_and_sigmoid(tmp_path):
    stored = RNG.integers(0, 4096, (8, 8), dtype=np.uint16)
    path = write_dicom(tmp_path / "sig.dcm", stored, "MONOCHROME2", 12, WindowCenter=[1500, 3000],
                       WindowWidth=[800, 2000], VOILUTFunction="SIGMOID")
    expected = 1 / (1 + np.exp(-4 * (stored.astype(float) - 1500) / 800))  # PS3.3 C.11.2.1.3.1, first window
    np.testing.assert_allclose(read_dicom(path).pixels, expected, atol=1e-5)


def test_rescale_then_window_in_rescaled_units(tmp_path):
    stored = RNG.integers(0, 4096, (8, 8), dtype=np.uint16)
    path = write_dicom(tmp_path / "rescale.dcm", stored, "MONOCHROME2", 12, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=2000, WindowWidth=3000)
    expected = _linear_window(stored * 2.0 - 1000, 2000, 3000)
    np.testing.assert_allclose(read_dicom(path).pixels, expected, atol=1e-5)


def test_voi_lut_sequence_is_looked_up(tmp_path):
    stored = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, "MONOCHROME2", 12)
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 10])  # 4 entries, first stored value 0, 10-bit output
    item.add_new("LUTData", "OW", np.array([0, 100, 1000, 1023], "<u2").tobytes())
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    lookup = np.array([0, 100, 1000, 1023]) / 1023
    np.testing.assert_allclose(read_dicom(path).pixels, lookup[stored], atol=1e-6)


def test_presentation_lut_shape_inverse_inverts_monochrome2(tmp_path):
    stored = np.array([[0, 255], [51, 204]], dtype=np.uint8)
    path = write_dicom(tmp_path / "inverse.dcm", stored, "MONOCHROME2", 8, PresentationLUTShape="INVERSE")
    np.testing.assert_allclose(read_dicom(path).pixels, 1 - stored / 255, atol=1e-6)


def test_more_than_8_bits_without_a_window_are_stretched_between_percentiles(tmp_path):
    """Most of a 12-bit film lies in 1000-2000; collimator black and a burnt-in label do not
    set the contrast."""
    stored = RNG.integers(1000, 2001, (100, 100)).astype(np.uint16)
    stored[:3] = 0  # 3% collimator
    stored[-1, :20] = 4095  # 0.2% label
    low, high = np.percentile(stored, [0.5, 99.5])
    path = write_dicom(tmp_path / "stretch.dcm", stored, "MONOCHROME2", 12)
    pixels = read_dicom(path).pixels
    np.testing.assert_allclose(pixels, np.clip((stored - low) / (high - low), 0, 1), atol=1e-5)
    assert low == 0 and 1990 <= high <= 2000  # the label is clipped, the film spans the range


def test_signed_data_with_a_window(tmp_path):
    stored = np.array([[-2048, 2047], [0, -1]], dtype=np.int16)
    path = write_dicom(tmp_path / "signed.dcm", stored, "MONOCHROME2", 12, WindowCenter=0, WindowWidth=4096)
    np.testing.assert_allclose(read_dicom(path).pixels, _linear_window(stored.astype(float), 0, 4096), atol=1e-5)


def _palette_file(tmp_path, bits: int):
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    path = write_dicom(tmp_path / f"palette{bits}.dcm", stored, "PALETTE COLOR", 8)
    ds = pydicom.dcmread(path)
    top = 2**bits - 1
    red, green, blue = [0, top, 0, top], [0, 0, top, top], [0, 0, 0, top]
    for colour, values in (("Red", red), ("Green", green), ("Blue", blue)):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [4, 0, bits])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", np.array(values, "<u2").tobytes())
    ds.save_as(path)
    return path, stored


@pytest.mark.parametrize("bits", [8, 16])
def test_palette_colour_goes_through_its_lut_to_grey(tmp_path, bits):
    path, stored = _palette_file(tmp_path, bits)
    colours = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]], float)  # black, red, green, white
    expected = colours[stored] @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(read_dicom(path).pixels, expected, atol=1e-5)


def test_spacing_prefers_the_patient_plane_and_corrects_magnification(tmp_path):
    stored = np.zeros((2, 2), np.uint8)
    cases = [({"PixelSpacing": [0.1, 0.3], "ImagerPixelSpacing": [0.2, 0.2]}, (0.1, 0.3), "PixelSpacing"),
             ({"ImagerPixelSpacing": [0.2, 0.25], "EstimatedRadiographicMagnificationFactor": 1.25}, (0.16, 0.2),
              "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor"),
             ({"ImagerPixelSpacing": [0.2, 0.25]}, (0.2, 0.25), "ImagerPixelSpacing (at the detector"),
             ({"PixelSpacing": ["0", "0"]}, None, None), ({"PixelSpacing": ""}, None, None),
             ({"PixelSpacing": "0\\0", "ImagerPixelSpacing": [0.15, 0.15]}, (0.15, 0.15), "ImagerPixelSpacing (at")]
    for i, (tags, spacing, source) in enumerate(cases):
        image = read_dicom(write_dicom(tmp_path / f"s{i}.dcm", stored, "MONOCHROME2", 8, **tags))
        assert image.spacing == (pytest.approx(spacing) if spacing else None), tags
        assert (image.spacing_source or "").startswith(source or ""), (tags, image.spacing_source)


def test_a_jpeg_stream_that_disagrees_with_rows_and_columns_is_refused(sample_dicoms, tmp_path):
    ds = pydicom.dcmread(sample_dicoms[0])
    ds.Rows, ds.Columns = 2048, 512  # same pixel count, another shape
    path = tmp_path / "reshaped.dcm"
    ds.save_as(path)
    assert_read_error(path, "the header says 2048×512 pixels", "stream is 1024×1024")


def test_native_data_larger_than_its_header_is_refused(tmp_path):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((64, 64), np.uint8), "MONOCHROME2", 8)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 32  # a quarter of the data would be used
    ds.save_as(path)
    assert_read_error(path, "the header says 32×32 pixels (1,024 bytes)", "holds 4,096 bytes")


def test_a_grey_header_over_a_colour_jpeg_is_refused(sample_dicoms, tmp_path):
    ds = pydicom.dcmread(sample_dicoms[0])
    grey = np.asarray(Image.open(io.BytesIO(next(generate_frames(ds.PixelData, number_of_frames=1)))))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, -1)).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    path = tmp_path / "colour.dcm"
    ds.save_as(path)
    assert_read_error(path, "the header says 1024×1024 pixels", "1024×1024×3")
