"""Statistics for ablation reports: confidence intervals, paired tests against a baseline, Holm.

Pure functions on numpy arrays and pandas tables; nothing here reads files or draws.

The design follows the advice of Musgrave et al. ("A Metric Learning Reality Check", 2020): run
several seeds per setting, report confidence intervals, and compare settings on the same seeds.
Each setting is compared with the baseline setting paired by seed (the seed fixes the data split
order and the initialisation, so pairing removes that shared noise), and the p-values of all
settings are corrected together with Holm's step-down method. A study's contrasts (each method
against another, such as an add-on against the loss it adds to) are compared the same way, as a
Holm family of their own (`compare_pairs`).

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
from gapan.sequential import holm, paired_differences

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


# The Holm families of a study's comparisons: each setting against the baseline, and each of
# study.json's contrasts (a method against the method it is contrasted with), corrected separately.
BASELINE_FAMILY = "baseline"
CONTRASTS_FAMILY = "contrasts"
FAMILIES = (BASELINE_FAMILY, CONTRASTS_FAMILY)

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
        `compare_pairs` of each setting with the baseline.
    """
    pairs = [(setting, baseline) for setting in settings if setting != baseline]
    return compare_pairs(values, pairs, alpha)


def compare_pairs(
    values: pd.DataFrame, pairs: Sequence[tuple[str, str]], alpha: float = ALPHA
) -> pd.DataFrame:
    """Compare each setting with the setting it is paired with, paired by seed, Holm-corrected
    across the pairs: one Holm family, whatever each row is compared with.

    Args:
        values: Columns `setting`, `seed`, `value` (one row per usable trial).
        pairs: (setting, the setting it is compared with), in report order; each setting once.
        alpha: Family-wise error rate for `significant`.

    Returns:
        One row per pair with `COMPARISON_COLUMNS` (`baseline` is the setting compared with):
        the mean difference (setting minus that one) and its t-interval, the test run and its
        p-value, the Holm-adjusted p-value, whether it is below `alpha`, Cohen's d_z, and a note
        such as `TOO_FEW_SEEDS`.
    """
    rows = []
    for setting, baseline in pairs:
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

OVER_SEEDS = "over seeds"
OVER_SEEDS_AND_CLASSES = "over seeds and classes"


@dataclass(frozen=True)
class ClassSeedEstimate:
    """A mean paired difference with its standard error over seeds and classes, and the
    Satterthwaite degrees of freedom of its Student-t interval and test."""

    mean: float
    standard_error: float
    degrees_of_freedom: float
    seeds: int
    classes: int

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if not math.isfinite(self.standard_error):
            return math.nan, math.nan
        critical = stats.t.ppf((1 + confidence) / 2, self.degrees_of_freedom)
        return (
            self.mean - critical * self.standard_error,
            self.mean + critical * self.standard_error,
        )

    @property
    def p_value(self) -> float:
        """Two-sided, against no difference."""
        if not math.isfinite(self.standard_error):
            return math.nan
        if self.standard_error == 0:
            return 1.0 if self.mean == 0 else 0.0
        statistic = abs(self.mean) / self.standard_error
        return float(2 * stats.t.sf(statistic, self.degrees_of_freedom))


