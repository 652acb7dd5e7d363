"""Mask and classifier metrics against hand-counted cases."""

import math

import numpy as np
import pytest

from pneumoseg.metrics import (
    SegmentationMetric,
    classification_metrics,
    dice_score,
    dice_scores,
    fbeta_score,
    fbeta_scores,
    iou_score,
    iou_scores,
    pr_curve_points,
    roc_curve_points,
)


def masks_from(*pixels: tuple[int, int], shape=(4, 4)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for pixel in pixels:
        mask[pixel] = True
    return mask


# |P| = 3, |T| = 3, |P∩T| = 2
PRED_3 = masks_from((0, 0), (0, 1), (1, 1))
TRUTH_3 = masks_from((0, 0), (0, 1), (2, 2))
# |P| = 4, |T| = 3, |P∩T| = 2: precision 1/2, recall 2/3
PRED_4 = masks_from((0, 0), (0, 1), (1, 1), (3, 3))
EMPTY = np.zeros((4, 4), dtype=bool)


def test_hand_counted_equal_sizes():
    assert dice_score(PRED_3, TRUTH_3) == pytest.approx(2 * 2 / (3 + 3))
    assert iou_score(PRED_3, TRUTH_3) == pytest.approx(2 / 4)
    assert fbeta_score(PRED_3, TRUTH_3, beta=2) == pytest.approx(2 / 3)  # P = R = 2/3


def test_hand_counted_unequal_sizes():
    precision, recall = 1 / 2, 2 / 3
    assert dice_score(PRED_4, TRUTH_3) == pytest.approx(4 / 7)
    assert iou_score(PRED_4, TRUTH_3) == pytest.approx(2 / 5)
    assert fbeta_score(PRED_4, TRUTH_3, beta=2) == pytest.approx(5 * precision * recall / (4 * precision + recall))
    assert fbeta_score(PRED_4, TRUTH_3, beta=2) == pytest.approx(0.625)
    assert fbeta_score(PRED_4, TRUTH_3, beta=0.5) == pytest.approx(1.25 * 2 / (4 + 0.25 * 3))


def test_f1_equals_dice_on_random_masks():
    rng = np.random.default_rng(7)
    pred, truth = rng.random((2, 20, 16, 16)) < 0.3
    np.testing.assert_allclose(fbeta_scores(pred, truth, beta=1), dice_scores(pred, truth))


@pytest.mark.parametrize("score", [dice_score, iou_score, lambda p, t: fbeta_score(p, t, beta=2)])
def test_siim_empty_conventions(score):
    assert score(EMPTY, EMPTY) == 1.0
    assert score(PRED_3, EMPTY) == 0.0
    assert score(EMPTY, TRUTH_3) == 0.0
    assert score(TRUTH_3, TRUTH_3) == 1.0


def test_batched_scores_match_single_scores():
    pred = np.stack([PRED_3, PRED_4, EMPTY, EMPTY])
    truth = np.stack([TRUTH_3, TRUTH_3, EMPTY, TRUTH_3])
    np.testing.assert_allclose(dice_scores(pred, truth), [2 / 3, 4 / 7, 1, 0])
    np.testing.assert_allclose(iou_scores(pred, truth), [1 / 2, 2 / 5, 1, 0])
    np.testing.assert_allclose(fbeta_scores(pred, truth, 2), [2 / 3, 0.625, 1, 0])
    # a channel axis, as a model's (N, 1, H, W) output, gives the same per-image scores
    np.testing.assert_allclose(dice_scores(pred[:, None], truth[:, None]), dice_scores(pred, truth))


def test_integer_masks_are_accepted():
    assert dice_score(PRED_4.astype(np.uint8) * 255, TRUTH_3.astype(np.int64)) == pytest.approx(4 / 7)


def test_float_masks_are_refused():
    with pytest.raises(TypeError, match="bool or integer, got float32; threshold probabilities first"):
        dice_score(PRED_3.astype(np.float32), TRUTH_3)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"prediction shape \(1, 4, 4\) differs from truth shape \(1, 4, 5\)"):
        dice_score(PRED_3, np.zeros((4, 5), dtype=bool))


def test_batch_without_image_axes_is_refused():
    with pytest.raises(ValueError, match="shaped \\(N, ...\\)"):
        dice_scores(np.zeros(4, dtype=bool), np.zeros(4, dtype=bool))


@pytest.mark.parametrize("beta", [0, -1, float("nan")])
def test_bad_beta_is_refused(beta: float):
    with pytest.raises(ValueError, match="beta must be positive"):
        fbeta_score(PRED_3, TRUTH_3, beta)


