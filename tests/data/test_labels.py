"""Label CSVs: every published variant, multi-instance unions, redundant rows and bad files."""

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from pneumoseg.data.labels import (
    ImageLabel,
    LabelSet,
    label_mask,
    label_pixels,
    read_labels,
    write_label_csv,
)
from pneumoseg.data.rle import rle_decode
from pneumoseg.errors import LabelFileError

ROWS = [  # image B has two instances; A and C are negative
    ("1.2.3.A", "-1"),
    ("1.2.3.B", "1 2 5 3"),
    ("1.2.3.C", "-1"),
    ("1.2.3.B", "20 1"),
]
EXPECTED_RLES = {"1.2.3.A": (), "1.2.3.B": ("1 2 5 3", "20 1"), "1.2.3.C": ()}


def write(tmp_path: Path, text: str, name: str = "labels.csv", *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def csv_text(header: str | None, separator: str = ",", newline: str = "\n") -> str:
    lines = ([header] if header is not None else []) + [f"{i}{separator}{r}" for i, r in ROWS]
    return newline.join(lines) + newline


def rles_of(labels: LabelSet) -> dict[str, tuple[str, ...]]:
    return {image_id: label.rles for image_id, label in labels.images.items()}


@pytest.mark.parametrize(
    ("text", "bom", "first_data_line"),
    [
        (csv_text("ImageId, EncodedPixels", ", "), False, 2),  # stage 1
        (csv_text("ImageId,EncodedPixels"), False, 2),  # stage 2
        (csv_text("ImageId,EncodedPixels"), True, 2),
        (csv_text(None), True, 1),  # the published sample: BOM, no header
        (csv_text(None), False, 1),
        (csv_text("ImageId, EncodedPixels", ", ", "\r\n"), True, 2),
        (csv_text("imageid,encodedpixels", " ,  "), False, 2),
    ],
    ids=["stage1", "stage2", "bom-header", "bom-no-header", "no-header", "crlf", "lowercase-spaced"],
)
def test_every_variant_reads_the_same_images(tmp_path: Path, text: str, bom: bool, first_data_line: int):
    labels = read_labels(write(tmp_path, text, bom=bom))
    assert rles_of(labels) == EXPECTED_RLES
    assert list(labels.images) == ["1.2.3.A", "1.2.3.B", "1.2.3.C"]  # order of first appearance
    assert [label.row for label in labels.images.values()] == [
        first_data_line,
        first_data_line + 1,
        first_data_line + 2,
    ]
    assert labels.duplicate_rows == []


def test_gzip_file_reads_like_plain(tmp_path: Path):
    path = tmp_path / "labels.csv.gz"
    path.write_bytes(gzip.compress(("\ufeff" + csv_text("ImageId, EncodedPixels", ", ")).encode()))
    assert rles_of(read_labels(path)) == EXPECTED_RLES


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path):
    labels = read_labels(write(tmp_path, "\nImageId,EncodedPixels\n\na,-1\n  \nb,0 3\n"))
    assert rles_of(labels) == {"a": (), "b": ("0 3",)}
    assert labels["a"].row == 4 and labels["b"].row == 6


def test_empty_encoded_pixels_means_negative(tmp_path: Path):
    labels = read_labels(write(tmp_path, "a,\nb, \n"))
    assert labels.negative_ids == ["a", "b"]


def test_label_set_conveniences(tmp_path: Path):
    labels = read_labels(write(tmp_path, csv_text("ImageId,EncodedPixels")))
    assert len(labels) == 3
    assert labels.positive_ids == ["1.2.3.B"]
    assert labels.negative_ids == ["1.2.3.A", "1.2.3.C"]
    assert labels.n_instances == 2
    assert "1.2.3.B" in labels and "1.2.3.Z" not in labels
    b = labels["1.2.3.B"]
    assert b == ImageLabel("1.2.3.B", ("1 2 5 3", "20 1"), 3)
    assert b.positive and b.n_instances == 2
    assert not labels["1.2.3.A"].positive and labels["1.2.3.A"].n_instances == 0
    assert labels.path == tmp_path / "labels.csv"


def test_label_mask_is_the_union_of_instances():
    shape = (8, 4)  # column-major index = column * 8 + row
    label = ImageLabel("x", ("0 3", "2 4"), 1)  # pixels 0-2 and 2-5 overlap at pixel 2
    mask = label_mask(label, shape)
    expected = np.zeros(shape, dtype=bool)
    expected[0:6, 0] = True
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask, rle_decode("0 3", shape) | rle_decode("2 4", shape))
    assert label_pixels(label, shape).tolist() == [0, 1, 2, 3, 4, 5]


