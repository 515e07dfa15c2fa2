"""Intervals over classes as well as seeds, and equivalence (reports/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gapan.sequential import holm
from reports import stats


def simulated_study(
    generator: np.random.Generator,
    seeds: int,
    classes: int,
    class_sd: float,
    seed_sd: float,
    cell_sd: float,
    effect: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired differences of one study whose classes are drawn afresh from a population with
    mean difference `effect`: per-class effects, a per-seed offset and per-cell noise."""
    per_class = effect + class_sd * generator.standard_normal(classes)
    per_seed = seed_sd * generator.standard_normal((seeds, 1))
    cells = cell_sd * generator.standard_normal((seeds, classes))
    queries = generator.integers(5, 30, classes).astype(float)
    return per_class + per_seed + cells, queries


def coverage(seeds: int, classes: int, class_sd: float, seed_sd: float, cell_sd: float):
    """How often the interval over seeds and the one over seeds and classes cover the
    population's difference (0), over 1,000 studies each drawing new classes."""
    generator = np.random.default_rng(seeds * 1000 + classes)
    studies, seed_covers, class_covers = 1000, 0, 0
    for _ in range(studies):
        differences, queries = simulated_study(
            generator, seeds, classes, class_sd, seed_sd, cell_sd
        )
        per_seed = (differences * queries).sum(axis=1) / queries.sum()
        interval = stats.t_interval(per_seed)
        seed_covers += interval.low <= 0 <= interval.high
        estimate = stats.class_seed_interval(differences, queries)
        low, high = estimate.interval(0.95)
        class_covers += low <= 0 <= high
        # The point estimate is the study's metric difference, a mean over queries.
        assert estimate.mean == pytest.approx(per_seed.mean())
    return seed_covers / studies, class_covers / studies


MONTE_CARLO_ERROR = math.sqrt(0.95 * 0.05 / 1000)


def test_the_interval_over_classes_covers_when_classes_dominate_and_seed_intervals_do_not():
    # What a referee asks: would the effect hold on other unseen classes?
    over_seeds, over_classes = coverage(5, 40, 1.0, 0.05, 0.1)
    assert over_seeds < 0.80
    assert abs(over_classes - 0.95) <= 3 * MONTE_CARLO_ERROR


@pytest.mark.parametrize("seeds, classes", [(3, 78), (3, 18)])
def test_the_interval_over_classes_covers_with_few_seeds_and_both_sources(seeds, classes):
    # Seeds and classes both matter, and three seeds are few: a bootstrap of the seeds would
    # see two thirds of their variance.
    _, over_classes = coverage(seeds, classes, 0.3, 0.1, 0.1)
    assert abs(over_classes - 0.95) <= 3 * MONTE_CARLO_ERROR


def test_with_equal_weights_the_variance_is_the_crossed_anova_one() -> None:
    # Balanced two-way layout without replication: var(mean) = (MS_seeds + MS_classes -
    # MS_residual) / (S C).
    generator = np.random.default_rng(4)
    differences = generator.normal(size=(4, 6)) + generator.normal(size=(4, 1))
    seeds, classes = differences.shape
    grand = differences.mean()
    seed_means, class_means = differences.mean(axis=1), differences.mean(axis=0)
    ms_seeds = classes * ((seed_means - grand) ** 2).sum() / (seeds - 1)
    ms_classes = seeds * ((class_means - grand) ** 2).sum() / (classes - 1)
    residual = differences - seed_means[:, None] - class_means[None, :] + grand
    ms_residual = (residual**2).sum() / ((seeds - 1) * (classes - 1))
    expected = (ms_seeds + ms_classes - ms_residual) / (seeds * classes)
    estimate = stats.class_seed_interval(differences, np.ones(classes))
    assert estimate.standard_error**2 == pytest.approx(expected)
    assert estimate.mean == pytest.approx(grand)


def test_class_p_value_agrees_with_its_interval() -> None:
    generator = np.random.default_rng(3)
    decided = []
    for effect in (0.0, 0.05, 0.3, -0.3, 0.1):
        differences, queries = simulated_study(generator, 5, 30, 0.3, 0.05, 0.1, effect)
        estimate = stats.class_seed_interval(differences, queries)
        low, high = estimate.interval(0.95)
        decided.append(low > 0 or high < 0)
        assert decided[-1] == (estimate.p_value <= 0.05)
    assert any(decided) and not all(decided)


