import json

import numpy as np
import pytest

from pneumoseg.config import PostprocessConfig
from pneumoseg.evaluate.validation import per_image_dice
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.runs.postprocess import load_postprocess
from pneumoseg.infer.tune import TuneGrid, save_postprocess, threshold_dice_grid, triplet_dice_grid, tune_postprocess

S = 32


def constructed_outputs() -> ModelOutputs:
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
    return ModelOutputs([f"img{i}" for i in range(4)], np.zeros((4, S, S), np.uint8), truth,
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
    out = ModelOutputs([str(i) for i in range(n)], np.zeros((n, S, S), np.uint8), truth, prob.astype(np.float16))
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
    result = tune_postprocess(constructed_outputs(), TuneGrid(), rule="threshold")
    path = save_postprocess(result, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["params"]["pixel_threshold"] == 0.6
    loaded = load_postprocess(tmp_path, PostprocessConfig())
    assert loaded.pixel_threshold == 0.6 and loaded.cls_threshold == result.params["cls_threshold"]
    assert not (tmp_path / "postprocess-seg-only.json").exists()


def test_segmentation_alone_is_saved_beside_and_read_by_seg_only(tmp_path):
    gated = tune_postprocess(constructed_outputs(), rule="threshold")
    alone = tune_postprocess(constructed_outputs(), rule="threshold", gated=False)
    assert save_postprocess(gated, tmp_path).name == "postprocess.json"
    assert save_postprocess(alone, tmp_path).name == "postprocess-seg-only.json"
    saved = json.loads((tmp_path / "postprocess-seg-only.json").read_text())
    assert saved["system"] == "segmentation alone" and "cls_threshold" not in saved["params"]
    assert "no gate" in alone.render() and "classifier ≥" in gated.render()
    fallback = PostprocessConfig(pixel_threshold=0.99)
    assert load_postprocess(tmp_path, fallback, gated=False).model_dump() == fallback.model_copy(
        update=alone.params).model_dump()
    assert load_postprocess(tmp_path, fallback).cls_threshold == gated.params["cls_threshold"]
    (tmp_path / "postprocess-seg-only.json").unlink()  # older runs: seg-only reads the two-stage file
    assert load_postprocess(tmp_path, fallback, gated=False).pixel_threshold == gated.params["pixel_threshold"]


def test_tune_command_without_classifier_tunes_segmentation_alone(tiny_runs, tmp_path):
    """`pneumoseg tune --seg RUN` without --cls: no KeyError, prints the result, writes the seg-only file."""
    import shutil

    from typer.testing import CliRunner

    from pneumoseg.cli import app

    seg = tmp_path / "seg"
    shutil.copytree(tiny_runs.seg, seg)
    for name in ("postprocess.json", "postprocess-seg-only.json"):
        (seg / name).unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["tune", "--seg", str(seg), "--images", str(tiny_runs.images),
                                      "--labels", str(tiny_runs.labels)])
    assert result.exit_code == 0, result.output
    assert "segmentation alone" in result.output and "mean Dice" in result.output
    assert f"saved {seg / 'postprocess-seg-only.json'}" in result.output
    saved = json.loads((seg / "postprocess-seg-only.json").read_text())
    assert "cls_threshold" not in saved["params"] and not (seg / "postprocess.json").exists()


def test_an_edited_postprocess_json_is_refused(tmp_path):
    """A hand edit (or damage) of the tuned values is caught by the file's own checksum; values
    are changed through predict's options, which are validated."""
    import json

    from pneumoseg.config import PostprocessConfig
    from pneumoseg.errors import PneumosegError
    from pneumoseg.runs.postprocess import load_postprocess
    from pneumoseg.io import sealed

    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps(sealed({"system": "two-stage", "params": {"cls_threshold": 0.4, "min_area": 100}, "mean_dice": 0.8,
                                          "all_empty_baseline": 0.7, "n_images": 3})))
    assert load_postprocess(tmp_path, PostprocessConfig()).min_area == 100
    edited = json.loads(path.read_text())
    edited["params"]["min_area"] = 0
    path.write_text(json.dumps(edited))
    with pytest.raises(PneumosegError, match="postprocess.json: content_sha256 does not match the contents"):
        load_postprocess(tmp_path, PostprocessConfig())
    del edited["content_sha256"]
    path.write_text(json.dumps(edited))
    with pytest.raises(PneumosegError, match="postprocess.json: no content_sha256"):
        load_postprocess(tmp_path, PostprocessConfig())


def test_a_postprocess_file_that_does_not_fit_its_schema_is_refused(tmp_path):
    import json

    from pneumoseg.config import PostprocessConfig
    from pneumoseg.errors import PneumosegError
    from pneumoseg.io import sealed

    (tmp_path / "postprocess.json").write_text(json.dumps(sealed({"system": "two-stage", "params": {},
                                                                  "mean_dice": "high"})))
    with pytest.raises(PneumosegError, match="postprocess.json: mean_dice: Input should be a valid number"):
        load_postprocess(tmp_path, PostprocessConfig())
