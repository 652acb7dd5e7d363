"""The report's Dice by BTS class and its measured-versus-true rim table, on hand-made outputs
whose rims are known."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoseg.evaluate.report.markdown import bts_table, rim_table
from pneumoseg.evaluate.report.measured import bts_classes, rim_agreement, truth_measurements
from pneumoseg.infer.outputs import ModelOutputs

S = 128  # evaluation size; 0.5 mm per pixel there


def _outputs(widths: list[int], spacing: float | None = 0.5) -> ModelOutputs:
    n = len(widths)
    truth = np.zeros((n, S, S), bool)
    for i, width in enumerate(widths):
        if width:
            truth[i, 60:70, 5:5 + width] = True  # a lateral rim of ``width`` px, below the apical zone
    grid = np.full((n, 2), np.nan if spacing is None else spacing)
    return ModelOutputs([str(i) for i in range(n)], np.zeros((n, S, S), np.uint8), truth,
                        np.zeros((n, S, S), np.float16), None, None, grid)


def test_truth_classes_follow_the_20_mm_rim():
    out = _outputs([0, 30, 39, 40, 60])  # 0, 15, 19.5, 20, 30 mm
    assert list(bts_classes(truth_measurements(out))) == ["none", "small", "small", "large", "large"]
    assert list(bts_classes(truth_measurements(_outputs([30], spacing=None)))) == ["unknown"]


def test_rim_agreement_against_known_errors():
    out = _outputs([30, 50, 0])
    predicted = np.zeros_like(out.truth)
    predicted[0, 60:70, 5:5 + 34] = True  # 17 mm measured for a 15 mm rim: +2 mm, both small
    predicted[1, 60:70, 5:5 + 30] = True  # 15 mm for 25 mm: -10 mm, large called small
    rim = rim_agreement(out, predicted)
    assert rim["n"] == 2 and rim["bts_agreement"] == 1
    assert rim["lateral_mm"]["mean_abs_error"] == pytest.approx(6.0)
    assert rim["lateral_mm"]["true_median"] == pytest.approx(20.0)
    text = "\n".join(rim_table({"system": "two-stage + SWA", **rim}))
    assert "BTS class the same on 1 of 2" in text and "| lateral rim, mm | 20.0 | 16.0 | 6.0 |" in text


def test_bts_table_rows():
    rows = [{"key": "all_empty", "system": "all-empty", "by_bts": None},
            {"key": "two_stage", "system": "two-stage", "by_bts": {"small": {"mean_dice": 0.25, "n": 2},
                                                                "large": {"mean_dice": None, "n": 0}}}]
    table = bts_table(rows, {"small": 2, "large": 0})
    assert "| system | small (n=2) | large (n=0) |" in table and "| two-stage | 0.2500 | — |" in table
