import json

import numpy as np
import pytest

from pneumoseg.config import PostprocessConfig
from pneumoseg.evaluate.validation import ValidationOutputs, per_image_dice, threshold_dice_grid, triplet_dice_grid
from pneumoseg.infer.tune import TuneGrid, save_postprocess, tune_postprocess

S = 32


def constructed_outputs() -> ValidationOutputs:
    """Four images whose best post-processing is known by construction."""
    truth = np.zeros((4, S, S), bool)
    prob = np.zeros((4, S, S), np.float32)
    truth[0, :8, :8] = True
    prob[0, :8, :8] = 0.8
    prob[0, 20:24, 20:24] = 0.55  # noise the pixel threshold 0.6 removes
    prob[1, 10:18, 10:18] = 0.9  # false positive on an empty image; only the gate removes it
    truth[3, 16:24, 16:24] = True
    prob[3, 16:24, 16:24] = 0.65  # weak true positive: needs a pixel threshold below 0.65
    cls = np.array([0.9, 0.3, 0.1, 0.7], np.float32)
    return ValidationOutputs([f"img{i}" for i in range(4)], np.zeros((4, S, S), np.uint8), truth,
                             prob.astype(np.float16), cls)


def test_tune_finds_the_known_best_setting():
    result = tune_postprocess(constructed_outputs(), rule="threshold")
    assert result.mean_dice == pytest.approx(1.0)
    assert result.params["rule"] == "threshold"
    assert result.params["pixel_threshold"] == 0.6
    assert 0.3 < result.params["cls_threshold"] <= 0.7
    assert result.all_empty == pytest.approx(0.5)


def test_segmentation_alone_cannot_remove_the_false_positive():
    result = tune_postprocess(constructed_outputs(), rule="threshold", gated=False)
    assert result.mean_dice == pytest.approx(0.75)
    assert "cls_threshold" not in result.params


def test_chosen_params_reproduce_the_reported_dice():
    out = constructed_outputs()
    result = tune_postprocess(out, rule="best")
    post = PostprocessConfig(**result.params)
    assert per_image_dice(out, post).mean() == pytest.approx(result.mean_dice)


def test_grid_matches_direct_postprocessing_on_random_maps():
    rng = np.random.default_rng(3)
    n = 6
    prob = rng.random((n, S, S)).astype(np.float32) ** 3
    truth = rng.random((n, S, S)) > 0.8
    truth[0] = False
    out = ValidationOutputs([str(i) for i in range(n)], np.zeros((n, S, S), np.uint8), truth, prob.astype(np.float16))
    thresholds, areas = [0.3, 0.5], [0, 2000, 20000]
    grid = threshold_dice_grid(out, thresholds, areas)
    for p, t in enumerate(thresholds):
        for m, a in enumerate(areas):
            direct = per_image_dice(out, PostprocessConfig(pixel_threshold=t, min_area=a), gated=False)
            np.testing.assert_allclose(grid[:, p, m], direct, rtol=1e-6)
    tops, bottoms = [0.5, 0.9], [0.2, 0.6]
    tgrid = triplet_dice_grid(out, tops, areas, bottoms)
    for ti, top in enumerate(tops):
        for m, a in enumerate(areas):
            for b, bottom in enumerate(bottoms):
                post = PostprocessConfig(rule="triplet", top=top, min_area=a, bottom=bottom)
                np.testing.assert_allclose(tgrid[:, ti, m, b], per_image_dice(out, post, gated=False), rtol=1e-6)


def test_postprocess_json_is_written_and_loaded(tmp_path):
    from pneumoseg.infer.pipeline import load_postprocess

    result = tune_postprocess(constructed_outputs(), TuneGrid(), rule="threshold")
    path = save_postprocess(result, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["params"]["pixel_threshold"] == 0.6
    loaded = load_postprocess(tmp_path, PostprocessConfig())
    assert loaded.pixel_threshold == 0.6 and loaded.cls_threshold == result.params["cls_threshold"]