def test_segmentation_metric_accumulates_means_over_images():
    metric = SegmentationMetric()
    metric.update(np.stack([PRED_3, PRED_4]), np.stack([TRUTH_3, TRUTH_3]))
    metric.update(EMPTY[None], EMPTY[None])
    result = metric.aggregate()
    assert result["n_images"] == 3
    assert result["mean_dice"] == pytest.approx((2 / 3 + 4 / 7 + 1) / 3)
    assert result["f1"] == pytest.approx(result["mean_dice"])
    assert result["iou"] == pytest.approx((1 / 2 + 2 / 5 + 1) / 3)
    assert result["f2"] == pytest.approx((2 / 3 + 0.625 + 1) / 3)


def test_segmentation_metric_reset():
    metric = SegmentationMetric()
    metric.update(PRED_3[None], EMPTY[None])
    metric.reset()
    with pytest.raises(ValueError, match="no images to aggregate"):
        metric.aggregate()
    metric.update(EMPTY[None], EMPTY[None])
    assert metric.aggregate() == {"mean_dice": 1.0, "iou": 1.0, "f1": 1.0, "f2": 1.0, "n_images": 1}


# 4 positives, 6 negatives; at 0.5: tp 3, fn 1 (0.2), fp 1 (0.6), tn 5.
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
Y_SCORE = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.4, 0.3, 0.1, 0.05, 0.0])


def test_classification_metrics_hand_computed():
    result = classification_metrics(Y_TRUE, Y_SCORE)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (3, 1, 5, 1)
    # MCC = (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (15 − 1) / sqrt(4·4·6·6)
    assert result["mcc"] == pytest.approx(14 / 24)
    assert result["precision"] == pytest.approx(3 / 4)
    assert result["recall"] == pytest.approx(3 / 4)
    assert result["accuracy"] == pytest.approx(8 / 10)
    # 3 positives outrank all 6 negatives, the 4th outranks 3: 21 of 24 pairs
    assert result["roc_auc"] == pytest.approx(21 / 24)


def test_score_equal_to_threshold_is_positive():
    result = classification_metrics([1, 0], [0.5, 0.49])
    assert (result["tp"], result["tn"]) == (1, 1)
    assert classification_metrics([True, False], [0.7, 0.7], threshold=0.7)["fp"] == 1


@pytest.mark.filterwarnings("error")
def test_only_negatives_and_nothing_predicted():
    result = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(result["roc_auc"])
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["mcc"] == 0.0
    assert result["accuracy"] == 1.0 and result["tn"] == 3


@pytest.mark.filterwarnings("error")
def test_only_positives_all_predicted():
    result = classification_metrics([1, 1], [0.9, 0.8])
    assert math.isnan(result["roc_auc"])
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and result["mcc"] == 0.0


@pytest.mark.filterwarnings("error")
def test_nothing_predicted_positive_gives_zero_precision():
    result = classification_metrics([1, 0], [0.1, 0.2])
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["mcc"] == 0.0
    assert result["roc_auc"] == 0.0


@pytest.mark.parametrize(
    ("y_true", "y_score", "message"),
    [
        ([1, 0], [0.5], "1-D of equal length"),
        ([[1, 0]], [[0.5, 0.2]], "1-D of equal length"),
        ([], [], "no samples"),
        ([1, 2], [0.5, 0.2], "only 0/1 or bool"),
        ([1, 0], [0.5, float("nan")], "NaN or infinite"),
    ],
)
def test_bad_classifier_inputs(y_true, y_score, message: str):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_score)


def test_roc_curve_points():
    curve = roc_curve_points(Y_TRUE, Y_SCORE)
    assert curve.fpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(21 / 24)
    corners = {t: (f, r) for t, f, r in zip(curve.thresholds, curve.fpr, curve.tpr)}
    assert corners[0.7] == (0, 3 / 4)  # all negatives still below
    assert corners[0.2] == (3 / 6, 1)  # the last positive reached


def test_pr_curve_points():
    curve = pr_curve_points(Y_TRUE, Y_SCORE)
    assert len(curve.precision) == len(curve.recall) == len(curve.thresholds) + 1
    at = np.flatnonzero(curve.thresholds == 0.6)[0]
    assert (curve.precision[at], curve.recall[at]) == (3 / 4, 3 / 4)
    assert curve.precision[-1] == 1 and curve.recall[-1] == 0  # sklearn's end point


@pytest.mark.parametrize("curve", [roc_curve_points, pr_curve_points])
def test_curves_need_both_classes(curve):
    with pytest.raises(ValueError, match="needs both positive and negative samples"):
        curve([1, 1], [0.2, 0.3])
