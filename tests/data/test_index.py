"""find_dicoms / index_images / check_data on the real sample and on a deliberately messy copy."""

import shutil
from pathlib import Path

import pytest

from pneumoseg.data.index import check_data, find_dicoms, index_images
from pneumoseg.errors import LabelFileError, PneumosegError

POSITIVE_A = "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709"
POSITIVE_D = "1.2.276.0.7230010.3.1.4.8323329.1314.1517875167.222290"
NEGATIVE_B = "1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027"
UNLABELLED_C = "1.2.276.0.7230010.3.1.4.8323329.10000.1517875220.938530"
MISSING_IDS = [f"1.2.3.{n}" for n in range(12)]


def sample_rles(sample_dir: Path) -> dict[str, str]:
    """ImageId -> EncodedPixels from the stage-1-style sample label file."""
    lines = (sample_dir / "sample_train-rle_stage1style.csv").read_text().splitlines()[1:]
    return dict(line.split(", ") for line in lines)


def copy_dicom(sample_dir: Path, image_id: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(sample_dir / "dicom" / f"{image_id}.dcm", target))


@pytest.fixture
def messy(sample_dir, tmp_path) -> tuple[Path, Path]:
    """Nested study/series folders with every kind of problem, and a stage-1-style label file."""
    images = tmp_path / "images"
    copy_dicom(sample_dir, POSITIVE_A, images / "study1" / "series1" / f"{POSITIVE_A}.dcm")
    copy_dicom(sample_dir, NEGATIVE_B, images / "study1" / "series2" / f"{NEGATIVE_B}.DCM")
    copy_dicom(sample_dir, UNLABELLED_C, images / "study2" / "series1" / f"{UNLABELLED_C}.dcm")
    copy_dicom(sample_dir, POSITIVE_D, images / "study2" / "series1" / f"{POSITIVE_D}.dcm")
    copy_dicom(sample_dir, POSITIVE_D, images / "study3" / "series9" / f"{POSITIVE_D}.dcm")
    (images / "study3" / "junk.dcm").write_text("not an image\n")
    (images / "study3" / "readme.txt").write_text("ignored\n")
    rles = sample_rles(sample_dir)
    rows = [(POSITIVE_A, rles[POSITIVE_A]), (NEGATIVE_B, "-1"), (POSITIVE_D, rles[POSITIVE_D])]
    rows += [(image_id, "-1") for image_id in MISSING_IDS]
    rows += [(POSITIVE_A, rles[POSITIVE_A])]  # a repeated row, on line 17
    labels = tmp_path / "labels.csv"
    labels.write_text("ImageId, EncodedPixels\n" + "".join(f"{i}, {rle}\n" for i, rle in rows))
    return images, labels


def test_real_sample_is_ok(sample_dir):
    labels = sample_dir / "sample_train-rle_stage1style.csv"
    check = check_data(sample_dir / "dicom", labels, progress=False)
    assert (check.n_images, check.n_labelled, check.n_positive, check.n_instances) == (11, 11, 5, 5)
    assert check.ok, check.render()
    report = check.render()
    assert report.splitlines()[-1] == "OK"
    assert "Unreadable" not in report and "Labels without image" not in report


def test_published_sample_labels_lack_the_eleventh_image(sample_dir):
    """train-rle-sample.csv is the 10-row file published with the 10 sample images; the
    11th image (from torchxrayvision) has its row only in the stage-1-style copy."""
    labels = sample_dir / "train-rle-sample.csv"
    check = check_data(sample_dir / "dicom", labels, decode=False, progress=False)
    assert (check.n_images, check.n_labelled, check.n_positive, check.n_instances) == (11, 10, 5, 5)
    assert check.images_without_label == ["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"]
    assert not check.ok