def class_differences(
    values: pd.DataFrame, setting: str, baseline: str, seeds: Sequence[Any] | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """A setting's per-class scores minus the baseline's, paired by seed and class.

    Args:
        values: Columns `setting`, `seed`, `class`, `queries`, `value` (one row per trial and
            class).
        setting: The setting compared.
        baseline: The baseline setting.
        seeds: Only these seeds (those the comparison over seeds paired); None: every seed both
            ran.

    Returns:
        The differences, seeds as rows and classes as columns, over the seeds both ran and the
        classes both scored in every one of them, and each class's query count (its weight in
        the mean over queries).
    """
    own = values[values["setting"] == setting]
    base = values[values["setting"] == baseline]
    table = own.pivot_table(index="seed", columns="class", values="value", aggfunc="mean")
    base_table = base.pivot_table(index="seed", columns="class", values="value", aggfunc="mean")
    shared = table.index.intersection(base_table.index)
    if seeds is not None:
        shared = shared.intersection(pd.Index(list(seeds)))
    classes = table.columns.intersection(base_table.columns)
    differences = table.loc[shared, classes] - base_table.loc[shared, classes]
    differences = differences.loc[:, differences.notna().all(axis=0)]
    queries = base.groupby("class")["queries"].max().reindex(differences.columns)
    return differences, queries


def class_seed_interval(differences: np.ndarray, queries: np.ndarray) -> ClassSeedEstimate:
    """The mean over queries of paired differences, with its standard error over seeds and
    classes.

    The differences of S seeds by C classes are read as a crossed design, d[s, c] = mu + a_s +
    b_c + e_sc: a seed's shift, a class's own difference, and noise. Other seeds redraw a_s and
    e_sc; other unseen classes redraw b_c. The estimate weighs each class by its queries (w_c,
    summing to 1), so it is the difference of the study's metric, a mean over queries, and its
    variance is var(a) / S + var(b) sum(w^2) + var(e) sum(w^2) / S. Each part is estimated by
    the method of moments from three sums of squares: the seeds' weighted means, the classes'
    means over seeds (weighted by w) and the doubly centred cells; the interval is Student-t
    with Satterthwaite's degrees of freedom. Unlike a bootstrap of a few seeds, this sees all
    of the seeds' variance (`bench.class_intervals` compares the two).

    Args:
        differences: Shape (seeds, classes): setting minus baseline per seed and class.
        queries: Each class's query count.

    Returns:
        The estimate; its standard error is NaN below two seeds or two classes.

    References:
        Searle, Casella and McCulloch, "Variance Components" (1992), chapter 4 (balanced
        crossed designs, ANOVA estimators). Satterthwaite, "An approximate distribution of
        estimates of variance components", Biometrics Bulletin 2 (1946).
    """
    differences = np.asarray(differences, dtype=float)
    n_seeds, n_classes = differences.shape
    if differences.size == 0:
        return ClassSeedEstimate(math.nan, math.nan, math.nan, n_seeds, n_classes)
    weights = np.asarray(queries, dtype=float) / float(np.sum(queries))
    by_seed = differences @ weights
    mean = float(by_seed.mean())
    if n_seeds < 2 or n_classes < 2:
        return ClassSeedEstimate(mean, math.nan, math.nan, n_seeds, n_classes)
    squared_weights = float(np.sum(weights**2))
    by_class = differences.mean(axis=0)
    class_mean = float(weights @ by_class)
    # Each sum of squares over its expectation's multiplier: var(a) + var(e) sum(w^2);
    # var(b) + var(e) / S; var(e).
    seed_part = float(by_seed.var(ddof=1))
    class_part = float(weights @ (by_class - class_mean) ** 2) / (1 - squared_weights)
    cells = differences - by_seed[:, None] - by_class[None, :] + class_mean
    cell_part = float(weights @ (cells**2).sum(axis=0)) / ((n_seeds - 1) * (1 - squared_weights))
    terms = [
        (seed_part / n_seeds, n_seeds - 1),
        (class_part * squared_weights, n_classes - 1),
        (-cell_part * squared_weights / n_seeds, (n_seeds - 1) * (n_classes - 1)),
    ]
    variance = sum(term for term, _ in terms)
    # Both of the first two terms alone are unbiased for a part of the variance: never below.
    variance = max(variance, terms[0][0], terms[1][0])
    spread = sum(term**2 / freedom for term, freedom in terms)
    freedom = variance**2 / spread if spread > 0 else math.inf
    return ClassSeedEstimate(mean, math.sqrt(variance), freedom, n_seeds, n_classes)


CLASS_COLUMNS = [
    "classes",
    "class_ci_low",
    "class_ci_high",
    "class_p_value",
    "class_p_holm",
    "significant_over_seeds",
    "significant_over_classes",
    "decided_by",
    "equivalence_margin",
    "equivalence_low",
    "equivalence_high",
    "equivalent",
]
NO_CLASS_SCORES = "no per-class scores for this setting: not assessed over classes"


def with_class_intervals(
    comparisons: pd.DataFrame,
    seed_pairs: dict[str, pd.DataFrame],
    class_values: pd.DataFrame | None,
    margin: float = 0.0,
    alpha: float = ALPHA,
    design: sequential.Design | None = None,
) -> pd.DataFrame:
    """Add the interval over seeds and classes, which kind decides, and equivalence.

    Each comparison gets `class_seed_interval` over the same seeds; where it has a test over
    seeds, its p-value too, Holm-corrected over the same family (the table's tested settings).
    A difference is `significant` only when both kinds' Holm-adjusted p-values are at most
    `alpha`; `decided_by` names the kind with the larger one. In a study with per-class scores
    a setting without them is not significant. A comparison is `equivalent` within +-`margin`
    when the (1 - 2 alpha / k) interval of every kind lies inside it: two one-sided tests per
    setting, Bonferroni over the k settings compared.

    Args:
        comparisons: `compare_pairs`' (or `compare_to_baseline`'s) or `sequential_comparisons`'
            table; each row is compared with the setting in its `baseline` column.
        seed_pairs: Each setting's `paired_differences` with that setting.
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
    equivalence_alpha = 2 * alpha / max(len(table), 1)
    rows = [
        _class_interval_row(row, seed_pairs, class_values, margin, alpha, equivalence_alpha, design)
        for row in table.itertuples()
    ]
    table = table.join(pd.DataFrame(rows, index=table.index, columns=list(rows[0]) if rows else []))
    for column in ("classes", "class_ci_low", "class_ci_high", "class_p_value"):
        if column not in table:
            table[column] = math.nan
    table["class_p_holm"] = holm(table["class_p_value"]) if len(table) else []
    _decide_significance(table, class_values is not None, alpha)
    if "equivalence_margin" not in table:
        table["equivalence_margin"] = margin
        table["equivalence_low"] = table["equivalence_high"] = math.nan
    inside = (table["equivalence_low"] > -margin) & (table["equivalence_high"] < margin)
    table["equivalent"] = (margin > 0) & inside
    return table[[*comparisons.columns, *CLASS_COLUMNS]]


def _class_interval_row(
    row: Any,
    seed_pairs: dict[str, pd.DataFrame],
    class_values: pd.DataFrame | None,
    margin: float,
    alpha: float,
    equivalence_alpha: float,
    design: sequential.Design | None,
) -> dict[str, Any]:
    """One comparison's interval over seeds and classes and its equivalence interval (both
    kinds' widest bounds), as the columns `with_class_intervals` adds."""
    pairs = seed_pairs.get(row.setting, pd.DataFrame(columns=["seed", "difference"]))
    estimate = None
    if class_values is not None:
        differences, queries = class_differences(
            class_values, row.setting, row.baseline, pairs["seed"]
        )
        estimate = class_seed_interval(differences.to_numpy(), queries.to_numpy())
    class_low, class_high = estimate.interval(1 - alpha) if estimate else (math.nan,) * 2
    low, high = _seed_equivalence_interval(
        pairs["difference"].to_numpy(dtype=float), equivalence_alpha, design
    )
    if estimate is not None:
        over_classes = estimate.interval(1 - equivalence_alpha)
        low, high = min(low, over_classes[0]), max(high, over_classes[1])
    if margin <= 0 or not (math.isfinite(low) and math.isfinite(high)):
        low = high = math.nan  # no margin, or no interval of some kind: no equivalence test
    return {
        "classes": estimate.classes if estimate else 0,
        "class_ci_low": class_low,
        "class_ci_high": class_high,
        # Tested only where the seeds were, so that both Holm families match.
        "class_p_value": estimate.p_value if estimate and row.test != NO_TEST else math.nan,
        "equivalence_margin": margin,
        "equivalence_low": float(low),
        "equivalence_high": float(high),
    }


def _decide_significance(table: pd.DataFrame, has_class_scores: bool, alpha: float) -> None:
    """Set, in `table`, significance over seeds, over classes and both, and `decided_by`."""
    seeds_significant = table["significant"].astype(bool)
    assessed = np.isfinite(table["class_p_holm"].astype(float))
    class_significant = assessed & (table["class_p_holm"] <= alpha)
    table["significant_over_seeds"] = seeds_significant
    table["significant_over_classes"] = class_significant
    if not has_class_scores:
        table["significant"] = seeds_significant
    else:
        table["significant"] = seeds_significant & class_significant
        unassessed = ~assessed & (table["test"] != NO_TEST)
        table.loc[unassessed, "note"] = NO_CLASS_SCORES
    by_classes = assessed & (table["class_p_holm"] >= table["p_holm"].fillna(-1))
    table["decided_by"] = np.where(by_classes, OVER_SEEDS_AND_CLASSES, OVER_SEEDS)


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


BETTER, WORSE, EQUIVALENT = "better", "worse", "equivalent"
SEEDS_ONLY = "significant over seeds only"
PRECISE_ENOUGH = "precise enough, not decided"
UNDECIDED = "undecided"
NO_VERDICT = "no test"
VERDICTS = (BETTER, WORSE, EQUIVALENT, SEEDS_ONLY, PRECISE_ENOUGH, UNDECIDED, NO_VERDICT)


def verdict(row: Any, mode: str) -> str:
    """The verdict on one comparison row, one of `VERDICTS`.

    Better or worse needs every interval kind the study has (over seeds, and over seeds and
    classes) to find the difference after Holm. Equivalent needs the equivalence test. Anything
    else is undecided, never "equal": significant over seeds only, precise enough but not
    decided (an adaptive study's precision stop, `stopped_for`), or undecided.
    """
    if row.test == NO_TEST or not math.isfinite(row.p_holm):
        return NO_VERDICT
    if row.significant:
        improves = row.mean_difference > 0 if mode == "max" else row.mean_difference < 0
        return BETTER if improves else WORSE
    if getattr(row, "equivalent", False):
        return EQUIVALENT
    if getattr(row, "significant_over_seeds", False):
        return SEEDS_ONLY
    if getattr(row, "stopped_for", "") == sequential.PRECISE:
        return PRECISE_ENOUGH
    return UNDECIDED
