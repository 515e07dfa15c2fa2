"""Statistics for ablation reports: confidence intervals, paired tests against a baseline, Holm.

Pure functions on numpy arrays and pandas tables; nothing here reads files or draws.

The design follows the advice of Musgrave et al. ("A Metric Learning Reality Check", 2020): run
several seeds per setting, report confidence intervals, and compare settings on the same seeds.
Each setting is compared with the baseline setting paired by seed (the seed fixes the data split
order and the initialisation, so pairing removes that shared noise), and the p-values of all
settings are corrected together with Holm's step-down method.

References:
    Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scandinavian Journal of
    Statistics 6 (1979). Lakens, "Calculating and reporting effect sizes", Frontiers in
    Psychology 4 (2013), for Cohen's d_z.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gapan import sequential
from gapan.sequential import holm

ALPHA = 0.05
CONFIDENCE = 0.95
# Below this many pairs no test is run; from the second threshold on, Wilcoxon replaces the t-test
# (with five pairs or fewer the exact two-sided Wilcoxon p-value cannot go below 0.0625).
MIN_PAIRS_FOR_TEST = 3
MIN_PAIRS_FOR_WILCOXON = 6
TOO_FEW_SEEDS = "too few seeds for a test"
WILCOXON = "Wilcoxon signed-rank"
PAIRED_T = "paired t-test"
NO_TEST = "none"
SEQUENTIAL_T = "group-sequential t"


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval; `low` and `high` are NaN below two values."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class TestResult:
    """The outcome of a paired test; `name` is `NO_TEST` and `p_value` NaN when none was run."""

    name: str
    statistic: float
    p_value: float
    note: str = ""


def _finite(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def t_interval(
    values: Sequence[float] | np.ndarray | pd.Series, confidence: float = CONFIDENCE
) -> Interval:
    """The mean and its Student-t confidence interval; non-finite values are ignored.

    Args:
        values: One value per seed.
        confidence: Coverage of the interval.

    Returns:
        An `Interval`; with one value its bounds are NaN, with none every field but `n` is NaN.
    """
    array = _finite(values)
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half_width = stats.t.ppf((1 + confidence) / 2, n - 1) * array.std(ddof=1) / math.sqrt(n)
    return Interval(mean, float(mean - half_width), float(mean + half_width), n)


def choose_test(n_pairs: int) -> str:
    """The paired test for this many pairs: Wilcoxon from 6, the t-test from 3, none below."""
    if n_pairs >= MIN_PAIRS_FOR_WILCOXON:
        return WILCOXON
    if n_pairs >= MIN_PAIRS_FOR_TEST:
        return PAIRED_T
    return NO_TEST


def smallest_p_value(test: str, n_pairs: int) -> float:
    """The smallest two-sided p-value a test can return with this many pairs.

    Exact Wilcoxon signed-rank: every sign the same, 2 / 2^n (0.031 for 6 pairs); the t-test
    and no test: 0 (no floor).
    """
    return 2.0 / 2.0**n_pairs if test == WILCOXON else 0.0


def paired_test(differences: Sequence[float] | np.ndarray | pd.Series) -> TestResult:
    """Test whether paired differences (setting minus baseline, one per seed) centre on zero.

    Two-sided; Wilcoxon signed-rank with 6 or more pairs, the paired t-test with 3 to 5 (the
    t-test on the differences), no test with fewer. Zero differences enter Wilcoxon as scipy's
    default ("wilcox": dropped).
    """
    array = _finite(differences)
    name = choose_test(len(array))
    if name == NO_TEST:
        return TestResult(NO_TEST, math.nan, math.nan, TOO_FEW_SEEDS)
    spread = float(array.std(ddof=1))
    if np.all(array == 0):
        return TestResult(name, math.nan, 1.0, "all differences are zero")
    if name == PAIRED_T and spread <= 1e-12 * max(1.0, float(np.abs(array).max())):
        return TestResult(
            name, math.nan, math.nan, "identical differences: the t-test is undefined"
        )
    with warnings.catch_warnings():
        # Ties and zeros switch scipy to the normal approximation and warn; the result stands.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        if name == WILCOXON:
            result = stats.wilcoxon(array)
        else:
            result = stats.ttest_1samp(array, 0.0)
    return TestResult(name, float(result.statistic), float(result.pvalue))


def cohens_dz(differences: Sequence[float] | np.ndarray | pd.Series) -> float:
    """Cohen's d_z: the mean paired difference over the standard deviation of the differences.

    NaN with fewer than two differences or when they do not vary.
    """
    array = _finite(differences)
    if len(array) < 2:
        return math.nan
    spread = float(array.std(ddof=1))
    if spread <= 1e-12 * max(1.0, float(np.abs(array).max())):
        return math.nan
    return float(array.mean() / spread)


def paired_differences(values: pd.DataFrame, setting: str, baseline: str) -> pd.DataFrame:
    """Pair a setting's values with the baseline's by seed.

    Args:
        values: Columns `setting`, `seed` and `value`; several rows for one setting and seed are
            averaged.
        setting: The setting compared.
        baseline: The baseline setting.

    Returns:
        Columns `seed`, `value`, `baseline_value`, `difference` (value minus baseline), one row
        per seed that both settings ran, ordered by seed.
    """
    means = values.groupby(["setting", "seed"], sort=True)["value"].mean()
    if setting not in means.index.get_level_values(0):
        own = pd.Series(dtype=float)
    else:
        own = means.loc[setting]
    if baseline not in means.index.get_level_values(0):
        base = pd.Series(dtype=float)
    else:
        base = means.loc[baseline]
    pairs = pd.concat({"value": own, "baseline_value": base}, axis=1, join="inner")
    pairs.index.name = "seed"
    pairs = pairs.reset_index()
    pairs["difference"] = pairs["value"] - pairs["baseline_value"]
    return pairs[["seed", "value", "baseline_value", "difference"]]


COMPARISON_COLUMNS = [
    "setting",
    "baseline",
    "n_pairs",
    "mean_difference",
    "ci_low",
    "ci_high",
    "ci_confidence",
    "test",
    "statistic",
    "p_value",
    "p_holm",
    "significant",
    "effect_size_dz",
    "note",
]


def compare_to_baseline(
    values: pd.DataFrame, baseline: str, settings: Sequence[str], alpha: float = ALPHA
) -> pd.DataFrame:
    """Compare every setting with the baseline, paired by seed, Holm-corrected across settings.

    Args:
        values: Columns `setting`, `seed`, `value` (one row per usable trial).
        baseline: The baseline setting.
        settings: The settings to compare, in report order (the baseline is skipped).
        alpha: Family-wise error rate for `significant`.

    Returns:
        One row per setting with `COMPARISON_COLUMNS`: the mean difference (setting minus
        baseline) and its t-interval, the test run and its p-value, the Holm-adjusted p-value,
        whether it is below `alpha`, Cohen's d_z, and a note such as `TOO_FEW_SEEDS`.
    """
    rows = []
    for setting in settings:
        if setting == baseline:
            continue
        differences = paired_differences(values, setting, baseline)["difference"]
        interval = t_interval(differences)
        test = paired_test(differences)
        rows.append(
            {
                "setting": setting,
                "baseline": baseline,
                "n_pairs": interval.n,
                "mean_difference": interval.mean,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "ci_confidence": CONFIDENCE,
                "test": test.name,
                "statistic": test.statistic,
                "p_value": test.p_value,
                "effect_size_dz": cohens_dz(differences),
                "note": test.note,
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_holm",)])
    table["p_holm"] = holm(table["p_value"]) if len(table) else np.array([], dtype=float)
    table["significant"] = (table["p_holm"] < alpha).astype(bool)
    tested = int(np.isfinite(table["p_value"].astype(float)).sum())
    for index, row in table.iterrows():
        # Holm multiplies the smallest p-value by the number of tests; where even the test's
        # smallest possible p cannot get below alpha that way, the seeds cannot show an effect.
        floor = smallest_p_value(row["test"], int(row["n_pairs"])) * tested
        if row["note"] == "" and floor >= alpha:
            table.loc[index, "note"] = (
                f"with {row['n_pairs']} pairs and {tested} tests no result can reach "
                f"{alpha} after Holm: add seeds"
            )
    return table[COMPARISON_COLUMNS]


def sequential_comparisons(
    values: pd.DataFrame, baseline: str, settings: Sequence[str], design: sequential.Design
) -> pd.DataFrame:
    """`compare_to_baseline` for an adaptive study: the same columns, from the group-sequential
    design its seeds were chosen by. The p-value is the repeated p-value at each setting's last
    look, Holm-adjusted; the interval is the repeated interval at the level Holm tests that
    setting at (alpha / m for the smallest p-value, alpha / (m - 1) for the next, ...), so a
    significant setting's interval excludes zero. A setting with too few pairs for a look
    counts in Holm's m with p = 1."""
    rows, differences = [], {}
    for setting in settings:
        if setting == baseline:
            continue
        pairs = paired_differences(values, setting, baseline)
        differences[setting] = pairs.sort_values("seed")["difference"].to_numpy(dtype=float)
        enough = len(differences[setting]) >= design.min_seeds
        rows.append(
            {
                "setting": setting,
                "baseline": baseline,
                "n_pairs": len(differences[setting]),
                "test": SEQUENTIAL_T,
                "statistic": math.nan,
                "p_value": sequential.sequential_p(differences[setting], design),
                "effect_size_dz": cohens_dz(differences[setting]),
                "note": "" if enough else TOO_FEW_SEEDS,
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c != "p_holm"])
    table["p_holm"] = holm(table["p_value"]) if len(table) else np.array([], dtype=float)
    table["significant"] = (table["p_holm"] <= design.alpha).astype(bool)
    ranks = table["p_value"].rank(method="first").astype(int) - 1 if len(table) else []
    for index, rank in zip(table.index, ranks, strict=True):
        level = design.alpha / (len(table) - rank)
        mean, low, high = sequential.repeated_interval(
            differences[table.loc[index, "setting"]], design, level
        )
        table.loc[index, ["mean_difference", "ci_low", "ci_high"]] = [mean, low, high]
        table.loc[index, "ci_confidence"] = 1 - level
    return table[COMPARISON_COLUMNS]


