"""Adaptive seeds: the group-sequential design keeps its error rate under optional stopping and
saves seeds, shown on simulated studies whose truth is known (no Ray, seconds)."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from gapan.sequential import (
    EFFECT,
    PRECISE,
    UNDECIDED,
    Design,
    fixed_design_seeds,
    look,
    repeated_interval,
    sequential_p,
    simulate,
)


def test_with_no_effect_at_most_5_percent_of_adaptive_studies_report_one():
    design = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(design, [0.0, 0.0, 0.0], studies=1_000, seed=1)
    assert found.any_rejection_rate <= 0.05  # family-wise, Holm across the three settings
    # Stopping for precision only removes looks.
    precise = dataclasses.replace(design, precision=1.5)
    found = simulate(precise, [0.0, 0.0, 0.0], studies=1_000, seed=1)
    assert found.any_rejection_rate <= 0.05 and np.mean(found.mean_seeds) < 9


def test_one_comparison_with_no_effect_reports_one_at_close_to_the_level_asked():
    # Calibrated, not merely conservative: a boundary far too strict would pass the test above.
    found = simulate(Design(min_seeds=3, max_seeds=10, comparisons=1), [0.0], seed=1)
    assert 0.03 <= found.any_rejection_rate <= 0.05


def test_a_t_test_after_every_seed_would_not_keep_that_rate():
    # What the design guards against: the same studies tested naively after every seed.
    generator = np.random.default_rng(1)
    differences = generator.standard_normal((1_000, 10))
    crossed = np.zeros(1_000, dtype=bool)
    for n in range(3, 11):
        crossed |= stats.ttest_1samp(differences[:, :n], 0.0, axis=1).pvalue < 0.05
    assert crossed.mean() > 0.10


def test_a_real_effect_is_found_with_fewer_seeds_than_a_fixed_design_of_the_same_power():
    design = Design(min_seeds=3, max_seeds=10, comparisons=1)
    found = simulate(design, [1.0], studies=1_000, seed=2)
    power = found.rejection_rate[0]
    assert power > 0.6
    assert found.mean_seeds[0] < fixed_design_seeds(1.0, power)


def test_the_interval_excludes_zero_exactly_when_the_p_value_is_below_its_level():
    design = Design(min_seeds=3, max_seeds=8, comparisons=1)
    generator = np.random.default_rng(3)
    both = [0, 0]
    for _ in range(300):
        values = generator.normal(0.8, 1.0, size=int(generator.integers(3, 9)))
        _, low, high = repeated_interval(values, design, 0.05)
        p = sequential_p(values, design)
        excludes = low > 0 or high < 0
        if abs(p - 0.05) > 1e-3:  # away from the simulation's resolution at the boundary
            assert excludes == (p < 0.05)
            both[excludes] += 1
    assert min(both) > 20  # both sides were seen


def test_a_comparison_is_decided_by_its_sign_or_by_its_precision():
    design = Design(min_seeds=3, max_seeds=10, comparisons=1, precision=0.05)
    assert look([0.10, 0.11, 0.12, 0.10, 0.11], design).decision == EFFECT
    assert look([0.001, -0.002, 0.0, 0.001, -0.001, 0.0], design).decision == PRECISE
    assert look([0.3, -0.2, 0.1], design).decision == UNDECIDED
    assert look([0.10, 0.11], design).decision == UNDECIDED  # before the first look
    no_precision = Design(min_seeds=3, max_seeds=10, comparisons=1)
    assert look([0.001, -0.002, 0.0, 0.001, -0.001, 0.0], no_precision).decision == UNDECIDED


def test_a_design_needs_two_seeds_and_a_maximum_above_its_minimum():
    with pytest.raises(ValueError, match="2 <= min <= max"):
        Design(min_seeds=1, max_seeds=5, comparisons=1)
    with pytest.raises(ValueError, match="2 <= min <= max"):
        Design(min_seeds=6, max_seeds=5, comparisons=1)
