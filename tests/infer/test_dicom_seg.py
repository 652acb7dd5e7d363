"""DICOM SEG output: built on real SIIM files and on a synthetic 16-bit MONOCHROME1 image, read back
with highdicom and pydicom, and written by ``predict --dicom-seg``."""

import csv
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

import pneumoseg
from pneumoseg.cli import app
from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.rle import rle_decode
from pneumoseg.infer.dicom_outputs import DicomOutputs
from pneumoseg.infer.dicom_seg import build_dicom_seg, mask_at_source_size
from pneumoseg.io import atomic_save
from pneumoseg.infer.pipeline import build_torch_pipeline
from pneumoseg.infer.predict import predict_files, safe_name

runner = CliRunner()

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_mono1_16bit(path: Path, rows: int = 300, cols: int = 171, **extra) -> Path:
    """An uncompressed 16-bit (12 stored) MONOCHROME1 DX image, not square, no Frame of Reference."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "p1"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def check_seg(path: Path, source: pydicom.Dataset, mask: np.ndarray) -> None:
    """``path`` is a readable BINARY SEG of ``mask`` on ``source`` with pneumoseg's coding."""
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    assert seg.SOPInstanceUID != source.SOPInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.Manufacturer == "pneumoseg" and seg.SoftwareVersions == pneumoseg.__version__
    assert seg.SeriesDescription and seg.DeviceSerialNumber
    assert seg.number_of_segments == 1
    description = seg.get_segment_description(1)
    assert description.segment_label == "Pneumothorax"
    assert description.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert description.segmented_property_type == codes.SCT.Pneumothorax
    (algorithm,) = description.algorithm_identification
    assert algorithm.AlgorithmName == "pneumoseg" and algorithm.AlgorithmVersion == pneumoseg.__version__
    assert hd.sr.CodedConcept.from_dataset(algorithm.AlgorithmFamilyCodeSequence[0]) == codes.DCM.ArtificialIntelligence
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    assert pixels.shape == (1, *mask.shape, 1)
    np.testing.assert_array_equal(pixels[0, :, :, 0].astype(bool), mask)
    plain = pydicom.dcmread(path)  # and a reader that knows nothing of SEG sees the same pixels
    np.testing.assert_array_equal(plain.pixel_array.astype(bool), mask)


def test_seg_of_a_rectangle_on_a_real_siim_file(sample_dicoms, tmp_path):
    image = read_dicom(sample_dicoms[0])
    assert "FrameOfReferenceUID" not in image.dataset  # the SIIM files have none
    mask = np.zeros(image.shape, dtype=bool)
    mask[100:300, 600:650] = True  # tall and narrow, off the diagonal: a transpose would show
    mask[1000, 3] = True
    path = tmp_path / "seg.dcm"
    atomic_save(path, build_dicom_seg(image, mask).save_as)
    check_seg(path, image.dataset, mask)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]  # no temporary left behind
    seg = pydicom.dcmread(path)
    assert seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing == image.dataset.PixelSpacing
    second = build_dicom_seg(image, mask)
    assert second.SOPInstanceUID != seg.SOPInstanceUID and second.SeriesInstanceUID != seg.SeriesInstanceUID


def test_seg_on_a_non_square_16_bit_monochrome1_image(tmp_path):
    source = write_mono1_16bit(tmp_path / "dx.dcm", PixelSpacing=[0.2, 0.15])
    image = read_dicom(source)
    assert image.shape == (300, 171)
    mask = np.zeros(image.shape, dtype=bool)
    mask[10:40, 120:170] = True
    path = tmp_path / "seg.dcm"
    atomic_save(path, build_dicom_seg(image, mask).save_as)
    check_seg(path, image.dataset, mask)
    assert "PatientBirthDate" not in image.dataset  # highdicom needs it; it was added on a copy