SUMMARY_COLUMNS = ["setting", "n", "mean", "std", "ci_low", "ci_high"]


def summarize_settings(values: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """The mean of each setting over seeds with its 95% t-interval.

    Args:
        values: Columns `setting` and `value`.
        settings: Settings in report order; a setting without values gets n = 0 and NaN.
    """
    rows = []
    for setting in settings:
        own = _finite(values.loc[values["setting"] == setting, "value"])
        interval = t_interval(own)
        spread = float(own.std(ddof=1)) if len(own) > 1 else math.nan
        rows.append([setting, interval.n, interval.mean, spread, interval.low, interval.high])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def best_index(means: pd.Series, mode: str) -> object | None:
    """The index label of the best finite mean (`mode` "max" or "min"), None when there is none."""
    finite = means[np.isfinite(means.astype(float))]
    if finite.empty:
        return None
    return finite.idxmax() if mode == "max" else finite.idxmin()


# Intervals over classes as well as seeds.

BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0
OVER_SEEDS = "over seeds"
OVER_SEEDS_AND_CLASSES = "over seeds and classes"


@dataclass(frozen=True)
class Bootstrap:
    """A mean paired difference with its standard error over classes and seeds.

    Intervals and p-values are Student-t with `classes` - 1 degrees of freedom: the classes
    are the coarser level, and with a few dozen of them a percentile interval covers visibly
    less than it says.
    """

    mean: float
    standard_error: float
    seeds: int
    classes: int

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if not math.isfinite(self.standard_error):
            return math.nan, math.nan
        half = stats.t.ppf((1 + confidence) / 2, self.classes - 1) * self.standard_error
        return self.mean - half, self.mean + half

    @property
    def p_value(self) -> float:
        """Two-sided, against no difference."""
        if not math.isfinite(self.standard_error):
            return math.nan
        if self.standard_error == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.mean) / self.standard_error, self.classes - 1))


