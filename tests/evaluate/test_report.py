"""``pneumoseg report``: tables from hand-made outputs (numbers checked by hand), each system
tuned for itself on validation and scored on test, the files and plots it writes, and one
end-to-end run on tiny trained models (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoseg.config import PostprocessConfig
from pneumoseg.evaluate.report import compute_report
from pneumoseg.evaluate.report.markdown import findings
from pneumoseg.evaluate.report.tables import (
    TALK_ABLATION,
    ablation_rows,
    classifier_summary,
    dice_by_size,
    dice_surface,
    false_positives_on_healthy,
    segmenter_summary,
    select_panel_cases,
    size_buckets,
    system_list,
    tune_systems,
)
from pneumoseg.evaluate.validation import per_image_dice
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.infer.tune import tune_postprocess
S = 16
# min_area is given at 1024x1024: 8192 px there = 2 px at 16x16, which removes a 1-px speck only.
POST = PostprocessConfig(cls_threshold=0.5, pixel_threshold=0.5, min_area=8192)
POST_NO_REMOVAL = POST.model_copy(update={"min_area": 0})


def _square(r: int, c: int, h: int = 4, w: int = 4) -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[r:r + h, c:c + w] = True
    return mask


def hand_outputs() -> ModelOutputs:
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
    return ModelOutputs([f"1.2.3.{i}" for i in range(4)], images, truth, prob,
                             np.array([0.9, 0.8, 0.2, 0.6], np.float32))


def perfect_swa(out: ModelOutputs) -> ModelOutputs:
    """Same images; the SWA segmenter gets image 1 right as well (and keeps the speck and blob)."""
    prob = out.seg_prob.copy()
    prob[1] = np.where(out.truth[1], 0.9, 0.1)
    return ModelOutputs(out.image_ids, out.images, out.truth, prob, out.cls_prob)


def fixed_systems(outputs, post=POST):
    """The ablation's systems, every one given ``post`` instead of tuning (hand-checkable rows)."""
    systems = system_list(outputs)
    for system in systems:
        if system.variant in outputs:
            system.post = post
    return systems


def _rows(outputs, post=POST):
    return {r["key"]: r for r in ablation_rows(outputs, fixed_systems(outputs, post))}


def test_ablation_rows_match_hand_computation():
    out = hand_outputs()
    rows = _rows({"best": out, "swa": perfect_swa(out)})
    assert list(rows) == ["all_empty", "seg_alone", "two_stage", "two_stage_swa", "two_stage_swa_tta", "oracle_gate"]
    assert rows["all_empty"]["mean_dice"] == pytest.approx(0.5)
    # alone (the final segmenter, SWA): 1 (speck removed), 1, 0 (blob on a negative), 1
    assert rows["seg_alone"]["mean_dice"] == pytest.approx(0.75) and rows["seg_alone"]["checkpoint"] == "swa"
    assert rows["two_stage"]["mean_dice"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4)
    assert rows["two_stage_swa"]["mean_dice"] == pytest.approx(1.0)
    assert rows["two_stage"]["delta_vs_empty"]["mean"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4 - 0.5)
    assert rows["two_stage_swa"]["delta_vs_seg_alone"]["mean"] == pytest.approx(0.25)
    assert rows["seg_alone"]["delta_vs_seg_alone"] is None and rows["all_empty"]["delta_vs_empty"] is None
    assert rows["two_stage_swa_tta"]["mean_dice"] is None and "no-tta" in rows["two_stage_swa_tta"]["note"]
    assert all(r["n_images"] == 4 for r in rows.values())
    assert rows["seg_alone"]["gated"] is False and rows["two_stage"]["gated"] is True
    for key, value in TALK_ABLATION.items():
        assert rows[key]["talk"] == value
    assert rows["all_empty"]["talk"] is None
    lo, hi = rows["two_stage"]["ci"]
    assert lo <= rows["two_stage"]["mean_dice"] <= hi


def test_false_positives_on_healthy_films_per_system():
    rows = _rows({"best": hand_outputs()})
    fp = {key: (r["fp_healthy"]["n"], r["fp_healthy"]["of"]) for key, r in rows.items() if r["fp_healthy"]}
    # image 2 is healthy and gets the blob from the segmenter alone; the gate (p 0.2) removes it
    assert fp == {"all_empty": (0, 2), "seg_alone": (1, 2), "two_stage": (0, 2), "oracle_gate": (0, 2)}
    assert rows["seg_alone"]["fp_healthy"]["rate"] == pytest.approx(0.5)


