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
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.labels import label_mask, read_labels
from pneumoseg.data.synth.lookalikes import LOOKALIKE_KINDS, LOOKALIKE_RATES
from pneumoseg.data.synth.real_stats import REAL_STATS
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
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CR" and ds.SamplesPerPixel == 1
        if ds.BitsAllocated == 16:  # some training files, like other archives
            assert "dicom-images-train" in str(path)
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.PhotometricInterpretation == "MONOCHROME1"
            assert ds.BitsStored in (12, 16) and ds.HighBit == ds.BitsStored - 1
            assert ds.PixelRepresentation == 0
        else:
            assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
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
def test_pneumothorax_lies_in_the_lung(index):
    size = 256
    rng = np.random.default_rng([11, index])
    radiograph = synth_radiograph(rng, size, n_pneumothorax=1 + index % 2)
    assert 1 <= radiograph.n_instances <= 2
    assert len(radiograph.conspicuity) == radiograph.n_instances
    for instance in radiograph.instances:
        assert instance.sum() > 0
        assert not (instance & ~radiograph.lungs).any()


def test_pneumothorax_is_only_moderately_darker_than_the_lung_beside_it():
    """Real pneumothorax air is only slightly darker than the aerated lung next to it (the cues
    are the pleural line and the missing markings). Inside-mask vs ring-outside mean difference,
    in units of the lung's std: the old near-black blob gave 0.85 on average (0.45..1.3)."""
    size = 256
    contrasts = []
    for index in range(12):
        radiograph = synth_radiograph(np.random.default_rng([21, index]), size, n_pneumothorax=1)
        mask, lungs = radiograph.mask, radiograph.lungs
        image = radiograph.image.astype(float)
        ring = ring_around(mask, size // 25) & lungs
        contrasts.append((image[ring].mean() - image[mask].mean()) / image[lungs & ~mask].std())
    assert np.mean(contrasts) < 0.5
    assert max(contrasts) < 1.2


def test_lungs_are_darker_than_the_body_and_air_darkest():
    radiograph = synth_radiograph(np.random.default_rng(5), 256)
    image = radiograph.image.astype(float)
    assert radiograph.n_instances == 0 and not radiograph.mask.any()
    centre_column = image[:, 120:136]  # mediastinum and spine
    assert image[radiograph.lungs].mean() < centre_column.mean() - 40
    assert image[:8, :8].mean() < image[radiograph.lungs].mean()  # air above the shoulder


def test_csv_masks_lie_where_the_lungs_are(dataset):
    out, _ = dataset
    labels = read_labels(out / "train-rle.csv", shape=(SIZE, SIZE))
    images = {image.image_id: image.pixels
              for image in map(read_dicom, dicoms(out / "dicom-images-train"))}
    for image_id in labels.positive_ids:
        mask = label_mask(labels[image_id], (SIZE, SIZE))
        pixels = images[image_id]
        ys, xs = np.nonzero(mask)
        assert 0.02 * SIZE < xs.mean() < 0.98 * SIZE and ys.mean() < 0.95 * SIZE
        assert pixels.shape == mask.shape


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


# --- look-alikes, bit depth, sizes, dataset card ----------------------------------------------


def test_lookalikes_are_never_in_the_mask():
    for index in range(4):
        runs = {on: synth_radiograph(np.random.default_rng([31, index]), 256, 1,
                                     lookalikes=dict.fromkeys(LOOKALIKE_KINDS, on))
                for on in (True, False)}
        assert runs[True].lookalikes == LOOKALIKE_KINDS and runs[False].lookalikes == ()
        assert np.array_equal(runs[True].mask, runs[False].mask)  # same label either way
        assert not np.array_equal(runs[True].image, runs[False].image)
        assert runs[True].lookalike_mask.any() and not runs[False].lookalike_mask.any()
    negative = synth_radiograph(np.random.default_rng(4), 256, 0,
                                lookalikes=dict.fromkeys(LOOKALIKE_KINDS, True))
    assert not negative.mask.any() and negative.n_instances == 0


def test_tubes_are_more_common_on_positives():
    neg, pos = LOOKALIKE_RATES["chest_drain"]
    assert 0.05 <= neg <= 0.10 and 0.30 <= pos <= 0.40


def test_high_bit_depth_monochrome1_reads_back_like_the_8_bit_image(tmp_path):
    radiograph = synth_radiograph(np.random.default_rng(2), 256, n_pneumothorax=1)
    for bits in (12, 16):
        path = tmp_path / f"x{bits}.dcm"
        write_synth_dicom(path, radiograph.film, synth_uids(0, "train", bits), patient_number=1,
                          view="AP", pixel_spacing_mm=0.67, sex="M", age=50, bits_stored=bits)
        ds = pydicom.dcmread(path)
        assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == bits
        pixels = read_dicom(path).pixels
        error = np.abs(pixels * 255 - radiograph.image.astype(float))
        assert error.mean() < 0.6 and error.max() <= 1.5  # same polarity: bright bone, dark air
        lungs = pixels[radiograph.lungs].mean()
        assert lungs < pixels[:, 120:136].mean() - 0.1


def test_training_split_holds_high_bit_depth_files(tmp_path):
    generate_dataset(tmp_path, 40, test_n=10, seed=5, size=64, progress=False)
    bits = [pydicom.dcmread(p, stop_before_pixels=True).BitsStored
            for p in dicoms(tmp_path / "dicom-images-train")]
    assert 1 <= sum(b > 8 for b in bits) <= 14
    assert all(pydicom.dcmread(p, stop_before_pixels=True).BitsStored == 8
               for p in dicoms(tmp_path / "dicom-images-test"))
    card = (tmp_path / "dataset-card.md").read_text()
    assert f"{sum(b > 8 for b in bits)} (" in card


def test_mask_areas_follow_the_real_label_file():
    """60 positives at 256 px, areas scaled to 1024 px: each quantile within a factor 1.6."""
    size = 256
    areas = []
    for index in range(60):
        radiograph = synth_radiograph(np.random.default_rng([41, index]), size,
                                      n_pneumothorax=1 + (index % 5 == 0))
        if radiograph.n_instances:
            areas.append(radiograph.mask.sum() * (1024 / size) ** 2)
    synthetic = np.percentile(areas, [5, 25, 50, 75, 95])
    real = np.array(REAL_STATS["image_area_quantiles_px"])
    ratio = synthetic / real
    assert (ratio > 1 / 1.6).all() and (ratio < 1.6).all(), ratio


def test_dataset_card_reports_what_was_written(dataset):
    out, summary = dataset
    card = (out / "dataset-card.md").read_text()
    assert "seed 3" in card and "pneumoseg synth OUT --n 12 --test-n 4 --seed 3 --size 128" in card
    for q in ("| 5 % |", "| 25 % |", "| 50 % |", "| 75 % |", "| 95 % |"):
        assert q in card
    assert str(REAL_STATS["image_area_quantiles_px"][2]) in card
    assert f"| train | {N_TRAIN} | {summary.n_positive_train} |" in card
    # look-alike counts as written: recount from the radiographs' own record
    rows = {line.split(" | ")[0][2:]: line for line in card.splitlines()
            if line.startswith("| ") and line.split(" | ")[0][2:] in LOOKALIKE_KINDS}
    assert set(rows) == set(LOOKALIKE_KINDS)
    # Replay the films (same seed, same streams) and count the look-alikes they hold.
    from pneumoseg.data.synth.dataset import SPLIT_STREAMS, _planned_instances

    counts = {kind: [0, 0] for kind in LOOKALIKE_KINDS}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        stream = SPLIT_STREAMS[split]
        plan = _planned_instances(np.random.default_rng([3, stream]), n, 0.23)
        for index in range(n):
            film = synth_radiograph(np.random.default_rng([3, stream, index]), SIZE,
                                    int(plan[index]))
            for kind in film.lookalikes:
                counts[kind][film.n_instances > 0] += 1
    for kind, line in rows.items():
        cells = line.split(" | ")
        assert (int(cells[1]), int(cells[3])) == tuple(counts[kind]), kind


def test_several_processes_write_the_same_bytes_as_one(tmp_path):
    """Images are drawn from their own generators: the process count changes nothing (and the
    spawned workers start cleanly from a process that has torch loaded)."""
    import filecmp

    import torch  # noqa: F401  (as in the demo and the tests: thread pools already started)

    one, two = tmp_path / "one", tmp_path / "two"
    generate_dataset(one, 40, test_n=4, seed=5, size=64, progress=False, workers=1)
    generate_dataset(two, 40, test_n=4, seed=5, size=64, progress=False, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) and len(files) > 44
    match, mismatch, errors = filecmp.cmpfiles(one, two, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
