"""Submission scoring: hand-made cases, missing and extra images, and the full real file."""

import csv
import gzip
import time
from pathlib import Path

import pytest

from pneumoseg.evaluate.scoring import Evaluation, evaluate_submission, format_summary
from pneumoseg.errors import LabelFileError

SHAPE = (4, 4)  # 16 pixels, column-major


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def hand_made(tmp_path: Path) -> Evaluation:
    truth = write(tmp_path / "truth.csv", "ImageId, EncodedPixels\nA, 0 4\nB, -1\nC, 5 2\n")
    # A: pixels 2-5 against 0-3, overlap 2: Dice 2·2/(4+4) = 0.5; B: both empty, 1; C: missed, 0
    pred = write(tmp_path / "pred.csv", "ImageId,EncodedPixels\nA,2 4\nB,-1\nC,-1\nD,0 1\n")
    return evaluate_submission(pred, truth, shape=SHAPE)


def test_hand_made_per_image(hand_made: Evaluation):
    table = hand_made.per_image
    assert list(table.columns) == ["image_id", "dice", "truth_positive", "pred_positive", "truth_px", "pred_px", "missing"]
    assert table["image_id"].tolist() == ["A", "B", "C"]
    assert table["dice"].tolist() == [0.5, 1.0, 0.0]
    assert table["truth_px"].tolist() == [4, 0, 2]
    assert table["pred_px"].tolist() == [4, 0, 0]
    assert table["truth_positive"].tolist() == [True, False, True]
    assert table["pred_positive"].tolist() == [True, False, False]
    assert not table["missing"].any()
    assert hand_made.n_extra == 1  # D


def test_hand_made_summary(hand_made: Evaluation):
    summary = hand_made.summary()
    assert summary["mean_dice"] == pytest.approx(1.5 / 3)
    assert summary["n_images"] == 3 and summary["n_missing"] == 0 and summary["n_extra"] == 1
    assert summary["n_truth_positive"] == 2 and summary["n_pred_positive"] == 1
    assert summary["mean_dice_positive"] == pytest.approx(0.25)
    assert summary["mean_dice_negative"] == 1.0
    assert summary["all_empty_baseline"] == pytest.approx(1 / 3)
    # which images have pneumothorax: tp 1 (A), fn 1 (C), tn 1 (B), fp 0
    assert summary["detection_precision"] == 1.0
    assert summary["detection_recall"] == 0.5
    assert summary["detection_mcc"] == pytest.approx(1 / 2)  # (1·1 − 0·1) / sqrt(1·2·1·2)
    assert summary["detection_accuracy"] == pytest.approx(2 / 3)


def test_missing_images_count_as_empty_predictions(tmp_path: Path):
    truth = write(tmp_path / "truth.csv", "A,0 4\nB,-1\nC,3 1\n")
    pred = write(tmp_path / "pred.csv", "A,0 4\n")
    result = evaluate_submission(pred, truth, shape=SHAPE)
    assert result.per_image["missing"].tolist() == [False, True, True]
    assert result.per_image["dice"].tolist() == [1.0, 1.0, 0.0]
    assert result.summary()["n_missing"] == 2
    assert result.summary()["mean_dice"] == pytest.approx(2 / 3)


def test_instances_are_scored_as_their_union(tmp_path: Path):
    truth = write(tmp_path / "truth.csv", "A,0 3\nA,2 4\n")  # pixels 0-5, overlapping at 2
    union = write(tmp_path / "union.csv", "A,0 6\n")
    half = write(tmp_path / "half.csv", "A,0 3\n")
    assert evaluate_submission(union, truth, shape=SHAPE).per_image["dice"].tolist() == [1.0]
    result = evaluate_submission(half, truth, shape=SHAPE)
    assert result.per_image["truth_px"].tolist() == [6]
    assert result.per_image["dice"].tolist() == [pytest.approx(2 * 3 / (3 + 6))]


def test_different_csv_variants_compare_equal(sample_dir: Path):
    result = evaluate_submission(sample_dir / "train-rle-sample.csv", sample_dir / "sample_train-rle_stage1style.csv")
    summary = result.summary()
    assert summary["mean_dice"] == 1.0 and summary["n_images"] == 11
    assert summary["n_missing"] == 1  # the stage-1-style copy has one more (negative) image
    assert summary["n_truth_positive"] == 5


def test_standard_format_submission(tmp_path: Path):
    truth = write(tmp_path / "truth.csv", "A,1 4\nB,-1\n")
    pred = write(tmp_path / "pred.csv", "A,3 4\nB,-1\n")
    result = evaluate_submission(pred, truth, shape=SHAPE, fmt="standard")
    assert result.per_image["dice"].tolist() == [0.5, 1.0]