def test_false_positive_rate_on_hand_made_masks():
    masks = np.zeros((5, 4, 4), bool)
    masks[0, 1, 1] = masks[2, 0, 0] = masks[3, 2, 2] = True
    truth_positive = np.array([True, False, False, False, True])
    assert false_positives_on_healthy(masks, truth_positive) == {"n": 2, "of": 3, "rate": 2 / 3}
    assert false_positives_on_healthy(masks[[0, 4]], truth_positive[[0, 4]])["rate"] is None


def test_size_buckets_by_ground_truth_area():
    side = 100  # 10,000 px: 0.5% = 50 px, 2% = 200 px
    areas = [0, 49, 50, 199, 200, 900]
    truth = np.zeros((len(areas), side, side), bool)
    for i, area in enumerate(areas):
        truth[i].flat[:area] = True
    out = ModelOutputs([str(i) for i in range(len(areas))], np.zeros(truth.shape, np.uint8), truth,
                       np.zeros(truth.shape, np.float16))
    buckets = size_buckets(out)
    assert buckets.tolist() == ["negative", "small", "medium", "medium", "large", "large"]
    dice = np.array([1.0, 0.2, 0.4, 0.6, 0.5, 0.7])
    assert dice_by_size(dice, buckets) == {"small": {"mean_dice": pytest.approx(0.2), "n": 1},
                                           "medium": {"mean_dice": pytest.approx(0.5), "n": 2},
                                           "large": {"mean_dice": pytest.approx(0.6), "n": 2}}
    # the full-resolution share wins over the evaluation-size mask when it is known
    measured = ModelOutputs(out.image_ids, out.images, out.truth, out.seg_prob,
                            truth_fraction=np.array([0, 0.03, 0.03, 0.001, 0.001, 0.01]))
    assert size_buckets(measured).tolist() == ["negative", "large", "large", "small", "small", "medium"]
    assert dice_by_size(dice, np.array(["negative"] * 6))["small"] == {"mean_dice": None, "n": 0}


def test_each_system_is_tuned_for_itself_on_validation():
    out = hand_outputs()
    validation = {"best": out, "swa": perfect_swa(out)}
    systems = {s.key: s for s in tune_systems(validation)}
    alone = tune_postprocess(validation["swa"], gated=False)
    assert systems["seg_alone"].post == PostprocessConfig(**alone.params)
    assert "cls_threshold" not in systems["seg_alone"].post_json()
    assert systems["seg_alone"].validation_dice == pytest.approx(0.75)  # nothing removes the 16-px blob
    two_stage = tune_postprocess(validation["best"], gated=True)
    assert systems["two_stage"].post == PostprocessConfig(**two_stage.params)
    assert 0.2 < systems["two_stage"].post.cls_threshold <= 0.8
    assert systems["all_empty"].post is None and systems["two_stage_swa_tta"].post is None


def test_test_rows_use_the_validation_tuned_postprocessing(tmp_path):
    out = hand_outputs()
    validation = {"best": out, "swa": perfect_swa(out)}
    shifted = ModelOutputs(out.image_ids, out.images, out.truth, (out.seg_prob * 0.6).astype(np.float16),
                           np.array([0.9, 0.1, 0.2, 0.6], np.float32))  # other scores: tuning here would differ
    test = {"best": shifted, "swa": perfect_swa(shifted)}
    report = compute_report(validation, tmp_path, test=test, write=False)
    systems = {s.key: s for s in tune_systems(validation)}
    rows = {r["key"]: r for r in report.splits["test"]["rows"]}
    for key in ("seg_alone", "two_stage", "two_stage_swa"):
        s = systems[key]
        expected = per_image_dice(test[s.variant], s.post, gated=s.gated).mean()
        assert rows[key]["mean_dice"] == pytest.approx(expected)
    assert report.headline == "test"
    assert [s["postprocess"] for s in report.systems] == [s.post_json() for s in systems.values()]


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
    assert rows["seg_alone"]["checkpoint"] == "best"


def test_ablation_rows_refuse_mismatched_variants():
    out = hand_outputs()
    other = ModelOutputs(out.image_ids[::-1], out.images, out.truth, out.seg_prob, out.cls_prob)
    with pytest.raises(ValueError, match="other images"):
        ablation_rows({"best": out, "swa": other}, fixed_systems({"best": out}))
    with pytest.raises(ValueError, match="best"):
        ablation_rows({"swa": out}, fixed_systems({"best": out}))


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
    many = ModelOutputs([f"id{i}" for i in range(n)], np.zeros((n, S, S), np.uint8), truth, prob,
                             np.ones(n, np.float32))
    cases = select_panel_cases(many, POST_NO_REMOVAL)
    assert [c["case"] for c in cases] == ["best", "best", "median", "median", "worst", "worst"]
    assert [c["index"] for c in cases] == [8, 7, 4, 3, 1, 0]
    assert [c["dice"] for c in cases] == sorted((c["dice"] for c in cases), reverse=True)
    assert len(select_panel_cases(many, POST_NO_REMOVAL, max_rows=3)) == 3


