"""The synthetic SIIM-style dataset: layout, label CSV, DICOM tags, realism checks, determinism."""

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import label_mask, read_labels
from pneumoseg.data.synth import (
    generate_dataset,
    load_shape_bank,
    synth_radiograph,
    synth_uids,
    write_synth_dicom,
)
from pneumoseg.errors import PneumosegError

SIZE = 128
N_TRAIN, N_TEST = 12, 4
ROW = re.compile(r"^[0-9.]+, (-1|[0-9]+( [0-9]+)*)$")
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(out, N_TRAIN, test_n=N_TEST, seed=3, size=SIZE, progress=False)
    return out, summary


def dicoms(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def ring_around(mask: np.ndarray, width: int) -> np.ndarray:
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    return grown.astype(bool) & ~mask


# --- layout and labels ----------------------------------------------------------------------


def test_layout_is_study_series_sop(dataset):
    out, _ = dataset
    files = dicoms(out / "dicom-images-train")
    assert len(files) == N_TRAIN
    for path in files:
        study, series, _ = path.relative_to(out / "dicom-images-train").parts
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert (study, series, path.stem) == uids


def test_label_csv_is_stage1_style_one_row_per_instance(dataset):
    out, summary = dataset
    lines = (out / "train-rle.csv").read_text().splitlines()
    assert lines[0] == "ImageId, EncodedPixels"
    assert all(ROW.match(line) for line in lines[1:])
    ids = [line.split(", ")[0] for line in lines[1:]]
    assert set(ids) == {path.stem for path in dicoms(out / "dicom-images-train")}
    negatives = [line for line in lines[1:] if line.endswith(", -1")]
    assert len(negatives) == N_TRAIN - summary.n_positive_train
    assert len(lines) - 1 == len(negatives) + summary.n_instances_train


def test_labels_read_back_with_read_labels(dataset):
    out, summary = dataset
    labels = read_labels(out / "train-rle.csv", shape=(SIZE, SIZE))
    assert len(labels) == N_TRAIN
    assert len(labels.positive_ids) == summary.n_positive_train == round(N_TRAIN * 0.23)
    assert labels.n_instances == summary.n_instances_train


def test_test_split_is_written_apart(dataset):
    out, summary = dataset
    test_ids = {path.stem for path in dicoms(out / "dicom-images-test")}
    assert len(test_ids) == summary.n_test == N_TEST
    assert summary.test_csv == out / "test-rle.csv"
    assert set(read_labels(summary.test_csv, shape=(SIZE, SIZE)).images) == test_ids
    assert not test_ids & set(read_labels(summary.train_csv, shape=(SIZE, SIZE)).images)
    assert "test: 4 images" in summary.render()


def test_positive_share_and_double_instances(tmp_path):
    summary = generate_dataset(tmp_path, 200, seed=1, size=64, progress=False)
    assert summary.n_positive_train == 46  # round(200 * 0.23)
    assert summary.n_positive_train < summary.n_instances_train <= summary.n_positive_train + 12


def test_existing_dataset_needs_overwrite(tmp_path):
    generate_dataset(tmp_path, 3, test_n=2, size=64, progress=False)
    with pytest.raises(PneumosegError, match="overwrite"):
        generate_dataset(tmp_path, 3, size=64, progress=False)
    generate_dataset(tmp_path, 2, size=64, progress=False, overwrite=True)
    assert len(dicoms(tmp_path)) == 2
    assert not (tmp_path / "test-rle.csv").exists()


def test_invalid_request_is_refused(tmp_path):
    with pytest.raises(PneumosegError, match="positive_rate"):
        generate_dataset(tmp_path, 3, positive_rate=1.5, progress=False)


# --- DICOM files ----------------------------------------------------------------------------


def test_dicom_tags_match_the_siim_release(dataset):
    out, _ = dataset
    for path in dicoms(out):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CR" and ds.SamplesPerPixel == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition in ("PA", "AP")
        assert str(ds.PatientName).startswith("Synthetic^")
        # Spacing scales with size so the field matches a 1024 px SIIM image (0.139-0.194 mm).
        assert 0.139 <= float(ds.PixelSpacing[0]) * SIZE / 1024 <= 0.194


def test_pixels_read_back_within_jpeg_error(tmp_path):
    radiograph = synth_radiograph(np.random.default_rng(0), 256, n_pneumothorax=1)
    uids = synth_uids(0, "train", 0)
    path = tmp_path / "x.dcm"
    write_synth_dicom(path, radiograph.image, uids, patient_number=1, view="PA",
                      pixel_spacing_mm=0.67, sex="F", age=40)
    image = read_dicom(path)
    assert image.image_id == uids.sop and image.shape == (256, 256)
    for decoded in (pydicom.dcmread(path).pixel_array, np.round(image.pixels * 255)):
        error = np.abs(decoded.astype(int) - radiograph.image.astype(int))
        assert error.mean() < 1.5 and np.percentile(error, 99) <= 8


# --- what the images show -------------------------------------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_pneumothorax_lies_in_the_lung_and_is_darker_than_it(index):
    size = 256
    rng = np.random.default_rng([11, index])
    radiograph = synth_radiograph(rng, size, n_pneumothorax=1 + index % 2)
    assert 1 <= radiograph.n_instances <= 2
    image = radiograph.image.astype(float)
    for instance in radiograph.instances:
        assert instance.sum() > 0
        assert not (instance & ~radiograph.lungs).any()
        nearby_lung = ring_around(instance, size // 25) & radiograph.lungs & ~radiograph.mask
        assert image[instance].mean() < image[nearby_lung].mean() - 5


def test_lungs_are_darker_than_the_body_and_air_darkest():
    radiograph = synth_radiograph(np.random.default_rng(5), 256)
    image = radiograph.image.astype(float)
    assert radiograph.n_instances == 0 and not radiograph.mask.any()
    centre_column = image[:, 120:136]  # mediastinum and spine
    assert image[radiograph.lungs].mean() < centre_column.mean() - 40
    assert image[:8, :8].mean() < image[radiograph.lungs].mean()  # air above the shoulder


def test_csv_masks_are_darker_than_their_surroundings(dataset):
    out, _ = dataset
    labels = read_labels(out / "train-rle.csv", shape=(SIZE, SIZE))
    images = {image.image_id: image.pixels
              for image in map(read_dicom, dicoms(out / "dicom-images-train"))}
    for image_id in labels.positive_ids:
        mask = label_mask(labels[image_id], (SIZE, SIZE))
        pixels = images[image_id]
        ys, xs = np.nonzero(mask)
        assert 0.02 * SIZE < xs.mean() < 0.98 * SIZE and ys.mean() < 0.95 * SIZE
        assert pixels[mask].mean() < pixels[ring_around(mask, SIZE // 32)].mean()


# --- determinism and packaging --------------------------------------------------------------


def generated_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    runs = [generate_dataset(tmp_path / name, 6, test_n=2, seed=seed, size=64, progress=False)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    a, b, c = (generated_files(run.out) for run in runs)
    assert a == b
    assert a["train-rle.csv"] != c["train-rle.csv"]
    pixels = [[read_dicom(p).pixels for p in dicoms(run.out / "dicom-images-train")]
              for run in runs]
    assert all(np.array_equal(x, y) for x, y in zip(pixels[0], pixels[1]))
    assert not any(np.array_equal(x, y) for x, y in zip(pixels[0], pixels[2]))


def test_shape_bank_ships_inside_the_package():
    asset = resources.files("pneumoseg").joinpath("assets/shape_bank.npz")
    assert asset.is_file() and len(asset.read_bytes()) < 300 * 1024
    bank = load_shape_bank()
    assert len(bank) == 300 and bank.crops.shape[1:] == (64, 64)
    assert (bank.boxes >= 0).all() and (bank.boxes <= 1).all()
    assert (bank.areas >= 0.002 * bank.source_size**2).all()


def test_generator_does_not_read_the_real_data(tmp_path):
    """Run in a fresh interpreter with an audit hook that fails on any open under shared/."""
    script = f"""
import sys
from pathlib import Path
forbidden = {str(SHARED)!r}
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, Path)) and str(args[0]).startswith(forbidden):
        raise RuntimeError(f"opened {{args[0]}}")
sys.addaudithook(hook)
from pneumoseg.data.synth import generate_dataset
generate_dataset(Path({str(tmp_path)!r}), 4, size=64, positive_rate=0.5, progress=False)
try:
    open(forbidden + "/probe")
except RuntimeError:
    print("hook active")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hook active" in result.stdout