def test_malformed_submission_names_the_file_and_line(tmp_path: Path):
    truth = write(tmp_path / "truth.csv", "A,0 4\n")
    pred = write(tmp_path / "pred.csv", "ImageId,EncodedPixels\nA,0 4 1\n")
    with pytest.raises(LabelFileError, match=r"pred\.csv line 2 \(ImageId A\): odd number of RLE tokens"):
        evaluate_submission(pred, truth, shape=SHAPE)


def test_rle_past_the_image_for_the_given_shape(tmp_path: Path):
    truth = write(tmp_path / "truth.csv", "A,10 7\n")
    with pytest.raises(LabelFileError, match=r"truth\.csv line 1 .* past the end of the 4x4 mask"):
        evaluate_submission(truth, truth, shape=SHAPE)


def test_format_summary_aligns_names_and_formats_values():
    text = format_summary({"mean_dice": 0.83469, "n_images": 12047, "mean_dice_positive": float("nan")})
    assert text.splitlines() == [
        "mean_dice           0.8347",
        "n_images            12047",
        "mean_dice_positive  n/a",
    ]


@pytest.fixture(scope="module")
def full_rows(sample_dir: Path) -> list[tuple[str, str]]:
    with gzip.open(sample_dir / "train-rle-full.csv.gz", "rt", newline="") as stream:
        return [(image_id, rle.strip()) for image_id, rle in list(csv.reader(stream))[1:]]


def test_full_file_scores_one_against_itself_quickly(sample_dir: Path):
    full = sample_dir / "train-rle-full.csv.gz"
    start = time.perf_counter()
    summary = evaluate_submission(full, full).summary()
    elapsed = time.perf_counter() - start
    assert summary["mean_dice"] == 1.0
    assert summary["n_images"] == 12047 and summary["n_truth_positive"] == 2669
    assert summary["all_empty_baseline"] == pytest.approx(9378 / 12047)
    assert summary["detection_mcc"] == 1.0
    assert elapsed < 20, f"evaluating the full file took {elapsed:.1f} s"


def test_full_file_against_a_perturbed_copy(
    tmp_path: Path, sample_dir: Path, full_rows: list[tuple[str, str]]
):
    """Blank 50 positive images, paint 50 negative ones, drop 30 negatives, add 5 extras."""
    positives = list(dict.fromkeys(i for i, rle in full_rows if rle != "-1"))
    negatives = list(dict.fromkeys(i for i, rle in full_rows if rle == "-1"))
    blanked, painted, dropped = set(positives[:50]), set(negatives[:50]), set(negatives[50:80])
    lines = ["ImageId,EncodedPixels"]
    for image_id, rle in full_rows:
        if image_id in blanked:
            rle = "-1"
        elif image_id in painted:
            rle = "1000 10"
        if image_id not in dropped:
            lines.append(f"{image_id},{rle}")
    lines += [f"extra.{k},-1" for k in range(5)]
    pred = write(tmp_path / "perturbed.csv", "\n".join(lines) + "\n")

    start = time.perf_counter()
    summary = evaluate_submission(pred, sample_dir / "train-rle-full.csv.gz").summary()
    elapsed = time.perf_counter() - start
    assert summary["mean_dice"] == pytest.approx((12047 - 100) / 12047)
    assert summary["n_missing"] == 30 and summary["n_extra"] == 5
    assert summary["n_pred_positive"] == 2669 - 50 + 50
    assert summary["mean_dice_positive"] == pytest.approx((2669 - 50) / 2669)
    assert summary["mean_dice_negative"] == pytest.approx((9378 - 50) / 9378)
    assert summary["detection_recall"] == pytest.approx((2669 - 50) / 2669)
    assert summary["detection_precision"] == pytest.approx((2669 - 50) / 2669)
    assert elapsed < 20, f"evaluating the full file took {elapsed:.1f} s"


def test_a_submission_with_an_image_on_two_rows_is_scored_as_their_union_and_warned(tmp_path):
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.write_text("ImageId,EncodedPixels\n1.2.3,1 4\n1.2.4,-1\n")
    pred.write_text("ImageId,EncodedPixels\n1.2.3,1 2\n1.2.4,-1\n1.2.3,3 2\n")  # pixels 1-2, then 3-4
    result = evaluate_submission(pred, truth, shape=(4, 4))
    assert result.per_image.loc[0, "dice"] == pytest.approx(1.0)
    assert result.summary()["n_multi_row"] == 1
    [warning] = result.warnings(pred)
    assert "1 ImageId(s) on more than one row (e.g. 1.2.3 at lines 2, 4)" in warning and "unioned" in warning
    assert evaluate_submission(truth, truth, shape=(4, 4)).warnings(truth) == []
