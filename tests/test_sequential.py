"""Adaptive seeds: the group-sequential design keeps its error rate under optional stopping when
the paired differences are normal, not when they are skewed (which the report warns of), and
where it saves trials and where not, shown on simulated studies whose truth is known (no Ray,
seconds)."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gapan.sequential import (
    EFFECT,
    NOISE_MODELS,
    PRECISE,
    SKEWNESS_LIMIT,
    UNDECIDED,
    Design,
    Simulation,
    draw_noise,
    fixed_design_seeds,
    holm,
    holm_rows,
    look,
    repeated_interval,
    sequential_p,
    simulate,
    skewness,
    stopping_looks,
)
from reports.load import Results
from reports.sequential import sequential_data

STUDIES = 20_000  # the vectorised simulation runs these in about a second
# Three Monte Carlo standard errors of a rate near 0.05 over STUDIES studies.
MONTE_CARLO = 3 * math.sqrt(0.05 * 0.95 / STUDIES)


def test_with_no_effect_at_most_5_percent_of_adaptive_studies_report_one():
    design = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(design, [0.0, 0.0, 0.0], studies=STUDIES, seed=1)
    assert found.any_rejection_rate <= 0.05 + MONTE_CARLO  # family-wise, Holm across three
    # Stopping for precision only removes looks.
    precise = dataclasses.replace(design, precision=1.5)
    found = simulate(precise, [0.0, 0.0, 0.0], studies=STUDIES, seed=1)
    assert found.any_rejection_rate <= 0.05 + MONTE_CARLO and np.mean(found.mean_seeds) < 9


def test_one_comparison_with_no_effect_reports_one_at_close_to_the_level_asked():
    # Calibrated, not merely conservative: a boundary far too strict would pass the test above.
    design = Design(min_seeds=3, max_seeds=10, comparisons=1)
    found = simulate(design, [0.0], studies=STUDIES, seed=1)
    assert abs(found.any_rejection_rate - 0.05) <= MONTE_CARLO


def test_the_simulation_stops_each_comparison_where_look_decides_it_seed_by_seed():
    generator = np.random.default_rng(4)
    for design in (
        Design(min_seeds=3, max_seeds=10, comparisons=2),
        Design(min_seeds=2, max_seeds=6, comparisons=1, precision=0.8),
    ):
        rows = generator.normal(0.7, 1.0, size=(300, design.max_seeds))
        pairs, decisions = stopping_looks(rows, design)
        for row, stop, decision in zip(rows, pairs, decisions, strict=True):
            n = design.min_seeds
            while n < design.max_seeds and look(row[:n], design).decision == UNDECIDED:
                n += 1
            assert (stop, decision) == (n, look(row[:n], design).decision)
        assert {EFFECT, UNDECIDED} <= set(decisions)


def test_holm_of_every_row_at_once_is_holm_of_each():
    p = np.random.default_rng(5).uniform(0, 0.1, size=(50, 4))
    assert np.allclose(holm_rows(p), [holm(row) for row in p])


def test_a_study_runs_the_baseline_as_long_as_its_longest_setting():
    found = Simulation(
        rejected=np.zeros((2, 2), dtype=bool),
        seeds=np.array([[3, 5], [10, 10]]),
        estimates=np.zeros((2, 2)),
        decisions=np.full((2, 2), UNDECIDED),
    )
    assert found.mean_trials == ((5 + 3 + 5) + (10 + 10 + 10)) / 2


@pytest.mark.parametrize("noise", NOISE_MODELS)
def test_every_noise_model_gives_differences_of_mean_0_variance_1_correlated_one_half(noise):
    arms = draw_noise(noise, np.random.default_rng(6), (200_000, 3, 1))[..., 0]
    differences = arms[:, 1:] - arms[:, :1]
    assert np.allclose(differences.mean(axis=0), 0.0, atol=0.02)
    if noise != "t3":  # whose sample variance settles too slowly; its distribution is checked below
        assert np.allclose(differences.var(axis=0), 1.0, atol=0.08)
    assert abs(np.corrcoef(differences.T)[0, 1] - 0.5) < 0.03


@pytest.mark.parametrize("noise, expected", [("skewed-0.8", 0.8), ("skewed-1.75", 1.75)])
def test_skewed_noise_has_the_skewness_its_name_asks(noise, expected):
    arms = draw_noise(noise, np.random.default_rng(7), (400_000, 2, 1))[..., 0]
    assert abs(stats.skew(arms[:, 1] - arms[:, 0]) - expected) < 0.1


def test_t3_noise_has_heavy_symmetric_tails_and_lognormal_arms_are_skewed():
    generator = np.random.default_rng(8)
    arms = draw_noise("t3", generator, (400_000, 2, 1))[..., 0]
    differences = arms[:, 1] - arms[:, 0]
    t3 = stats.t(3, scale=1 / math.sqrt(3))  # variance 1
    assert stats.kstest(differences, t3.cdf).statistic < 0.005
    # Beyond 3 standard deviations: a t with 3 degrees of freedom (scaled to variance 1) puts
    # 2 t.sf(3 sqrt(3), 3) there, five times what a normal does.
    beyond = np.mean(np.abs(differences) > 3)
    assert abs(beyond - 2 * stats.t.sf(3 * math.sqrt(3), 3)) < 0.002
    assert beyond > 4 * 2 * stats.norm.sf(3)
    assert abs(np.mean(differences > 0) - 0.5) < 0.005
    arms = draw_noise("lognormal", generator, (400_000, 2, 1))[..., 0]
    assert stats.skew(arms[:, 1]) > 4  # each arm skewed (6.2 in theory; samples fall short)
    assert abs(np.mean(arms[:, 1] - arms[:, 0] > 0) - 0.5) < 0.005  # exchangeable: symmetric


def test_an_unknown_noise_model_is_refused_by_name():
    with pytest.raises(ValueError, match="noise 'cauchy'"):
        draw_noise("cauchy", np.random.default_rng(0), (1, 2, 3))


def test_skewed_differences_make_the_design_report_effects_that_are_not_there():
    # What the report's skewness warning is for: the boundary assumes normal differences.
    design = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(design, [0.0, 0.0, 0.0], studies=STUDIES, seed=1, noise="skewed-1.75")
    assert found.any_rejection_rate > 0.05 + 3 * MONTE_CARLO
    found = simulate(design, [0.0, 0.0, 0.0], studies=STUDIES, seed=1, noise="t3")
    assert found.any_rejection_rate <= 0.05 + MONTE_CARLO  # symmetric tails: conservative


def test_the_skewness_warning_fires_on_strongly_skewed_differences_and_not_on_normal_ones():
    symmetric = stats.norm.ppf((np.arange(10) + 0.5) / 10)
    normal = {"a": symmetric, "b": symmetric[::-1] * 2, "c": np.roll(symmetric, 3)}
    assert not skewness(normal).in_doubt and abs(skewness(normal).pooled) < 1e-9
    one_bad_seed = np.array([-0.1, -0.12, -0.09, -0.11, -0.1, -0.08, -0.1, 0.9])
    skewed = {"a": one_bad_seed, "b": one_bad_seed + 0.05, "c": symmetric}
    found = skewness(skewed)
    assert found.in_doubt and found.pooled > SKEWNESS_LIMIT and found.beyond == ["a", "b"]
    assert skewness({"a": -one_bad_seed}).pooled < -SKEWNESS_LIMIT  # either way
    assert not skewness({"a": [0.1, 0.2]}).in_doubt  # too few pairs to say


def test_the_skewness_warning_is_rare_on_normal_studies_and_common_on_skewed_ones():
    def warned(noise):
        arms = draw_noise(noise, np.random.default_rng(9), (2_000, 4, 10))
        differences = arms[:, 1:] - arms[:, :1]
        return np.mean([skewness(dict(enumerate(study))).in_doubt for study in differences])

    assert warned("normal") < 0.03
    assert warned("skewed-2.5") > 0.5


def _adaptive_results(differences: dict[str, list[float]]) -> Results:
    rows = [
        {"setting": "0", "seed": seed, "status": "completed", "val_map_at_r": 0.5}
        for seed in range(len(next(iter(differences.values()))))
    ]
    for setting, values in differences.items():
        rows += [
            {"setting": setting, "seed": seed, "status": "completed", "val_map_at_r": 0.5 + value}
            for seed, value in enumerate(values)
        ]
    trials = pd.DataFrame(rows).assign(time_total_s=60.0)
    study = {
        "kind": "ablation",
        "mode": "max",
        "metric": "map_at_r",
        "knob": "flow.depth",
        "baseline": 0,
        "search": {"flow.depth": {"values": [0, *map(int, differences)]}},
        "sequential": {"min_seeds": 3, "max_seeds": 10, "comparisons": len(differences)},
    }
    record = {"design": study["sequential"], "settings": {}, "rounds": [], "stopped": "test"}
    return Results(Path("adaptive"), study, trials, pd.DataFrame(), sequential=record)


def test_the_report_warns_when_the_paired_differences_are_skewed():
    one_bad_seed = [-0.01, -0.012, -0.009, -0.011, -0.01, -0.008, -0.01, 0.09]
    data = sequential_data(_adaptive_results({"1": one_bad_seed, "2": one_bad_seed}))
    warning = data["skewness_warning"]
    assert "skewed" in warning and "flow.depth = 1" in warning and "below zero" in warning
    symmetric = list(0.01 * stats.norm.ppf((np.arange(8) + 0.5) / 8))
    assert sequential_data(_adaptive_results({"1": symmetric}))["skewness_warning"] is None


def test_a_t_test_after_every_seed_would_not_keep_that_rate():
    # What the design guards against: the same studies tested naively after every seed.
    generator = np.random.default_rng(1)
    differences = generator.standard_normal((1_000, 10))
    crossed = np.zeros(1_000, dtype=bool)
    for n in range(3, 11):
        crossed |= stats.ttest_1samp(differences[:, :n], 0.0, axis=1).pvalue < 0.05
    assert crossed.mean() > 0.10


def test_one_real_effect_is_found_with_fewer_seeds_than_a_fixed_design_of_the_same_power():
    design = Design(min_seeds=3, max_seeds=10, comparisons=1)
    found = simulate(design, [1.0], studies=STUDIES, seed=2)
    power = found.rejection_rate[0]
    assert power > 0.6
    assert found.mean_trials < 2 * fixed_design_seeds(1.0, power)


def test_with_settings_mostly_without_effect_a_fixed_design_runs_fewer_trials():
    # Null settings run to the most seeds, and the baseline with them.
    design = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(design, [1.0, 0.0, 0.0], studies=STUDIES, seed=2)
    seeds = fixed_design_seeds(1.0, found.rejection_rate[0], alpha=design.decision_alpha)
    assert found.mean_trials > 4 * seeds


def test_an_estimate_where_the_interval_excluded_zero_overstates_the_effect():
    design = Design(min_seeds=3, max_seeds=10, comparisons=1, precision=1.0)
    found = simulate(design, [1.0], studies=STUDIES, seed=2)
    estimates, decisions = found.estimates[:, 0], found.decisions[:, 0]
    assert estimates[decisions == EFFECT].mean() > 1.1
    assert estimates[decisions == PRECISE].mean() < 0.9  # a precision stop: towards zero


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