def test_the_perfect_gate_row_lets_exactly_the_true_positives_through():
    """The ground truth gates, whatever the classifier says: a classifier that rejects every film
    leaves two-stage at all-empty, while the ceiling is the segmenter's Dice on the positives."""
    out = hand_outputs()
    blind = ModelOutputs(out.image_ids, out.images, out.truth, out.seg_prob, np.zeros(4, np.float32))
    rows = _rows({"best": blind})
    assert rows["two_stage"]["mean_dice"] == pytest.approx(0.5)
    # images 0 and 1 reach the segmenter (1 after speck removal, 16/24); 2 and 3 are gated out
    oracle = rows["oracle_gate"]
    assert oracle["mean_dice"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4)
    assert oracle["checkpoint"] == "best" and oracle["oracle"] and oracle["fp_healthy"]["n"] == 0
    assert oracle["delta_vs_empty"]["mean"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4 - 0.5)
    assert "perfect gate" in oracle["system"]


def test_findings_read_the_table_out_with_the_intervals():
    out = hand_outputs()
    rows = ablation_rows({"best": out, "swa": perfect_swa(out)}, fixed_systems({"best": out, "swa": perfect_swa(out)}))
    text = "\n".join(findings(rows))
    swa = next(r for r in rows if r["key"] == "two_stage_swa")
    lo = swa["delta_vs_seg_alone"]["lo"]
    expected = "better, the interval above 0" if lo > 0 else "no difference shown, the interval holds 0"
    assert f"two-stage + SWA against segmentation alone (SWA): +0.2500 [{lo:+.4f}" in text
    assert expected in text.splitlines()[2]
    assert "1/2 by segmentation alone (SWA), 0/2 by two-stage + SWA" in text
    assert "Behind a perfect gate the segmenter would score 1.0000, +0.5000" in text
    assert findings([r for r in rows if r["key"] == "all_empty"]) == []


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_compute_report_writes_markdown_json_and_plots(tmp_path):
    out = hand_outputs()
    outputs = {"best": out, "swa": perfect_swa(out), "swa+tta": perfect_swa(out)}
    report = compute_report(outputs, tmp_path / "rep", test=outputs, systems=fixed_systems(outputs),
                            evaluated={"seg_run": "runs/seg", "cls_run": "runs/cls",
                                       "seg_checkpoints": ["best.safetensors"]},
                            submissions={"two_stage_swa": {"mean_dice": 0.99}})
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
    rows = data["splits"]["test"]["rows"]
    assert [r["key"] for r in rows][-2:] == ["two_stage_swa_tta", "oracle_gate"]
    assert rows[2]["mean_dice"] == pytest.approx((1 + 16 / 24 + 1 + 1) / 4)
    assert rows[-2]["mean_dice"] == pytest.approx(1.0)
    assert data["splits"]["validation"]["rows"] == rows  # same outputs here
    assert data["classifier"]["metrics"]["tp"] == 2
    assert data["systems"][2]["postprocess"]["min_area"] == 8192
    assert data["splits"]["test"]["eval_size"] == S and data["splits"]["test"]["n_positive"] == 2
    assert data["talk"]["ablation"]["two_stage_swa"] == 0.8347
    assert [(c["case"], c["variant"]) for c in data["panels"]] == [("best", "swa"), ("worst", "swa")]

    md = (folder / "report.md").read_text()
    for link in ("](roc.png)", "](pr.png)", "](dice_grid.png)", "](panels.png)"):
        assert link in md
    assert f"| two-stage (best) | {(1 + 16 / 24 + 1 + 1) / 4:.4f} | [" in md
    assert "held-out test set" in md and "optimistic: post-processing was tuned on it" in md
    assert "0.8323" in md and "the talk's" in md and f"computed at {S}×{S}" in md
    assert "| segmentation alone (SWA) | 1/2 | 50.00% |" in md
    assert "5,243 px at 1024²" in md and "| two-stage + SWA | 1.0000 | 0.9900 | -0.0100 |" in md
    assert "two-stage + SWA differ by more than 0.005" in md
    assert "| MCC | 0.5774 | 0.7702 |" in md
    assert "`runs/seg`" in md

    text = report.render()
    assert "two-stage + SWA + hflip TTA" in text and "0.7016" in text and "not ours" in text
    assert "held-out test" in text and f"{(1 + 16 / 24 + 1 + 1) / 4:.4f}" in text