def class_differences(
    values: pd.DataFrame, setting: str, baseline: str
) -> tuple[pd.DataFrame, pd.Series]:
    """A setting's per-class scores minus the baseline's, paired by seed and class.

    Args:
        values: Columns `setting`, `seed`, `class`, `queries`, `value` (one row per trial and
            class).
        setting: The setting compared.
        baseline: The baseline setting.

    Returns:
        The differences, seeds as rows and classes as columns, over the seeds both ran and the
        classes both scored, and each class's query count (its weight in the mean over
        queries).
    """
    own = values[values["setting"] == setting]
    base = values[values["setting"] == baseline]
    table = own.pivot_table(index="seed", columns="class", values="value", aggfunc="mean")
    base_table = base.pivot_table(index="seed", columns="class", values="value", aggfunc="mean")
    seeds = table.index.intersection(base_table.index)
    classes = table.columns.intersection(base_table.columns)
    differences = table.loc[seeds, classes] - base_table.loc[seeds, classes]
    complete = differences.notna().all(axis=0)
    differences = differences.loc[:, complete]
    queries = base.groupby("class")["queries"].max().reindex(differences.columns)
    return differences, queries


def class_seed_bootstrap(
    differences: np.ndarray,
    queries: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Bootstrap:
    """The mean over queries of paired differences, with its standard error over classes and
    seeds.

    A two-level bootstrap: each resample draws the classes with replacement, then the seeds with
    replacement, and keeps every (seed, class) cell's pairing; its mean weighs each drawn class
    by its queries, so the point estimate is the difference of the study's metric (a mean over
    queries). The resamples' variance is scaled by C / (C - 1) for C classes, the bootstrap's
    known shortfall at the class level (the seed level's shortfall is what the interval over
    seeds, shown beside it, covers).

    Args:
        differences: Shape (seeds, classes): setting minus baseline per seed and class.
        queries: Each class's query count.
        resamples: Bootstrap resamples.
        seed: The resampling's seed (fixed: a report rebuilt gives the same numbers).

    References:
        Davison and Hinkley, "Bootstrap Methods and their Application" (1997), section 3.8
        (hierarchical data). Saravanan, Berman and Sober, "Application of the hierarchical
        bootstrap to multi-level data in neuroscience", Neurons, Behavior, Data analysis, and
        Theory (2020).
    """
    differences = np.asarray(differences, dtype=float)
    weights = np.asarray(queries, dtype=float)
    n_seeds, n_classes = differences.shape
    weighted = differences * weights
    mean = float(weighted.sum() / (n_seeds * weights.sum())) if differences.size else math.nan
    if n_seeds < 2 or n_classes < 2:
        return Bootstrap(mean, math.nan, n_seeds, n_classes)
    generator = np.random.default_rng(seed)
    class_counts = generator.multinomial(n_classes, np.full(n_classes, 1 / n_classes), resamples)
    seed_counts = generator.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), resamples)
    totals = ((seed_counts @ weighted) * class_counts).sum(axis=1)
    draws = totals / (n_seeds * (class_counts @ weights))
    error = float(draws.std(ddof=1)) * math.sqrt(n_classes / (n_classes - 1))
    return Bootstrap(mean, error, n_seeds, n_classes)