def test_messy_folder_counts_and_renders_every_problem(messy):
    images, labels = messy
    check = check_data(images, labels, progress=False)
    assert not check.ok
    assert (check.n_images, check.n_labelled, check.n_positive, check.n_instances) == (5, 3, 2, 2)
    assert check.labels_without_image == sorted(MISSING_IDS)
    assert check.images_without_label == sorted([UNLABELLED_C, "junk"])
    assert check.duplicate_images == {
        POSITIVE_D: [
            images / "study2" / "series1" / f"{POSITIVE_D}.dcm",
            images / "study3" / "series9" / f"{POSITIVE_D}.dcm",
        ]
    }
    junk = images / "study3" / "junk.dcm"
    assert list(check.unreadable) == [junk]
    assert check.unreadable[junk].startswith("not a DICOM file")
    assert check.duplicate_label_rows == [17]

    report = check.render()
    assert f"{junk}: not a DICOM file" in report
    assert "Unreadable files (1):" in report
    assert "Images found more than once (1):" in report and f"{POSITIVE_D}: {images}" in report
    assert "Labels without image (12):" in report and "... and 2 more" in report
    assert MISSING_IDS[0] in report and sorted(MISSING_IDS)[-1] not in report  # only 10 shown
    assert f"Images without label (2):\n  {UNLABELLED_C}\n  junk" in report
    assert "Warning: redundant label rows (1):\n  line 17" in report
    assert report.splitlines()[-1].startswith("NOT OK")


def test_counts_table_lines_up(messy):
    report = check_data(*messy, progress=False).render()
    table = report.split("\n\n")[1].splitlines()
    assert len(table) == 10 and table[0].startswith("  images ") and table[0].endswith(" 5")
    assert len({len(line) for line in table}) == 1


@pytest.mark.filterwarnings("ignore:End of file reached")  # pydicom's note on the cut
def test_headers_only_misses_broken_pixels_that_decoding_finds(sample_dir, tmp_path):
    copy = copy_dicom(sample_dir, NEGATIVE_B, tmp_path / f"{NEGATIVE_B}.dcm")
    copy.write_bytes(copy.read_bytes()[:-5000])  # cut inside the JPEG data
    assert check_data(tmp_path, decode=False, progress=False).ok
    check = check_data(tmp_path, progress=False)
    assert not check.ok and "truncated" in check.unreadable[copy]


def test_without_labels_unlabelled_images_are_fine(sample_dir):
    check = check_data(sample_dir / "dicom", progress=False)
    assert check.ok and check.labels is None
    assert (check.n_images, check.n_labelled, check.images_without_label) == (11, 0, [])
    assert "labels: none given" in check.render()


def test_misnamed_file_is_a_warning(sample_dir, tmp_path):
    copy_dicom(sample_dir, NEGATIVE_B, tmp_path / "chest.dcm")
    check = check_data(tmp_path, progress=False)
    assert check.ok and check.misnamed == {tmp_path / "chest.dcm": NEGATIVE_B}
    assert f"{tmp_path / 'chest.dcm'}: {NEGATIVE_B}" in check.render()


def test_empty_folder_is_reported_clearly(tmp_path):
    check = check_data(tmp_path, progress=False)
    assert not check.ok and check.n_images == 0
    assert f"No .dcm files found under {tmp_path}." in check.render()


def test_malformed_label_file_raises(sample_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("ImageId, EncodedPixels\nabc, 5 x\n")
    with pytest.raises(LabelFileError, match="labels.csv"):
        check_data(sample_dir / "dicom", labels, decode=False, progress=False)


def test_find_dicoms_is_recursive_case_insensitive_and_sorted(messy):
    images, _ = messy
    found = find_dicoms(images)
    assert [path.relative_to(images).as_posix() for path in found] == [
        f"study1/series1/{POSITIVE_A}.dcm",
        f"study1/series2/{NEGATIVE_B}.DCM",
        f"study2/series1/{UNLABELLED_C}.dcm",
        f"study2/series1/{POSITIVE_D}.dcm",
        "study3/junk.dcm",
        f"study3/series9/{POSITIVE_D}.dcm",
    ]
    assert find_dicoms(found[0]) == [found[0]]  # a single file


def test_find_dicoms_missing_folder(tmp_path):
    with pytest.raises(PneumosegError, match="nowhere: no such file or folder"):
        find_dicoms(tmp_path / "nowhere")


def test_index_images_maps_ids_and_lists_duplicates(messy):
    images, _ = messy
    by_id, duplicates = index_images(images)
    assert set(by_id) == {POSITIVE_A, NEGATIVE_B, UNLABELLED_C, POSITIVE_D, "junk"}
    assert by_id[NEGATIVE_B].name == f"{NEGATIVE_B}.DCM"
    assert list(duplicates) == [POSITIVE_D] and by_id[POSITIVE_D] == duplicates[POSITIVE_D][0]
