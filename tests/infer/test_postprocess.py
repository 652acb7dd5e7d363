import numpy as np
import pytest

from pneumoseg.config import PostprocessConfig
from pneumoseg.infer.postprocess import (
    postprocess,
    remove_small_components,
    resize_prob,
    scaled_min_area,
    threshold_rule,
    triplet_rule,
)


def test_min_area_scales_with_pixel_count():
    assert scaled_min_area(3500, (1024, 1024)) == 3500
    assert scaled_min_area(3500, (512, 512)) == 875  # 3500 / 4
    assert scaled_min_area(3500, (256, 256)) == 219  # 3500 / 16 = 218.75
    assert scaled_min_area(3500, (2048, 2048)) == 14000


def test_remove_small_components_keeps_only_large_blobs():
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[10:15, 10:15] = True  # 25 px
    mask[0, 19] = True  # 1 px
    kept = remove_small_components(mask, 5)
    expected = np.zeros_like(mask)
    expected[10:15, 10:15] = True
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(remove_small_components(mask, 4), mask & ~(np.arange(400).reshape(20, 20) == 19))


def test_diagonal_pixels_are_one_component():
    mask = np.eye(6, dtype=bool)  # 6 pixels touching corner to corner
    np.testing.assert_array_equal(remove_small_components(mask, 6), mask)


def test_threshold_rule_removes_components_by_scaled_area():
    prob = np.zeros((256, 256), np.float32)
    prob[10:30, 10:30] = 0.9  # 400 px at 256 == 6400 px at 1024: kept with min_area 3500
    prob[100:110, 100:110] = 0.9  # 100 px at 256 == 1600 px at 1024: removed
    prob[200:210, 200:230] = 0.4  # below the pixel threshold
    mask = threshold_rule(prob, 0.5, 3500)
    assert mask.sum() == 400
    assert mask[10:30, 10:30].all()


def test_triplet_rule_empty_unless_enough_confident_pixels():
    prob = np.full((64, 64), 0.35, np.float32)
    prob[:4, :4] = 0.9  # 16 confident pixels
    # 16 px at 64x64 = 4096 px at 1024x1024
    assert not triplet_rule(prob, top=0.75, min_area=5000, bottom=0.3).any()
    mask = triplet_rule(prob, top=0.75, min_area=4000, bottom=0.3)
    assert mask.all()  # every pixel exceeds bottom=0.3
    assert triplet_rule(prob, top=0.75, min_area=4000, bottom=0.5).sum() == 16


def test_postprocess_dispatches_on_rule():
    prob = np.zeros((32, 32), np.float32)
    prob[:8, :8] = 0.8
    assert postprocess(prob, PostprocessConfig(rule="threshold", pixel_threshold=0.5, min_area=0)).sum() == 64
    assert not postprocess(prob, PostprocessConfig(rule="triplet", top=0.9, min_area=10, bottom=0.1)).any()


@pytest.mark.parametrize("shape", [(1024, 1024), (300, 200)])
def test_resize_prob_to_shape(shape):
    prob = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = resize_prob(prob, shape)
    assert out.shape == shape
    assert 0 <= out.min() and out.max() <= 1
