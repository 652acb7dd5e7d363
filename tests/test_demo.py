"""The main job end to end: a reduced demo in seconds (twice, for determinism), the full one
(slow) with its margins."""

import json

import pytest

from pneumoseg.data.labels import read_labels
from pneumoseg.demo import TABLE_END, TABLE_START, run_demo, summary_table_markdown

REDUCED = dict(n_train=24, n_test=6, size=64, progress=False)
NUMBERS = ("test", "validation", "systems", "submissions")
"""summary.json entries that must not change between runs (timings and the machine may)."""


@pytest.fixture(scope="module")
def reduced_config(tiny_config):
    return tiny_config("classifier.epochs=1")


@pytest.fixture(scope="module")
def reduced_demo(reduced_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(out, config=reduced_config, **REDUCED)


def test_reduced_demo_runs_end_to_end_and_skips_finished_steps(reduced_demo, reduced_config):
    out, result = reduced_demo
    assert set(result.test_scores) == {"seg_alone", "two_stage"}
    assert len(read_labels(out / "test" / "submission.csv")) == 6
    assert len(read_labels(out / "test" / "submission-seg-only.csv")) == 6
    for name in ("postprocess.json", "postprocess-seg-only.json"):
        assert (out / "runs" / "segmenter" / name).is_file()
    assert result.report == out / "report" / "report.md" and result.report.is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["n_images"] == 6 and summary["submissions"]["two_stage_swa"]["n_images"] == 6
    assert "all-empty baseline" in result.render()

    weights = out / "runs" / "classifier" / "best.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_demo(out, config=reduced_config, **REDUCED)
    assert weights.stat().st_mtime_ns == stamp  # training was not redone
    assert again.test_scores == result.test_scores


def test_summary_md_holds_the_headline_table_and_the_protocol(reduced_demo):
    out, _ = reduced_demo
    summary = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    table = summary_table_markdown(summary)
    assert f"{TABLE_START}\n{table}{TABLE_END}" in md
    for system in ("all-empty baseline", "segmentation alone (SWA)", "two-stage (best)", "two-stage + SWA",
                   "two-stage + SWA + hflip TTA"):
        assert f"| {system} |" in table
    assert "95% CI" in table and "Δ vs all-empty" in table and "Δ vs segmentation alone" in table
    for needle in ("healthy films given a mask", "Dice by pneumothorax size", "5,243 px at 1024²",
                   "optimistic: post-processing was tuned on it", "predict + evaluate (1024×1024)",
                   "| torch threads |", "| seed | data 0", "run_demo(",
                   "What the table says:", "The perfect-gate row is not a system", "| perfect gate + SWA (ceiling) |"):
        assert needle in md, needle
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["torch"]


def test_reduced_demo_is_deterministic(reduced_demo, reduced_config, tmp_path):
    """Two fresh folders, same seeds: the same numbers (training is made deterministic in the preset)."""
    first, _ = reduced_demo
    run_demo(tmp_path / "demo", config=reduced_config, **REDUCED)
    one, two = (json.loads((folder / "summary.json").read_text()) for folder in (first, tmp_path / "demo"))
    for key in NUMBERS:
        assert one[key] == two[key], key


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """`make demo` as shipped (about 12 minutes here): its summary.json and step timings."""
    out = tmp_path_factory.mktemp("full-demo") / "demo"
    result = run_demo(out, progress=False)
    return json.loads((out / "summary.json").read_text()), result.seconds


def _final_two_stage(summary):
    rows = {row["key"]: row for row in summary["test"]["rows"]}
    return rows.get("two_stage_swa", rows["two_stage"])


@pytest.mark.slow
def test_full_demo_gate_beats_segmentation_alone_within_budget(full_demo):
    """The talk's mechanism on the held-out test: the gate removes the segmenter's false
    positives on healthy films, and two-stage beats segmentation alone with the CI above 0."""
    summary, seconds = full_demo
    two_stage = _final_two_stage(summary)
    seg_alone = next(row for row in summary["test"]["rows"] if row["key"] == "seg_alone")
    assert two_stage["delta_vs_seg_alone"]["lo"] > 0
    assert two_stage["fp_healthy"]["n"] < seg_alone["fp_healthy"]["n"]
    assert sum(seconds.values()) < 15 * 60


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 10: on the realistic films the CPU recipe's two-stage system does not yet "
                                       "beat all-empty by 0.05 (measured +0.001 [-0.012, +0.013], README)")
def test_full_demo_two_stage_beats_all_empty_by_five_points(full_demo):
    summary, _ = full_demo
    assert _final_two_stage(summary)["delta_vs_empty"]["mean"] >= 0.05


def test_the_cv_demo_tunes_out_of_fold_and_scores_the_ensemble_beside_each_fold(reduced_config, tmp_path):
    from pneumoseg.demo import run_cv_demo

    out = tmp_path / "demo"
    result = run_cv_demo(out, n_folds=2, config=reduced_config, **REDUCED)
    assert len(read_labels(out / "test" / "submission-cv-ensemble.csv")) == 6
    saved = json.loads((out / "cv" / "segmenter" / "postprocess.json").read_text())
    assert saved["source"]["out_of_fold"] and saved["source"]["n_folds"] == 2
    cv = json.loads((out / "cv" / "report" / "cv.json").read_text())
    assert len(cv["test"]["fold_dice"]) == 2
    text = result.summary.read_text()
    assert "ensemble of 2" in text and "mean single fold" in text and "two_stage_ensemble" in text
