"""``pneumoseg report``: tables from hand-made validation outputs (numbers checked by hand),
the files and plots it writes, and one end-to-end run on tiny trained models (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoseg.config import PostprocessConfig
from pneumoseg.evaluate.report import (
    TALK_ABLATION,
    ablation_rows,
    classifier_summary,
    compute_report,
    dice_surface,
    segmenter_summary,
    select_panel_cases,
)
from pneumoseg.evaluate.validation import ValidationOutputs

S = 16
# min_area is given at 1024x1024: 8192 px there = 2 px at 16x16, which removes a 1-px speck only.
POST = PostprocessConfig(cls_threshold=0.5, pixel_threshold=0.5, min_area=8192)
POST_NO_REMOVAL = POST.model_copy(update={"min_area": 0})


def _square(r: int, c: int, h: int = 4, w: int = 4) -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[r:r + h, c:c + w] = True
    return mask


def hand_outputs() -> ValidationOutputs:
    """Four images whose Dice we know.

    0: positive, predicted exactly plus a 1-px speck (Dice 32/33 raw, 1 after removal); cls 0.9
    1: positive (16 px), the prediction covers 8 of them (Dice 16/24); cls 0.8
    2: negative, the segmenter predicts a 16-px blob (Dice 0 alone) but cls 0.2 gates it (1)
    3: negative, nothing predicted (Dice 1); cls 0.6: a classifier false positive
    """
    truth = np.stack([_square(2, 2), _square(8, 8), np.zeros((S, S), bool), np.zeros((S, S), bool)])
    pred = np.stack([_square(2, 2), _square(8, 8, 2, 4), _square(4, 4), np.zeros((S, S), bool)])
    pred[0, 12, 12] = True
    prob = np.where(pred, 0.9, 0.1).astype(np.float16)
    images = (np.arange(4 * S * S) % 251).astype(np.uint8).reshape(4, S, S)
    return ValidationOutputs([f"1.2.3.{i}" for i in range(4)], images, truth, prob,
                             np.array([0.9, 0.8, 0.2, 0.6], np.float32))


def perfect_swa(out: ValidationOutputs) -> ValidationOutputs:
    """Same images; the SWA segmenter gets image 1 right as well (and keeps the speck and blob)."""
    prob = out.seg_prob.copy()
    prob[1] = np.where(out.truth[1], 0.9, 0.1)
    return ValidationOutputs(out.image_ids, out.images, out.truth, prob, out.cls_prob)


def _rows(outputs, post=POST):
    return {r["key"]: r for r in ablation_rows(outputs, post)}


def test_ablation_rows_match_hand_computation():
    out = hand_outputs()
    rows = _rows({"best": out, "swa": perfect_swa(out)})
    assert list(rows) == ["all_empty", "seg_alone", "two_stage", "two_stage_swa", "two_stage_swa_tta"]
    assert rows["all_empty"]["mean_dice"] == pytest.approx(0.5)
    # alone: 1 (speck removed), 16/24, 0 (blob on a negative), 1
    assert rows["seg_alone"]["mean_dice"] == pytest.approx((1 + 16 / 24 + 0 + 1) / 4)
    assert rows["two_stage"]["mean_dice"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4)
    assert rows["two_stage_swa"]["mean_dice"] == pytest.approx(1.0)
    assert rows["two_stage"]["delta_vs_empty"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4 - 0.5)
    assert rows["two_stage_swa_tta"]["mean_dice"] is None and "no-tta" in rows["two_stage_swa_tta"]["note"]
    assert all(r["n_images"] == 4 for r in rows.values())
    assert rows["seg_alone"]["gated"] is False and rows["two_stage"]["gated"] is True
    for key, value in TALK_ABLATION.items():
        assert rows[key]["talk"] == value
    assert rows["all_empty"]["talk"] is None


def test_ablation_rows_use_the_given_postprocessing():
    rows = _rows({"best": hand_outputs()}, POST_NO_REMOVAL)  # the speck now costs image 0
    assert rows["two_stage"]["mean_dice"] == pytest.approx((32 / 33 + 16 / 24 + 1 + 1) / 4)


def test_ablation_rows_without_swa_and_with_tta_on_best():
    out = hand_outputs()
    rows = _rows({"best": out, "best+tta": perfect_swa(out)})
    assert rows["two_stage_swa"]["mean_dice"] is None
    assert "swa.safetensors" in rows["two_stage_swa"]["note"]
    assert rows["two_stage_tta"]["mean_dice"] == pytest.approx(1.0)
    assert rows["two_stage_tta"]["checkpoint"] == "best" and rows["two_stage_tta"]["tta"] is True


def test_ablation_rows_refuse_mismatched_variants():
    out = hand_outputs()
    other = ValidationOutputs(out.image_ids[::-1], out.images, out.truth, out.seg_prob, out.cls_prob)
    with pytest.raises(ValueError, match="other images"):
        ablation_rows({"best": out, "swa": other}, POST)
    with pytest.raises(ValueError, match="best"):
        ablation_rows({"swa": out}, POST)


def test_classifier_summary_at_the_chosen_threshold():
    summary = classifier_summary(hand_outputs(), 0.5)
    m = summary["metrics"]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mcc"] == pytest.approx(2 / np.sqrt(3 * 2 * 2 * 1))
    assert m["roc_auc"] == pytest.approx(1.0)
    assert summary["talk"]["mcc"] == 0.7702 and summary["n_positive"] == 2
    assert classifier_summary(hand_outputs(), 0.7)["metrics"]["fp"] == 0


def test_segmenter_summary_raw_and_postprocessed_on_positives():
    out = hand_outputs()
    summary = segmenter_summary({"best": out, "swa": perfect_swa(out)}, POST)
    assert summary["n_images"] == 2
    rows = {(r["checkpoint"], r["masks"]): r for r in summary["rows"]}
    raw = rows[("best", "raw")]
    assert raw["iou"] == pytest.approx((16 / 17 + 8 / 16) / 2)
    assert raw["f1"] == pytest.approx((32 / 33 + 16 / 24) / 2)
    assert raw["f2"] == pytest.approx((80 / 81 + 40 / 72) / 2)
    post = rows[("best", "post-processed")]
    assert post["iou"] == pytest.approx((1 + 0.5) / 2)
    assert post["f1"] == pytest.approx((1 + 16 / 24) / 2)
    assert rows[("swa", "post-processed")]["iou"] == pytest.approx(1.0)
    assert summary["talk"] == {"iou": 0.6332, "f1": 0.6773, "f2": 0.6811}


def test_dice_surface_contains_the_chosen_cell():
    out = hand_outputs()
    surface = dice_surface(out, POST, pixel_thresholds=[0.5, 0.95], min_areas=[0])
    assert surface["min_areas"] == [0, 8192] and surface["pixel_thresholds"] == [0.5, 0.95]
    values = np.array(surface["mean_dice"])
    assert values.shape == (2, 2)
    assert values[0, 0] == pytest.approx((32 / 33 + 16 / 24 + 1 + 1) / 4)
    assert values[0, 1] == pytest.approx(_rows({"best": out})["two_stage"]["mean_dice"])
    assert values[1, 0] == pytest.approx(0.5)  # nothing exceeds 0.95: the all-empty score
    assert surface["all_empty"] == pytest.approx(0.5)

    triplet = dice_surface(out, POST.model_copy(update={"rule": "triplet"}), pixel_thresholds=[0.5], min_areas=[0])
    assert triplet["chosen"] is None and triplet["min_areas"] == [0] and triplet["rule"] == "triplet"


def test_panel_cases_best_median_worst():
    out = hand_outputs()
    cases = select_panel_cases(out, POST)
    # candidates: images 0 and 1 (image 2 is gated off, image 3 empty in truth and prediction)
    assert [(c["case"], c["index"]) for c in cases] == [("best", 0), ("worst", 1)]
    assert cases[1]["dice"] == pytest.approx(16 / 24)

    n = 9  # nine positives with Dice 0, 1/8, ..., 1: two best, two median, two worst
    truth = np.zeros((n, S, S), bool)
    truth[:, :8, :] = True  # 128 px
    prob = np.full((n, S, S), 0.1, np.float16)
    for i in range(n):
        prob[i, :i, :] = 0.9  # i rows of 16 px inside the truth -> Dice 2*16i/(16i+128)
    many = ValidationOutputs([f"id{i}" for i in range(n)], np.zeros((n, S, S), np.uint8), truth, prob,
                             np.ones(n, np.float32))
    cases = select_panel_cases(many, POST_NO_REMOVAL)
    assert [c["case"] for c in cases] == ["best", "best", "median", "median", "worst", "worst"]
    assert [c["index"] for c in cases] == [8, 7, 4, 3, 1, 0]
    assert [c["dice"] for c in cases] == sorted((c["dice"] for c in cases), reverse=True)
    assert len(select_panel_cases(many, POST_NO_REMOVAL, max_rows=3)) == 3


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_compute_report_writes_markdown_json_and_plots(tmp_path):
    out = hand_outputs()
    outputs = {"best": out, "swa": perfect_swa(out), "swa+tta": perfect_swa(out)}
    report = compute_report(outputs, POST, tmp_path / "rep", evaluated={"seg_run": "runs/seg", "cls_run": "runs/cls",
                                                                       "seg_checkpoints": ["best.safetensors"]},
                            post_source="postprocess.json")
    folder = tmp_path / "rep"
    for name in ("report.md", "report.json", "roc.png", "pr.png", "dice_grid.png", "panels.png"):
        assert (folder / name).is_file(), name
    for name in ("roc.png", "pr.png", "dice_grid.png", "panels.png"):
        assert _is_png(folder / name)
        with Image.open(folder / name) as image:
            assert min(image.size) > 200
    assert report.plots == {"roc": "roc.png", "pr": "pr.png", "dice_grid": "dice_grid.png", "panels": "panels.png"}

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads((folder / "report.json").read_text(), parse_constant=no_nan)
    assert [r["key"] for r in data["ablation"]][-1] == "two_stage_swa_tta"
    assert data["ablation"][2]["mean_dice"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4)
    assert data["ablation"][-1]["mean_dice"] == pytest.approx(1.0)
    assert data["classifier"]["metrics"]["tp"] == 2
    assert data["postprocess"]["min_area"] == 8192 and data["postprocess"]["min_area_px_at_eval_size"] == 2
    assert data["evaluated"]["n_images"] == 4 and data["evaluated"]["n_positive"] == 2
    assert data["talk"]["ablation"]["two_stage_swa"] == 0.8347
    assert [(c["case"], c["variant"]) for c in data["panels"]] == [("best", "swa"), ("worst", "swa")]

    md = (folder / "report.md").read_text()
    for link in ("](roc.png)", "](pr.png)", "](dice_grid.png)", "](panels.png)"):
        assert link in md
    assert f"| two-stage (best) | best | yes | no | {(1 + 16 / 24 + 1 + 1) / 4:.4f} |" in md
    assert "0.8323" in md and "the talk's" in md and "optimistic" in md
    assert "| MCC | 0.5774 | 0.7702 |" in md
    assert "`runs/seg`" in md

    text = report.render()
    assert "two-stage + SWA + hflip TTA" in text and "0.7016" in text and "not ours" in text
    assert f"{(1 + 16 / 24 + 1 + 1) / 4:.4f}" in text


def test_compute_report_copes_with_one_class_and_no_positives(tmp_path):
    out = hand_outputs()
    negatives = ValidationOutputs(out.image_ids[2:], out.images[2:], out.truth[2:],
                                  np.full_like(out.seg_prob[2:], 0.1), out.cls_prob[2:])
    report = compute_report({"best": negatives}, POST, tmp_path)
    assert "roc" not in report.plots and "one class" in report.classifier["note"]
    assert report.segmenter["n_images"] == 0 and report.segmenter["rows"][0]["iou"] is None
    assert report.panels == [] and _is_png(tmp_path / "panels.png")
    rows = {r["key"]: r for r in report.ablation}
    assert rows["two_stage"]["mean_dice"] == pytest.approx(1.0)
    json.loads((tmp_path / "report.json").read_text())
    assert "—" in (tmp_path / "report.md").read_text()


def test_compute_report_without_writing(tmp_path):
    report = compute_report({"best": hand_outputs()}, POST, tmp_path / "none", write=False)
    assert not (tmp_path / "none").exists()
    assert report.ablation[0]["mean_dice"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# End to end with tiny trained runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from pneumoseg.config import load_config
    from pneumoseg.data.synth import generate_dataset
    from pneumoseg.train.stages import train_classifier, train_segmenter

    root = tmp_path_factory.mktemp("report_runs")
    old = os.environ.get("PNEUMOSEG_CACHE")
    os.environ["PNEUMOSEG_CACHE"] = str(root / "cache")
    try:
        generate_dataset(root / "data", n=24, size=64, positive_rate=0.5, seed=0, progress=False)
        config = load_config("demo", ["classifier.image_size=64", "segmenter.image_size=64", "classifier.epochs=1",
                                      "segmenter.epochs=1", "segmenter.frozen_epochs=0", "segmenter.swa_start=1",
                                      "segmenter.swa_end=1", "classifier.batch_size=4", "segmenter.batch_size=4"])
        images, labels = root / "data" / "dicom-images-train", root / "data" / "train-rle.csv"
        train_classifier(images, labels, config, root / "cls", progress=False)
        train_segmenter(images, labels, config, root / "seg", progress=False)
    finally:
        if old is None:
            os.environ.pop("PNEUMOSEG_CACHE", None)
        else:
            os.environ["PNEUMOSEG_CACHE"] = old
    return root


@pytest.mark.slow
def test_report_command_end_to_end(tiny_runs):
    from typer.testing import CliRunner

    from pneumoseg.cli import app

    root = tiny_runs
    out = root / "report"
    result = CliRunner().invoke(app, ["report", "--cls", str(root / "cls"), "--seg", str(root / "seg"),
                                      "--images", str(root / "data" / "dicom-images-train"),
                                      "--labels", str(root / "data" / "train-rle.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "two-stage + SWA + hflip TTA" in result.output and str(out / "report.md") in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["evaluated"]["n_images"] == 4  # 24 images, 1/6 held out
    assert data["evaluated"]["variants"] == ["best", "swa", "swa+tta"]
    assert all(r["mean_dice"] is not None for r in data["ablation"])
    assert data["evaluated"]["seg_checkpoints"] == ["best.safetensors", "swa.safetensors"]
    for name in ("roc.png", "pr.png", "dice_grid.png", "panels.png"):
        assert _is_png(out / name)


def test_report_command_options():
    from typer.testing import CliRunner

    from pneumoseg.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["report", "--help"], terminal_width=200).output
    for option in ("--cls", "--seg", "--images", "--labels", "--out", "--fold", "--splits", "--no-tta", "--device"):
        assert option in help_text
    missing = runner.invoke(app, ["report", "--seg", "s", "--images", "i", "--labels", "l", "--out", "o"])
    assert missing.exit_code == 2 and "--cls" in missing.output


def test_compute_report_with_the_triplet_rule(tmp_path):
    post = POST.model_copy(update={"rule": "triplet", "top": 0.8, "bottom": 0.5, "min_area": 0})
    report = compute_report({"best": hand_outputs()}, post, tmp_path)
    assert report.dice_grid["chosen"] is None and _is_png(tmp_path / "dice_grid.png")
    md = (tmp_path / "report.md").read_text()
    assert "triplet rule (top 0.8, min_area 0, bottom 0.5)" in md and "shown for comparison" in md
    assert "| top | 0.8 |" in md
    # triplet with min_area 0 keeps every image with a pixel over 0.8: image 0 keeps its speck
    assert report.ablation[2]["mean_dice"] == pytest.approx((32 / 33 + 16 / 24 + 1 + 1) / 4)