def test_the_interval_over_classes_needs_two_seeds_and_two_classes() -> None:
    found = stats.class_seed_interval(np.array([[0.1, 0.2]]), np.array([1.0, 3.0]))
    assert found.mean == pytest.approx(0.175)
    assert math.isnan(found.interval()[0]) and math.isnan(found.p_value)


def class_table(differences: dict[str, np.ndarray], queries: np.ndarray) -> pd.DataFrame:
    """Per-class values of a baseline at 0.5 and each setting at 0.5 plus its differences."""
    rows = []
    seeds, classes = next(iter(differences.values())).shape
    for seed in range(seeds):
        for index in range(classes):
            base = {"seed": seed, "class": f"c{index}", "queries": queries[index]}
            rows.append({**base, "setting": "0", "value": 0.5})
            for setting, values in differences.items():
                rows.append({**base, "setting": setting, "value": 0.5 + values[seed, index]})
    return pd.DataFrame(rows)


def comparisons_of(
    differences: dict[str, np.ndarray], queries: np.ndarray, margin: float
) -> pd.DataFrame:
    class_values = class_table(differences, queries)
    weights = queries / queries.sum()
    seed_values = pd.DataFrame(
        [
            {"setting": setting, "seed": seed, "value": value}
            for setting, values in {"0": None, **differences}.items()
            for seed, value in enumerate(
                np.full(len(next(iter(differences.values()))), 0.5)
                if values is None
                else 0.5 + values @ weights
            )
        ]
    )
    table = stats.compare_to_baseline(seed_values, "0", ["0", *differences])
    seed_pairs = {
        setting: stats.paired_differences(seed_values, setting, "0") for setting in differences
    }
    return stats.with_class_intervals(table, seed_pairs, class_values, margin).set_index("setting")


def test_seed_significant_effect_carried_by_few_classes_is_not_significant_over_classes() -> None:
    generator = np.random.default_rng(11)
    seeds, classes = 5, 40
    noise = 0.002 * generator.standard_normal((seeds, classes))
    few = noise.copy()
    few[:, :2] += 0.3  # two classes carry the whole effect, identically in every seed
    broad = noise + 0.02
    table = comparisons_of({"few": few, "broad": broad}, np.full(classes, 10.0), margin=0.0)
    assert table.loc["few", "significant_over_seeds"]
    assert not table.loc["few", "significant_over_classes"]
    assert not table.loc["few", "significant"]
    assert table.loc["few", "decided_by"] == stats.OVER_SEEDS_AND_CLASSES
    assert table.loc["broad", "significant"]
    assert table.loc["broad", "class_ci_low"] > 0


def test_equivalence_needs_the_interval_inside_the_margin() -> None:
    generator = np.random.default_rng(5)
    seeds, classes = 8, 40
    tight = 0.001 * generator.standard_normal((seeds, classes))
    wide = 0.02 * generator.standard_normal((seeds, classes)) + 0.02 * generator.standard_normal(
        (seeds, 1)
    )
    table = comparisons_of({"tight": tight, "wide": wide}, np.full(classes, 10.0), margin=0.01)
    assert table.loc["tight", "equivalent"]
    assert -0.01 < table.loc["tight", "equivalence_low"] < table.loc["tight", "equivalence_high"]
    assert not table.loc["wide", "equivalent"]
    # Without a margin nothing is called equivalent, however tight.
    none = comparisons_of({"tight": tight}, np.full(classes, 10.0), margin=0.0)
    assert not none.loc["tight", "equivalent"]


def test_equivalence_interval_is_wider_than_the_reported_one_with_several_settings() -> None:
    # Bonferroni over the k settings: the (1 - 2 alpha / k) interval, k = 3 here, is the 96.7%
    # interval, wider than the 95% one the table reports.
    generator = np.random.default_rng(2)
    differences = {name: 0.003 * generator.standard_normal((6, 20)) for name in ("a", "b", "c")}
    table = comparisons_of(differences, np.full(20, 10.0), margin=0.05)
    for row in table.itertuples():
        assert row.equivalence_low <= min(row.ci_low, row.class_ci_low)
        assert row.equivalence_high >= max(row.ci_high, row.class_ci_high)


