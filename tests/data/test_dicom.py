"""read_dicom / read_image_id on the real SIIM files, synthetic DICOMs and broken files."""

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space, get_decoder, get_encoder, set_pixel_data
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from pneumoseg.data.dicom import read_dicom, read_dicom_bytes, read_image_id
from pneumoseg.errors import DicomReadError


def write_dicom(
    path: Path, pixels: np.ndarray, photometric: str, bits_stored: int, **elements
) -> Path:
    """An uncompressed (Explicit VR Little Endian) CR file holding ``pixels``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.Modality = "CR"
    set_pixel_data(ds, pixels, photometric, bits_stored)  # also sets a new SOPInstanceUID
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_read_error(path: Path, *reason_words: str) -> None:
    with pytest.raises(DicomReadError) as info:
        read_dicom(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    reason = message.removeprefix(f"{path}: ")
    for word in reason_words:
        assert word in reason


# --- the real SIIM sample -----------------------------------------------------------------


def test_real_files_decode_to_unit_range_1024(sample_dicoms):
    assert len(sample_dicoms) == 11
    for path in sample_dicoms:
        image = read_dicom(path)
        assert image.pixels.shape == image.shape == (1024, 1024)
        assert image.pixels.dtype == np.float32
        assert 0.0 <= image.pixels.min() < image.pixels.max() <= 1.0
        assert image.image_id == path.stem == read_image_id(path)
        row, column = image.spacing
        assert row == column and 0.139 <= row <= 0.1944
        assert image.dataset.SOPInstanceUID == path.stem


def test_real_pixels_equal_a_direct_jpeg_decode(sample_dicoms):
    for path in sample_dicoms[:3]:
        ds = pydicom.dcmread(path)
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        expected = np.asarray(Image.open(io.BytesIO(frame)), dtype=np.float32) / 255
        np.testing.assert_array_equal(read_dicom(path).pixels, expected)


# --- synthetic images ---------------------------------------------------------------------


def write_jpeg_ls_claiming_8_bits(path: Path, stored: np.ndarray) -> Path:
    """A JPEG-LS file of 12-bit values whose header says BitsStored 8: a wrong header that
    survives decoding (in native data pydicom masks bits above HighBit, as the standard asks)."""
    if not get_encoder(JPEGLSLossless).is_available:
        pytest.skip("no JPEG-LS encoder (pyjpegls) installed")
    ds = pydicom.dcmread(write_dicom(path, stored, "MONOCHROME2", 12))
    ds.compress(JPEGLSLossless)
    ds.BitsStored, ds.HighBit = 8, 7
    ds.save_as(path)
    return path


def test_pixels_beyond_bits_stored_use_their_actual_range(tmp_path):
    blocks = np.ones((8, 8))
    stored = np.kron([[100, 1100], [600, 350]], blocks).astype(np.uint16)
    path = write_jpeg_ls_claiming_8_bits(tmp_path / "wrong_header.dcm", stored)
    expected = np.kron([[0, 1], [0.5, 0.25]], blocks)
    np.testing.assert_allclose(read_dicom(path).pixels, expected, atol=1e-6)


def test_flat_image_beyond_bits_stored_is_all_zero(tmp_path):
    path = write_jpeg_ls_claiming_8_bits(tmp_path / "flat.dcm", np.full((16, 16), 1100, np.uint16))
    pixels = read_dicom(path).pixels
    assert pixels.dtype == np.float32 and not pixels.any()


RGB_PIXELS = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 255], [0, 0, 0], [100, 150, 200]]],
    dtype=np.uint8,
)
RGB_GREY = np.array(
    [[0.299, 0.587, 0.114], [1.0, 0.0, (0.299 * 100 + 0.587 * 150 + 0.114 * 200) / 255]]
)


def test_rgb_becomes_luminance_grey(tmp_path):
    image = read_dicom(write_dicom(tmp_path / "rgb.dcm", RGB_PIXELS, "RGB", 8))
    assert image.pixels.shape == (2, 3) and image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, RGB_GREY, atol=1e-6)


def test_ybr_full_is_converted_before_luminance(tmp_path):
    ybr = convert_color_space(RGB_PIXELS, "RGB", "YBR_FULL")
    image = read_dicom(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL", 8))
    np.testing.assert_allclose(image.pixels, RGB_GREY, atol=3 / 255)  # 8-bit rounding twice


def test_non_square_odd_size_keeps_rows_and_columns(tmp_path):
    stored = (np.arange(37 * 53).reshape(37, 53) % 256).astype(np.uint8)
    image = read_dicom(write_dicom(tmp_path / "odd.dcm", stored, "MONOCHROME2", 8))
    assert image.shape == (37, 53)
    np.testing.assert_allclose(image.pixels, stored / 255, atol=1e-6)


def test_pixel_spacing_wins_over_imager_spacing_and_absent_is_none(tmp_path):
    stored = np.zeros((2, 2), dtype=np.uint8)
    spacings = {"PixelSpacing": [0.1, 0.3], "ImagerPixelSpacing": [0.2, 0.2]}
    both = write_dicom(tmp_path / "both.dcm", stored, "MONOCHROME2", 8, **spacings)
    assert read_dicom(both).spacing == (0.1, 0.3)
    assert read_dicom(write_dicom(tmp_path / "none.dcm", stored, "MONOCHROME2", 8)).spacing is None
    one_value = write_dicom(tmp_path / "one.dcm", stored, "MONOCHROME2", 8, PixelSpacing="0.1")
    assert read_dicom(one_value).spacing is None


def test_image_id_is_sop_instance_uid_else_file_stem(tmp_path):
    path = write_dicom(tmp_path / "named.dcm", np.zeros((2, 2), np.uint8), "MONOCHROME2", 8)
    uid = pydicom.dcmread(path).SOPInstanceUID
    assert read_dicom(path).image_id == read_image_id(path) == uid != "named"
    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID
    ds.save_as(path)
    assert read_dicom(path).image_id == read_image_id(path) == "named"


def test_multi_frame_gives_the_first_frame(tmp_path, caplog):
    frames = np.stack([np.full((3, 4), value, np.uint8) for value in (51, 102, 204)])
    image = read_dicom(write_dicom(tmp_path / "multi.dcm", frames, "MONOCHROME2", 8))
    np.testing.assert_allclose(image.pixels, np.full((3, 4), 0.2), atol=1e-6)
    assert "3 frames, using the first" in caplog.text


def test_palette_colour_without_its_palette_is_one_line(tmp_path):
    path = write_dicom(tmp_path / "palette.dcm", np.zeros((2, 2), np.uint8), "PALETTE COLOR", 8)
    assert_read_error(path, "Palette")


# --- broken files -------------------------------------------------------------------------


def test_text_file_is_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient list\n")
    assert_read_error(path, "not a DICOM file")
    with pytest.raises(DicomReadError, match="notes.dcm: not a DICOM file"):
        read_image_id(path)


def test_missing_file_and_folder(tmp_path):
    assert_read_error(tmp_path / "absent.dcm", "No such file")
    with pytest.raises(DicomReadError, match="Is a directory"):
        read_dicom(tmp_path)


@pytest.mark.filterwarnings("ignore:End of file reached")  # pydicom's note on the cut
@pytest.mark.parametrize("fraction", [0.002, 0.5, 0.9999])
def test_truncated_real_file(sample_dicoms, tmp_path, fraction):
    data = sample_dicoms[0].read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_read_error(path, "truncated")


def test_corrupt_header(sample_dicoms, tmp_path):
    data = bytearray(sample_dicoms[0].read_bytes())
    data[136:138] = b"ZZ"  # the VR of the first file meta element
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="Expected implicit VR"):  # pydicom, on the odd VR
        assert_read_error(path, "corrupt DICOM file", "ZZ")


def test_truncated_uncompressed_file(tmp_path):
    path = write_dicom(tmp_path / "short.dcm", np.ones((64, 64), np.uint16), "MONOCHROME2", 12)
    path.write_bytes(path.read_bytes()[:-100])
    assert_read_error(path, "cannot decode")


def test_dicom_without_pixel_data(sample_dicoms, tmp_path):
    ds = pydicom.dcmread(sample_dicoms[0])
    del ds.PixelData
    path = tmp_path / "header_only.dcm"
    ds.save_as(path)
    assert_read_error(path, "no Pixel Data")
    assert read_image_id(path) == sample_dicoms[0].stem  # the header alone is fine


def _with_transfer_syntax(source: Path, path: Path, tsyntax: str, frame: bytes) -> Path:
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.PixelData = encapsulate([frame])
    ds.save_as(path)
    return path


FAKE_J2K = b"\xff\x4f\xff\x51" + bytes(60)


def test_transfer_syntax_without_installed_decoder_names_the_package(sample_dicoms, tmp_path):
    if get_decoder(HTJ2KLossless).is_available:
        pytest.skip("an HTJ2K decoder is installed here")
    path = _with_transfer_syntax(sample_dicoms[0], tmp_path / "htj2k.dcm", HTJ2KLossless, FAKE_J2K)
    assert_read_error(
        path, "no decoder", "High-Throughput JPEG 2000", "pip install", "pylibjpeg-openjpeg"
    )


def test_corrupt_compressed_frame(sample_dicoms, tmp_path):
    path = _with_transfer_syntax(sample_dicoms[0], tmp_path / "j2k.dcm", JPEG2000Lossless, FAKE_J2K)
    # pylibjpeg-openjpeg or Pillow's OpenJPEG decode JPEG 2000; either rejects these bytes
    assert_read_error(path, "JPEG 2000")


def test_unknown_transfer_syntax(sample_dicoms, tmp_path):
    path = _with_transfer_syntax(sample_dicoms[0], tmp_path / "x.dcm", "1.2.3.4.5", bytes(8))
    assert_read_error(path, "unsupported transfer syntax 1.2.3.4.5")


def test_read_dicom_does_not_touch_the_source(sample_dicoms, tmp_path):
    copy = Path(shutil.copy(sample_dicoms[0], tmp_path / "copy.dcm"))
    before = copy.read_bytes()
    read_dicom(copy)
    assert copy.read_bytes() == before


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_read_dicom_bytes_decodes_like_read_dicom(sample_dicoms):
    path = sample_dicoms[0]
    from_file, from_memory = read_dicom(path), read_dicom_bytes(path.read_bytes(), name="upload.dcm")
    assert np.array_equal(from_file.pixels, from_memory.pixels)
    assert from_memory.image_id == from_file.image_id and from_memory.spacing == from_file.spacing
    assert from_memory.path == Path("upload.dcm")
    with pytest.raises(DicomReadError, match=r"^upload\.dcm: not a DICOM file"):
        read_dicom_bytes(b"hello" * 100, name="upload.dcm")
    with pytest.raises(DicomReadError, match=r"^upload\.dcm: "):
        read_dicom_bytes(path.read_bytes()[:2000], name="upload.dcm")


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                                     "PixelRepresentation", "PhotometricInterpretation"])
def test_a_header_without_a_pixel_module_element_is_a_read_error_naming_it(sample_dicoms, tmp_path, keyword):
    ds = pydicom.dcmread(sample_dicoms[0])
    delattr(ds, keyword)
    path = tmp_path / "x.dcm"
    ds.save_as(path)
    with pytest.raises(DicomReadError, match=f"x.dcm: bad image pixel description: .*{keyword}"):
        read_dicom(path)
