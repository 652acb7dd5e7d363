"""The main job end to end: a reduced demo in seconds, the full one (slow) with its margins."""

import json

import pytest

from pneumoseg.data.labels import read_labels
from pneumoseg.demo import run_demo


def test_reduced_demo_runs_end_to_end_and_skips_finished_steps(tiny_config, tmp_path):
    out = tmp_path / "demo"
    config = tiny_config("classifier.epochs=1")
    result = run_demo(out, n_train=24, n_test=6, size=64, config=config, progress=False)
    assert set(result.test_scores) == {"segmentation alone", "two-stage (SWA)"}
    assert len(read_labels(out / "test" / "submission.csv")) == 6
    assert len(read_labels(out / "test" / "submission-seg-only.csv")) == 6
    assert (out / "runs" / "segmenter" / "postprocess.json").is_file()
    assert result.report == out / "report" / "report.md" and result.report.is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["two-stage (SWA)"]["n_images"] == 6
    assert "all-empty baseline" in result.render()

    weights = out / "runs" / "classifier" / "best.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_demo(out, n_train=24, n_test=6, size=64, config=config, progress=False)
    assert weights.stat().st_mtime_ns == stamp  # training was not redone
    assert again.test_scores == result.test_scores


@pytest.mark.slow
def test_full_demo_reproduces_the_talks_ordering(tmp_path):
    """`make demo` as shipped: two-stage beats all-empty by >= 0.10 and beats segmentation alone."""
    result = run_demo(tmp_path / "demo", progress=False)
    scores = result.test_scores
    baseline = scores["two-stage (SWA)"]["all_empty_baseline"]
    assert scores["two-stage (SWA)"]["mean_dice"] >= baseline + 0.10
    assert scores["two-stage (SWA)"]["mean_dice"] > scores["segmentation alone"]["mean_dice"]
    assert sum(result.seconds.values()) < 15 * 60