def test_label_mask_in_standard_format():
    label = ImageLabel("x", ("1 3",), 1)
    assert label_pixels(label, (8, 4), fmt="standard").tolist() == [0, 1, 2]


def test_negative_label_mask_is_empty():
    mask = label_mask(ImageLabel("x", (), 1), (6, 5))
    assert mask.shape == (6, 5) and mask.dtype == bool and not mask.any()
    assert label_pixels(ImageLabel("x", (), 1)).size == 0


def test_redundant_rows_are_reported_by_line_number(tmp_path: Path):
    text = (
        "ImageId, EncodedPixels\n"  # 1
        "a, -1\n"  # 2
        "b, -1\n"  # 3  -1 for an image that has RLE rows below
        "b, 0 3\n"  # 4
        "a, -1\n"  # 5  repeated -1
        "b, 0 3\n"  # 6  identical repeat
        "c, 5 2\n"  # 7
        "c, -1\n"  # 8  -1 after an RLE row
        "b, 10 1\n"  # 9  a second instance: not redundant
    )
    labels = read_labels(write(tmp_path, text))
    assert labels.duplicate_rows == [3, 5, 6, 8]
    assert rles_of(labels) == {"a": (), "b": ("0 3", "10 1"), "c": ("5 2",)}
    assert labels["b"].row == 3


def test_real_sample_files_agree(sample_dir: Path):
    """The published sample (BOM, no header) and its stage-1-style copy, which adds one image."""
    published = read_labels(sample_dir / "train-rle-sample.csv")
    stage1 = read_labels(sample_dir / "sample_train-rle_stage1style.csv")
    assert len(published) == 10 and len(published.positive_ids) == 5
    assert published["1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027"].row == 1
    extra = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
    assert set(stage1.images) - set(published.images) == {extra}
    assert not stage1[extra].positive
    assert rles_of(stage1) == {**rles_of(published), extra: ()}
    assert [label.row for label in stage1.images.values()] == list(range(2, 13))


def test_full_label_file_reads_quickly_with_the_published_counts(sample_dir: Path):
    start = time.perf_counter()
    labels = read_labels(sample_dir / "train-rle-full.csv.gz")
    elapsed = time.perf_counter() - start
    assert len(labels) == 12047
    assert labels.n_instances + len(labels.negative_ids) == 12954  # one row each
    assert len(labels.positive_ids) == 2669
    assert max(label.n_instances for label in labels.images.values()) == 10
    assert labels.duplicate_rows == []
    assert elapsed < 3.0, f"reading took {elapsed:.2f} s"


def test_validation_can_be_skipped(tmp_path: Path):
    labels = read_labels(write(tmp_path, "a,1 2 3\n"), validate=False)
    assert labels["a"].rles == ("1 2 3",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ImageId,EncodedPixels\na,-1\nb,1 2 3\n", r"labels\.csv line 3 \(ImageId b\): odd number of RLE tokens \(3\)"),
        ("a,-1\nb, 1 x\n", r"line 2 \(ImageId b\): non-integer RLE token 'x'"),
        ("a,1048570 10\n", r"line 1 \(ImageId a\): run 1 \(pixels 1048570\.\.1048579, 0-based\) runs past the end"),
        ("a,-1\nb,-1,extra\n", r"labels\.csv line 2: expected 2 columns \(ImageId, EncodedPixels\), got 3"),
        ("a,-1\nb\n", r"line 2: expected 2 columns .* got 1"),
        ("ImageId,EncodedPixels,Extra\na,-1\n", r"line 1: expected 2 columns .* got 3"),
        ("a,-1\n, 0 3\n", r"labels\.csv line 2: missing ImageId"),
        ("", r"labels\.csv: no label rows"),
        ("ImageId, EncodedPixels\n\n", r"labels\.csv: no label rows"),
    ],
    ids=["odd", "non-integer", "past-end", "three-columns", "one-column", "header-columns", "no-id", "empty", "header-only"],
)
def test_malformed_files_raise_label_file_error_naming_file_and_line(tmp_path: Path, text: str, message: str):
    with pytest.raises(LabelFileError, match=message):
        read_labels(write(tmp_path, text))


def test_rle_checked_against_the_given_shape(tmp_path: Path):
    path = write(tmp_path, "a,30 3\n")
    with pytest.raises(LabelFileError, match=r"line 1 \(ImageId a\): .* past the end of the 8x4 mask \(32 pixels\)"):
        read_labels(path, shape=(8, 4))
    assert read_labels(path, shape=(8, 5))["a"].rles == ("30 3",)


