"""RLE codec: hand-made masks, the DESIGN.md example, random masks and every real label row."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from pneumoseg.data.rle import rle_decode, rle_encode, rle_runs

SMALL = (8, 4)  # 8 rows, 4 columns: column-major index = column * 8 + row


@pytest.fixture(scope="module")
def real_rles(sample_dir: Path) -> list[str]:
    """Every distinct EncodedPixels string of the full label file, read without our reader."""
    with gzip.open(sample_dir / "train-rle-full.csv.gz", "rt", newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    assert len(rows) == 12954
    return sorted({rle.strip() for _, rle in rows})


def hand_made_mask() -> np.ndarray:
    mask = np.zeros(SMALL, dtype=bool)
    mask[0, 1:3] = True  # pixels 8 and 16
    mask[5:8, 0] = True  # pixels 5, 6, 7: the run continues into column 1 at pixel 8
    return mask


def test_hand_made_mask_encodes_column_major_in_both_formats():
    assert rle_encode(hand_made_mask()) == "5 4 7 1"
    assert rle_encode(hand_made_mask(), fmt="standard") == "6 4 17 1"


def test_hand_made_strings_decode_to_the_hand_made_mask():
    np.testing.assert_array_equal(rle_decode("5 4 7 1", SMALL), hand_made_mask())
    np.testing.assert_array_equal(rle_decode("6 4 17 1", SMALL, fmt="standard"), hand_made_mask())


def test_rle_runs_gives_absolute_zero_based_runs():
    for rle, fmt in (("5 4 7 1", "relative"), ("6 4 17 1", "standard")):
        starts, lengths = rle_runs(rle, SMALL, fmt)
        assert starts.tolist() == [5, 16]
        assert lengths.tolist() == [4, 1]


def test_design_example_relative_equals_standard():
    relative = rle_decode("810584 20 1003 22")
    standard = rle_decode("810585 20 811608 22", fmt="standard")
    np.testing.assert_array_equal(relative, standard)
    # 810584 = 791 * 1024 + 600; the second run starts at 810584 + 20 + 1003 = 792 * 1024 + 599
    assert relative[600:620, 791].all() and relative[599:621, 792].all()
    assert relative.sum() == 42
    assert rle_encode(relative, fmt="standard") == "810585 20 811608 22"
    assert rle_encode(standard) == "810584 20 1003 22"


def test_decoded_real_masks_lie_on_dark_air_not_on_their_transpose(sample_dir: Path):
    """Pneumothorax is air (dark on MONOCHROME2): a transposed decode would land elsewhere."""
    pydicom = pytest.importorskip("pydicom")
    labels = (sample_dir / "train-rle-sample.csv").read_text(encoding="utf-8-sig").splitlines()
    positives = [line.split(",") for line in labels if not line.endswith("-1")]
    assert len(positives) == 5
    for image_id, rle in positives:
        pixels = pydicom.dcmread(sample_dir / "dicom" / f"{image_id}.dcm").pixel_array
        mask = rle_decode(rle)
        assert pixels[mask].mean() < pixels[mask.T].mean(), image_id


def test_every_real_row_round_trips_byte_exact_in_relative_format(real_rles: list[str]):
    changed = [rle for rle in real_rles if rle_encode(rle_decode(rle)) != rle]
    assert changed == []


def test_every_real_row_round_trips_through_standard_format(real_rles: list[str]):
    def survives(rle: str) -> bool:
        """Same runs (0-based absolute) read back from the standard string: same mask."""
        standard = rle_encode(rle_decode(rle), fmt="standard")
        runs, standard_runs = rle_runs(rle), rle_runs(standard, fmt="standard")
        return all(map(np.array_equal, runs, standard_runs))

    assert [rle for rle in real_rles if not survives(rle)] == []


@pytest.mark.parametrize("fmt", ["relative", "standard"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (256, 256)])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_random_masks_round_trip(fmt: str, shape: tuple[int, int], density: float):
    rng = np.random.default_rng([len(fmt), *shape, round(density * 100)])
    mask = rng.random(shape) < density
    rle = rle_encode(mask, fmt=fmt)
    np.testing.assert_array_equal(rle_decode(rle, shape, fmt), mask)
    assert rle_encode(rle_decode(rle, shape, fmt), fmt=fmt) == rle


def test_first_and_last_pixels():
    mask = np.zeros((3, 2), dtype=bool)
    mask[0, 0] = mask[2, 1] = True  # column-major indices 0 and 5
    assert rle_encode(mask) == "0 1 4 1"
    assert rle_encode(mask, fmt="standard") == "1 1 6 1"
    assert rle_encode(np.ones((3, 2), dtype=bool)) == "0 6"


@pytest.mark.parametrize("empty", ["-1", " -1", "", "  -1 \n", "\t"])
def test_empty_strings_decode_to_an_empty_mask(empty: str):
    for fmt in ("relative", "standard"):
        mask = rle_decode(empty, SMALL, fmt)
        assert mask.shape == SMALL and mask.dtype == bool and not mask.any()


def test_empty_mask_encodes_to_minus_one():
    assert rle_encode(np.zeros(SMALL, dtype=bool)) == "-1"
    assert rle_encode(np.zeros(SMALL, dtype=bool), fmt="standard") == "-1"


def test_nonzero_integer_pixels_are_foreground():
    mask = hand_made_mask()
    assert rle_encode(mask.astype(np.uint8) * 255) == rle_encode(mask)


def test_decoded_mask_is_c_contiguous_bool():
    mask = rle_decode("5 4 7 1", SMALL)
    assert mask.dtype == bool and mask.flags.c_contiguous


def test_abutting_relative_runs_decode_and_re_encode_merged():
    """A later gap of 0 is legal; the encoder emits maximal runs (the real file has none)."""
    mask = rle_decode("0 2 0 3", SMALL)
    assert np.flatnonzero(mask.T.ravel()).tolist() == [0, 1, 2, 3, 4]
    assert rle_encode(mask) == "0 5"


def test_overlapping_standard_runs_decode_to_their_union():
    mask = rle_decode("1 3 2 3", SMALL, fmt="standard")
    assert np.flatnonzero(mask.T.ravel()).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("rle", "fmt", "message"),
    [
        ("1 2 3", "relative", r"odd number of RLE tokens \(3\)"),
        ("1 a", "relative", r"non-integer RLE token 'a'"),
        ("1.5 2", "standard", r"non-integer RLE token '1.5'"),
        ("1 2,3 4", "relative", r"non-integer RLE token '2,3'"),
        ("1 -2", "relative", r"run 1 has length -2"),
        ("1 2 3 0", "standard", r"run 2 has length 0"),
        ("-3 2", "relative", r"run 1 has negative start -3"),
        ("0 2", "standard", r"run 1 has start 0; standard RLE starts are 1-based"),
        ("1 2 33 1", "relative", r"RLE value 33 is beyond the 8x4 mask \(32 pixels\)"),
        ("1 40", "standard", r"RLE value 40 is beyond the 8x4 mask"),
        ("99999999999999999999 1", "relative", r"too large for a 64-bit integer"),
        ("9223372036854775807 1", "relative", r"RLE value 9223372036854775807 is beyond"),
        ("30 3", "relative", r"run 1 \(pixels 30\.\.32, 0-based\) runs past the end of the 8x4 mask \(32 pixels\)"),
        ("32 1", "relative", r"run 1 \(pixels 32\.\.32, 0-based\) runs past the end"),
        ("0 5 25 3", "relative", r"run 2 \(pixels 30\.\.32, 0-based\) runs past the end"),
        ("32 2", "standard", r"run 1 \(pixels 31\.\.32, 0-based\) runs past the end of the 8x4 mask"),
    ],
)
def test_malformed_rle_raises_value_error_saying_what_is_wrong(rle: str, fmt: str, message: str):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, SMALL, fmt)


def test_a_run_ending_on_the_last_pixel_is_valid():
    assert rle_decode("32 1", SMALL, fmt="standard")[7, 3]
    assert rle_decode("0 2 29 1", SMALL)[7, 3]


def test_non_string_rle_is_refused():
    with pytest.raises(ValueError, match="RLE must be a string, got float"):
        rle_decode(float("nan"))


@pytest.mark.parametrize("fmt", ["Relative", "rel", ""])
def test_unknown_format_is_refused(fmt: str):
    with pytest.raises(ValueError, match=f"unknown RLE format '{fmt}'"):
        rle_decode("-1", fmt=fmt)
    with pytest.raises(ValueError, match="unknown RLE format"):
        rle_encode(hand_made_mask(), fmt=fmt)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()])
def test_encoding_a_mask_that_is_not_2d_is_refused(shape: tuple[int, ...]):
    with pytest.raises(ValueError, match=r"mask must be 2-D"):
        rle_encode(np.zeros(shape, dtype=bool))


@pytest.mark.parametrize("shape", [(0, 4), (4, -1), (1024,)])
def test_decoding_to_a_bad_shape_is_refused(shape: tuple[int, ...]):
    with pytest.raises(ValueError, match="mask shape must be two positive sides"):
        rle_decode("-1", shape)
