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