def test_standard_format_is_validated_as_such(tmp_path: Path):
    path = write(tmp_path, "a,0 3\n")
    assert read_labels(path)["a"].positive
    with pytest.raises(LabelFileError, match="standard RLE starts are 1-based"):
        read_labels(path, fmt="standard")


def test_missing_file(tmp_path: Path):
    with pytest.raises(LabelFileError, match=r"nope\.csv: label file not found"):
        read_labels(tmp_path / "nope.csv")


def test_directory_instead_of_file(tmp_path: Path):
    with pytest.raises(LabelFileError, match="cannot read"):
        read_labels(tmp_path)


def test_file_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a\xe9,-1\n".encode("latin-1"))
    with pytest.raises(LabelFileError, match=r"latin1\.csv: cannot read as a UTF-8 CSV"):
        read_labels(path)


def test_gz_suffix_on_a_plain_file(tmp_path: Path):
    with pytest.raises(LabelFileError, match=r"labels\.csv\.gz: cannot read"):
        read_labels(write(tmp_path, "a,-1\n", name="labels.csv.gz"))


def test_bad_format_or_shape_is_a_programming_error(tmp_path: Path):
    path = write(tmp_path, "a,-1\n")
    with pytest.raises(ValueError, match="unknown RLE format"):
        read_labels(path, fmt="absolute")
    with pytest.raises(ValueError, match="mask shape"):
        read_labels(path, shape=(0, 0))


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz"])
def test_write_then_read_round_trip(tmp_path: Path, name: str):
    path = tmp_path / name
    write_label_csv(ROWS, path)
    assert rles_of(read_labels(path)) == EXPECTED_RLES
    assert read_labels(path)["1.2.3.A"].row == 2


def test_write_with_spaced_header_and_without_header(tmp_path: Path):
    spaced, bare = tmp_path / "spaced.csv", tmp_path / "bare.csv"
    write_label_csv([("a", "-1"), ("b", "0 3")], spaced, header="ImageId, EncodedPixels")
    write_label_csv([("a", "-1"), ("b", "0 3")], bare, header=None)
    assert spaced.read_text() == "ImageId, EncodedPixels\na,-1\nb,0 3\n"
    assert bare.read_text() == "a,-1\nb,0 3\n"


def test_write_is_atomic_when_rows_fail(tmp_path: Path):
    path = tmp_path / "labels.csv"
    path.write_text("old,-1\n")

    def rows_that_break():
        yield ("a", "-1")
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        write_label_csv(rows_that_break(), path)
    assert path.read_text() == "old,-1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]


@pytest.mark.parametrize("row", [("a", "-1", "x"), ("a",), ("a", 5)])
def test_write_refuses_malformed_rows(tmp_path: Path, row: tuple):
    path = tmp_path / "labels.csv"
    with pytest.raises(ValueError, match=r"\(ImageId, EncodedPixels\) string pairs"):
        write_label_csv([("ok", "-1"), row], path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_valid_mask_of_100k_runs_reads_and_an_oversized_field_names_its_line(tmp_path):
    """A 1024² mask can need far more than csv's default 131,072-character field."""
    from pneumoseg.data.labels import FIELD_LIMIT
    from pneumoseg.data.rle import rle_encode

    flat = np.zeros(1024 * 1024, bool)  # SIIM RLE runs down the columns: build the column-major order
    flat[::8][:102_400] = True  # 102,400 one-pixel runs
    mask = flat.reshape(1024, 1024).T
    rle = rle_encode(mask, fmt="relative")
    assert len(rle) > 131_072
    path = tmp_path / "big.csv"
    path.write_text(f"ImageId,EncodedPixels\n1.2.3,-1\n1.2.4,{rle}\n")
    labels = read_labels(path)
    assert labels.images["1.2.4"].rles == (rle,)
    huge = tmp_path / "huge.csv"
    huge.write_text(f"ImageId,EncodedPixels\n1.2.3,-1\n1.2.4,\"{'1 ' * (FIELD_LIMIT // 2 + 1)}\"\n")
    with pytest.raises(LabelFileError, match=r"huge.csv line 3: cannot read") as info:
        read_labels(huge)
    assert "\n" not in str(info.value)


def test_images_on_several_rows_are_recorded_with_their_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("ImageId,EncodedPixels\n1.2.3,1 2\n1.2.4,-1\n1.2.3,10 2\n")
    assert read_labels(path).multi_row == {"1.2.3": [2, 4]}