@pytest.mark.parametrize("extra", [
    {},  # no spacing at all
    {"FrameOfReferenceUID": generate_uid()},  # a frame of reference without an image position
    {"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.1, 0.1]},  # unusable PixelSpacing: left out
], ids=["no-spacing", "frame-of-reference", "bad-spacing"])
def test_seg_on_sources_with_unusual_headers(tmp_path, extra):
    image = read_dicom(write_mono1_16bit(tmp_path / "dx.dcm", rows=64, cols=48, **extra))
    mask = np.zeros(image.shape, dtype=bool)
    mask[5:9, 30:47] = True
    path = tmp_path / "seg.dcm"
    atomic_save(path, build_dicom_seg(image, mask).save_as)
    check_seg(path, image.dataset, mask)
    assert list(image.dataset.get("PixelSpacing", [])) == list(extra.get("PixelSpacing", []))  # source untouched


def test_empty_or_misshapen_masks_are_refused(sample_dicoms):
    image = read_dicom(sample_dicoms[0])
    with pytest.raises(ValueError, match="empty"):
        build_dicom_seg(image, np.zeros(image.shape, dtype=bool))
    with pytest.raises(ValueError, match="Rows x Columns"):
        build_dicom_seg(image, np.ones((512, 512), dtype=bool))


def test_mask_at_source_size_keeps_the_pixels_at_least_half_covered():
    """One rule (data.preprocess.resize_mask): shrinking, an output pixel is on when half or more
    of the input area it covers is; enlarging, each output pixel takes the input pixel it lies in."""
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[:512, 768:] = True  # the top-right quarter of the width, the top half of the height
    small = mask_at_source_size(mask, (300, 171))
    assert small.shape == (300, 171) and small.dtype == bool
    expected = np.zeros((300, 171), dtype=bool)
    # column 128 spans input columns 766.5-772.5, three quarters inside the mask; column 127 none.
    # row 149 spans input rows 508.6-512, all inside; row 150 starts at 512.
    expected[:150, 128:] = True
    np.testing.assert_array_equal(small, expected)
    np.testing.assert_array_equal(mask_at_source_size(mask, (1024, 1024)), mask)
    np.testing.assert_array_equal(mask_at_source_size(mask, (2048, 2048)), mask.repeat(2, 0).repeat(2, 1))


def read_submission(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["ImageId"]: row["EncodedPixels"] for row in csv.DictReader(fh)}


def test_predict_files_writes_seg_for_positive_images_only(tiny_runs, sample_dicoms, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    extra = read_dicom(write_mono1_16bit(folder / "dx.dcm"))
    paths = [*sample_dicoms[:3], extra.path]
    pipeline = build_torch_pipeline(None, tiny_runs.seg)
    # a threshold in the middle of the first image's probabilities: a mask neither empty nor full
    (probe,) = pipeline.predict([read_dicom(paths[0]).pixels])
    pipeline.post = pipeline.post.model_copy(
        update={"rule": "threshold", "pixel_threshold": float(np.median(probe.seg_prob)), "min_area": 0})
    segs = tmp_path / "segs"
    summary = predict_files(pipeline, paths, tmp_path / "sub.csv", dicom=DicomOutputs(seg=segs), progress=False)
    rles = read_submission(tmp_path / "sub.csv")
    assert summary.n_positive >= 1
    for path in paths:
        image = read_dicom(path)
        seg_path = segs / f"{safe_name(image.image_id)}.dcm"
        mask_1024 = rle_decode(rles[image.image_id])
        assert seg_path.exists() == bool(mask_1024.any())
        if seg_path.exists():
            check_seg(seg_path, image.dataset, mask_at_source_size(mask_1024, image.shape))
    first = rle_decode(rles[read_dicom(paths[0]).image_id])
    assert 0 < first.mean() < 1
    pipeline.post = pipeline.post.model_copy(update={"pixel_threshold": 1.0})  # nothing is positive
    summary = predict_files(pipeline, paths, tmp_path / "none.csv", dicom=DicomOutputs(seg=tmp_path / "none"), progress=False)
    assert summary.n_positive == 0 and not (tmp_path / "none").exists()


def test_cli_predict_dicom_seg_for_every_positive_image(tiny_runs, sample_dir, sample_dicoms, tmp_path):
    out, segs = tmp_path / "sub.csv", tmp_path / "segs"
    result = runner.invoke(app, ["predict", "--cls", str(tiny_runs.cls), "--seg", str(tiny_runs.seg),
                                 "--images", str(sample_dir / "dicom"), "--out", str(out),
                                 "--cls-threshold", "0", "--pixel-threshold", "0", "--min-area", "0",
                                 "--dicom-seg", str(segs)])
    assert result.exit_code == 0, result.output
    rles = read_submission(out)
    assert sorted(p.name for p in segs.iterdir()) == sorted(f"{safe_name(p.stem)}.dcm" for p in sample_dicoms)
    for path in sample_dicoms:
        image = read_dicom(path)
        check_seg(segs / f"{safe_name(image.image_id)}.dcm", image.dataset,
                  mask_at_source_size(rle_decode(rles[image.image_id]), image.shape))


def test_cli_without_dicom_seg_writes_none(tiny_runs, sample_dicoms, tmp_path):
    result = runner.invoke(app, ["predict", "--seg-only", "--seg", str(tiny_runs.seg), "--images", str(sample_dicoms[0]),
                                 "--out", str(tmp_path / "sub.csv"), "--pixel-threshold", "0", "--min-area", "0"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


def test_a_header_that_cannot_carry_a_seg_is_logged_and_skipped(tiny_runs, sample_dicoms, tmp_path, caplog):
    no_study = write_mono1_16bit(tmp_path / "dx.dcm", rows=64, cols=64)
    ds = pydicom.dcmread(no_study)
    del ds.StudyInstanceUID
    ds.save_as(no_study)
    pipeline = build_torch_pipeline(None, tiny_runs.seg)
    pipeline.post = pipeline.post.model_copy(update={"pixel_threshold": 0.0, "min_area": 0})
    segs = tmp_path / "segs"
    summary = predict_files(pipeline, [sample_dicoms[0], no_study], tmp_path / "sub.csv", dicom=DicomOutputs(seg=segs),
                            progress=False)
    assert summary.n_positive == 2 and not summary.errors
    assert [p.name for p in segs.iterdir()] == [f"{sample_dicoms[0].stem}.dcm"]
    assert "dx.dcm: no DICOM SEG written" in caplog.text and "StudyInstanceUID" in caplog.text