def test_both_holm_families_hold_the_same_settings_and_missing_classes_decide_nothing() -> None:
    generator = np.random.default_rng(8)
    effect = 0.05 + 0.001 * generator.standard_normal((5, 20))
    class_values = class_table({"a": effect, "b": effect}, np.full(20, 10.0))
    # Setting b kept no per-class scores.
    class_values = class_values[class_values["setting"] != "b"]
    seed_values = pd.DataFrame(
        [{"setting": "0", "seed": seed, "value": 0.5} for seed in range(5)]
        + [{"setting": "a", "seed": seed, "value": 0.55 + 0.001 * seed} for seed in range(5)]
        + [{"setting": "b", "seed": seed, "value": 0.55 + 0.001 * seed} for seed in range(5)]
        + [{"setting": "c", "seed": seed, "value": 0.55} for seed in range(2)]
    )
    table = stats.compare_to_baseline(seed_values, "0", ["0", "a", "b", "c"])
    pairs = {s: stats.paired_differences(seed_values, s, "0") for s in ("a", "b", "c")}
    class_values = pd.concat(
        [class_values, class_table({"c": effect[:2]}, np.full(20, 10.0)).query("setting == 'c'")]
    )
    found = stats.with_class_intervals(table, pairs, class_values).set_index("setting")
    assert found.loc["a", "significant"]
    # No test over seeds (2 pairs): no p over classes either, so the families match.
    assert math.isnan(found.loc["c", "class_p_value"])
    assert found.loc["b", "significant_over_seeds"] and not found.loc["b", "significant"]
    assert found.loc["b", "note"] == stats.NO_CLASS_SCORES
    assert stats.verdict(found.loc["b"], "max") == stats.SEEDS_ONLY


# Contrasts: pairs of settings other than (setting, baseline), a Holm family of their own.


def contrast_values(seeds: int = 8) -> pd.DataFrame:
    """A baseline, two losses and each loss with an add-on: the first add-on gains 0.04 on every
    seed, the second nothing; every seed shifts every setting alike."""
    generator = np.random.default_rng(21)
    shifts = 0.02 * generator.standard_normal(seeds)
    means = {
        "base": 0.5,
        "loss_a": 0.48,
        "loss_a_addon": 0.52,
        "loss_b": 0.47,
        "loss_b_addon": 0.47,
    }
    return pd.DataFrame(
        [
            {
                "setting": setting,
                "seed": seed,
                "value": mean + shifts[seed] + 0.002 * generator.standard_normal(),
            }
            for setting, mean in means.items()
            for seed in range(seeds)
        ]
    )


def test_contrasts_are_holm_corrected_over_themselves_only() -> None:
    values = contrast_values()
    contrasts = stats.compare_pairs(
        values, [("loss_a_addon", "loss_a"), ("loss_b_addon", "loss_b")]
    )
    assert list(contrasts["baseline"]) == ["loss_a", "loss_b"]
    assert list(contrasts["p_holm"]) == pytest.approx(list(holm(contrasts["p_value"])))
    gain = contrasts.set_index("setting").loc["loss_a_addon"]
    own = values.set_index(["setting", "seed"])["value"]
    expected = (own.loc["loss_a_addon"] - own.loc["loss_a"]).mean()
    assert gain["mean_difference"] == pytest.approx(expected)
    assert gain["mean_difference"] == pytest.approx(0.04, abs=0.005)
    assert gain["significant"] and gain["ci_low"] > 0
    assert stats.verdict(gain, "max") == stats.BETTER
    assert stats.verdict(gain, "min") == stats.WORSE
    same = contrasts.set_index("setting").loc["loss_b_addon"]
    assert stats.verdict(same, "max") == stats.UNDECIDED


def test_comparing_to_the_baseline_is_comparing_pairs_with_it() -> None:
    values = contrast_values()
    settings = ["base", "loss_a", "loss_b", "loss_a_addon"]
    pairs = [(setting, "base") for setting in settings[1:]]
    pd.testing.assert_frame_equal(
        stats.compare_to_baseline(values, "base", settings), stats.compare_pairs(values, pairs)
    )
