"""Paired bootstrap intervals against expectations worked out independently."""

import numpy as np
import pytest

from pneumoseg.evaluate.bootstrap import paired_bootstrap


def test_identical_systems_differ_by_exactly_nothing():
    scores = np.random.default_rng(1).random(50)
    assert paired_bootstrap(scores, scores) == (0.0, 0.0, 0.0)


def test_a_constant_shift_is_the_whole_interval():
    b = np.random.default_rng(2).random(40)
    mean, lo, hi = paired_bootstrap(b + 0.125, b)
    assert (mean, lo, hi) == pytest.approx((0.125, 0.125, 0.125), abs=1e-12)


def test_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    n = 400
    diff = rng.normal(0.05, 0.2, n)
    mean, lo, hi = paired_bootstrap(diff, np.zeros(n), n_resamples=4000)
    se = diff.std(ddof=1) / np.sqrt(n)
    assert mean == pytest.approx(diff.mean())
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(mean + 1.96 * se, abs=0.15 * se)


def test_pairing_removes_the_shared_image_difficulty():
    rng = np.random.default_rng(4)
    difficulty = rng.random(100)  # large spread shared by both systems
    a, b = difficulty + rng.normal(0.02, 0.01, 100), difficulty
    _, lo, hi = paired_bootstrap(a, b)
    assert hi - lo < 0.01 and lo > 0


def test_fixed_seed_is_reproducible_and_seed_matters():
    rng = np.random.default_rng(5)
    a, b = rng.random(30), rng.random(30)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    assert paired_bootstrap(a, b, seed=1) != paired_bootstrap(a, b, seed=0)


def test_empty_and_misshapen_inputs():
    assert all(np.isnan(v) for v in paired_bootstrap(np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="one score per image"):
        paired_bootstrap(np.zeros((2, 2)), np.zeros((2, 2)))