CLASS_COLUMNS = [
    "classes",
    "class_ci_low",
    "class_ci_high",
    "class_p_value",
    "class_p_holm",
    "significant_over_seeds",
    "significant_over_classes",
    "verdict_interval",
    "verdict_low",
    "verdict_high",
    "equivalence_margin",
    "equivalence_low",
    "equivalence_high",
    "equivalent",
]


def with_class_intervals(
    comparisons: pd.DataFrame,
    seed_differences: dict[str, np.ndarray],
    class_values: pd.DataFrame | None,
    margin: float = 0.0,
    alpha: float = ALPHA,
    design: sequential.Design | None = None,
) -> pd.DataFrame:
    """Add the interval over seeds and classes, the verdict's interval and equivalence.

    Each comparison gets a two-level bootstrap (`class_seed_bootstrap`) whose p-values are
    Holm-corrected over the same family as the seeds' (the table's settings). A difference is
    `significant` only when both kinds find it (the verdict's interval is the wider of the two);
    without per-class scores the seeds' verdict stands alone. A comparison is `equivalent`
    within +-`margin` when the (1 - 2 alpha / k) interval of every kind lies inside it: two
    one-sided tests per setting, Bonferroni over the k settings compared.

    Args:
        comparisons: `compare_to_baseline` or `sequential_comparisons`' table.
        seed_differences: Each setting's paired differences over seeds, in seed order.
        class_values: Columns `setting`, `seed`, `class`, `queries`, `value`; None when the
            study has no per-class scores.
        margin: The equivalence margin in the metric's units; 0 tests no equivalence.
        alpha: The family-wise error rate.
        design: An adaptive study's design: its equivalence intervals are repeated intervals.

    References:
        Schuirmann, "A comparison of the two one-sided tests procedure and the power approach
        for assessing the equivalence of average bioavailability", Journal of
        Pharmacokinetics and Biopharmaceutics 15 (1987). Lakens, "Equivalence tests", Social
        Psychological and Personality Science 8 (2017).
    """
    table = comparisons.copy()
    compared = max(len(table), 1)
    equivalence_alpha = 2 * alpha / compared
    rows = []
    for row in table.itertuples():
        bootstrap = None
        if class_values is not None:
            differences, queries = class_differences(class_values, row.setting, row.baseline)
            if differences.size:
                bootstrap = class_seed_bootstrap(
                    differences.to_numpy(dtype=float), queries.to_numpy(dtype=float)
                )
        seeds = np.asarray(seed_differences.get(row.setting, []), dtype=float)
        class_low, class_high = bootstrap.interval(1 - alpha) if bootstrap else (math.nan,) * 2
        found = {
            "classes": bootstrap.classes if bootstrap else 0,
            "class_ci_low": class_low,
            "class_ci_high": class_high,
            "class_p_value": bootstrap.p_value if bootstrap else math.nan,
            "equivalence_margin": margin,
        }
        low, high = _seed_equivalence_interval(seeds, equivalence_alpha, design)
        if bootstrap is not None and math.isfinite(bootstrap.standard_error):
            class_low, class_high = bootstrap.interval(1 - equivalence_alpha)
            low, high = min(low, class_low), max(high, class_high)
        if margin <= 0 or not (math.isfinite(low) and math.isfinite(high)):
            low = high = math.nan  # no margin, or too few pairs: no equivalence test
        found["equivalence_low"], found["equivalence_high"] = float(low), float(high)
        rows.append(found)
    measured = [
        "classes",
        "class_ci_low",
        "class_ci_high",
        "class_p_value",
        "equivalence_margin",
        "equivalence_low",
        "equivalence_high",
    ]
    table = table.join(pd.DataFrame(rows, index=table.index, columns=measured))
    table["class_p_holm"] = holm(table["class_p_value"]) if len(table) else []
    seeds_significant = table["significant"].astype(bool)
    has_classes = np.isfinite(table["class_p_holm"].astype(float))
    class_significant = has_classes & (table["class_p_holm"] <= alpha)
    table["significant_over_seeds"] = seeds_significant
    table["significant_over_classes"] = class_significant
    table["significant"] = seeds_significant & (class_significant | ~has_classes)
    seed_width = table["ci_high"] - table["ci_low"]
    class_width = table["class_ci_high"] - table["class_ci_low"]
    use_classes = has_classes & (class_width.fillna(-1) > seed_width.fillna(-1))
    table["verdict_interval"] = np.where(use_classes, OVER_SEEDS_AND_CLASSES, OVER_SEEDS)
    table["verdict_low"] = np.where(use_classes, table["class_ci_low"], table["ci_low"])
    table["verdict_high"] = np.where(use_classes, table["class_ci_high"], table["ci_high"])
    inside = (table["equivalence_low"] > -margin) & (table["equivalence_high"] < margin)
    table["equivalent"] = (margin > 0) & inside
    return table[[*comparisons.columns, *CLASS_COLUMNS]]


def _seed_equivalence_interval(
    differences: np.ndarray, alpha: float, design: sequential.Design | None
) -> tuple[float, float]:
    """The interval over seeds at level 1 - alpha (repeated, for an adaptive study)."""
    if len(differences) < MIN_PAIRS_FOR_TEST:
        return math.nan, math.nan
    if design is not None:
        _, low, high = sequential.repeated_interval(differences, design, alpha)
        return low, high
    interval = t_interval(differences, 1 - alpha)
    return interval.low, interval.high


SEEDS_ONLY = "significant over seeds only"


def verdict(row: Any, mode: str) -> str:
    """The verdict on one comparison row: better, worse, equivalent within the margin,
    significant over seeds only, no significant difference, or no test. Better or worse needs
    every interval kind the study has (over seeds, and over seeds and classes) to exclude zero
    after Holm."""
    if row.test == NO_TEST or not math.isfinite(row.p_holm):
        return "no test"
    if row.significant:
        improves = row.mean_difference > 0 if mode == "max" else row.mean_difference < 0
        return "better" if improves else "worse"
    if getattr(row, "equivalent", False):
        return "equivalent"
    if getattr(row, "significant_over_seeds", False):
        return SEEDS_ONLY
    return "no significant difference"