def test_compute_report_copes_with_one_class_and_no_positives(tmp_path):
    out = hand_outputs()
    negatives = ModelOutputs(out.image_ids[2:], out.images[2:], out.truth[2:],
                             np.full_like(out.seg_prob[2:], 0.1), out.cls_prob[2:])
    report = compute_report({"best": negatives}, tmp_path)
    assert "roc" not in report.plots and "one class" in report.classifier["note"]
    assert report.segmenter["n_images"] == 0 and report.segmenter["rows"][0]["iou"] is None
    assert report.panels == [] and _is_png(tmp_path / "panels.png")
    rows = {r["key"]: r for r in report.splits["validation"]["rows"]}
    assert rows["two_stage"]["mean_dice"] == pytest.approx(1.0)
    assert rows["two_stage"]["by_size"]["small"] == {"mean_dice": None, "n": 0}
    json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert "—" in md and "No held-out test set" in md


def test_compute_report_without_writing(tmp_path):
    report = compute_report({"best": hand_outputs()}, tmp_path / "none", write=False)
    assert not (tmp_path / "none").exists()
    assert report.splits["validation"]["rows"][0]["mean_dice"] == pytest.approx(0.5)


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
                                      "classifier.frozen_epochs=1", "segmenter.augment.crop=null", "segmenter.epochs=1", "segmenter.frozen_epochs=0", "segmenter.swa_start=1",
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
    images, labels = root / "data" / "dicom-images-train", root / "data" / "train-rle.csv"
    result = CliRunner().invoke(app, ["report", "--cls", str(root / "cls"), "--seg", str(root / "seg"),
                                      "--images", str(images), "--labels", str(labels), "--out", str(out),
                                      "--test-images", str(images), "--test-labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "two-stage + SWA + hflip TTA" in result.output and str(out / "report.md") in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["splits"]["validation"]["n_images"] == 4  # 24 images, 1/6 held out
    assert data["splits"]["test"]["n_images"] == 24
    assert data["evaluated"]["variants"] == ["best", "swa", "swa+tta"]
    assert all(r["mean_dice"] is not None for r in data["splits"]["test"]["rows"])
    assert data["evaluated"]["seg_checkpoints"] == ["best.safetensors", "swa.safetensors"]
    for name in ("roc.png", "pr.png", "dice_grid.png", "panels.png"):
        assert _is_png(out / name)


def test_report_command_options(monkeypatch, capsys):
    from typer.testing import CliRunner

    from pneumoseg.cli import app
    from tests.train.test_cli import assert_one_line_error, run_main

    runner = CliRunner()
    help_text = runner.invoke(app, ["report", "--help"], terminal_width=200).output
    for option in ("--cls", "--seg", "--images", "--labels", "--out", "--fold", "--splits", "--no-tta", "--device",
                   "--test-images", "--test-labels", "--model"):
        assert option in help_text
    code, _, err = run_main(monkeypatch, capsys, "report", "--seg", "s", "--images", "i", "--labels", "l", "--out", "o")
    assert_one_line_error(code, err, "give --cls RUN and --seg RUN, or --model model.zip")
    code, _, err = run_main(monkeypatch, capsys, "report", "--cls", "c", "--seg", "s", "--images", "i", "--labels",
                            "l", "--out", "o", "--test-images", "t")
    assert_one_line_error(code, err, "--test-images and --test-labels together")


def test_compute_report_with_the_triplet_rule(tmp_path):
    post = POST.model_copy(update={"rule": "triplet", "top": 0.8, "bottom": 0.5, "min_area": 0})
    outputs = {"best": hand_outputs()}
    report = compute_report(outputs, tmp_path, systems=fixed_systems(outputs, post))
    assert report.dice_grid["chosen"] is None and _is_png(tmp_path / "dice_grid.png")
    md = (tmp_path / "report.md").read_text()
    assert "triplet rule (top 0.8, min_area 0, bottom 0.5)" in md and "shown for comparison" in md
    # triplet with min_area 0 keeps every image with a pixel over 0.8: image 0 keeps its speck
    assert report.splits["validation"]["rows"][2]["mean_dice"] == pytest.approx((32 / 33 + 16 / 24 + 1 + 1) / 4)
