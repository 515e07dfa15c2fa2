"""Adaptive seeds: when a paired comparison with the baseline is decided, valid under optional
stopping.

A study that adds seeds until a difference looks significant, testing after every seed with an
ordinary t-test, finds effects that are not there far more often than 5% of the time. This
module uses a group-sequential design instead: the comparison is looked at after every seed n
from `Design.min_seeds` to `Design.max_seeds` (N), and rejects at look n when the paired
t-test's nominal p-value is below ``q (n / N)^3``: strict at the first looks, where few seeds
rarely show an effect, and nearly the fixed test's level at the last one, as O'Brien and
Fleming's boundary is. q is set so that, with no effect, the chance of crossing at *any* look is
alpha. The t-statistic of normal paired differences has the same joint distribution over the
looks whatever their variance, so the boundary is exact for t-tests once that distribution is
simulated (`null_statistic`, computed once per design).

From it follow, at every look:

- the repeated confidence interval (`repeated_interval`): mean difference +- t at the look's
  nominal level; such intervals cover the true difference at every look at once with
  probability 1 - alpha, so the one at whichever look the study stops at does too;
- the repeated p-value (`sequential_p`): the smallest alpha whose repeated interval at the
  current look excludes zero, i.e. how often, with no effect, some look's nominal p-value over
  its weight ``(n / N)^3`` falls as low as the current look's. The interval at level alpha
  excludes zero exactly when this p-value is at most alpha.

A comparison is decided when its interval excludes zero (at alpha / m for m comparisons, so the
decisions hold family-wise) or when it is narrower than the precision asked for. The report
Holm-corrects the repeated p-values across comparisons. `simulate` checks all of it on studies
whose truth is known, under normal and other noise (``python -m gapan.sequential`` prints the
figures, ``python -m bench.sequential_design`` all of them). The calibration is exact for normal
paired differences only: skewed ones make the design report effects that are not there more
often than alpha, which is why `skewness` exists for the report to warn. Estimates where a
comparison stopped are biased (away from zero when its interval excluded zero, towards zero when
it stopped for precision) and are not corrected here.

References:
    Pocock, "Group sequential methods in the design and analysis of clinical trials",
    Biometrika 64 (1977). Jennison and Turnbull, "Group Sequential Methods with Applications to
    Clinical Trials", Chapman & Hall (2000), chapters 2 and 9 (repeated confidence intervals
    and repeated p-values). Holm, "A Simple Sequentially Rejective Multiple Test Procedure",
    Scandinavian Journal of Statistics 6 (1979).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
NULL_SIMULATIONS = 200_000
# The boundary's shape: look n's nominal level is proportional to (n / N)^BOUNDARY_POWER. 0 is
# Pocock's (the same level at every look), which spends much of alpha on looks with two or three
# seeds, where an effect rarely shows; a steeper shape keeps most of it for the later looks.
BOUNDARY_POWER = 3
METHOD = (
    "group-sequential paired t-tests, one look per seed, nominal level at look n proportional to "
    f"(n / most seeds)^{BOUNDARY_POWER}, calibrated on {NULL_SIMULATIONS:,} simulated null "
    "comparisons of t-statistics; repeated confidence intervals and repeated p-values (Jennison "
    "and Turnbull 2000, ch. 9), Holm-corrected across settings"
)

# Why a comparison stopped taking seeds.
UNDECIDED = "undecided"
EFFECT = "interval excludes zero"
PRECISE = "interval narrower than the precision"


@dataclass(frozen=True)
class Design:
    """The looks of every comparison (one per seed, `min_seeds` to `max_seeds`) and its levels.

    Attributes:
        min_seeds: Seeds of the first round (the first look).
        max_seeds: The most seeds any setting gets (the last look).
        comparisons: The settings compared with the baseline (m); decisions use alpha / m.
        precision: A comparison whose interval is narrower than +- this (in the metric's
            units) is decided; 0 decides only on the sign.
        alpha: The family-wise error rate.
    """

    min_seeds: int
    max_seeds: int
    comparisons: int
    precision: float = 0.0
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ValueError(
                f"seeds: need 2 <= min <= max (a paired t-test needs 2 pairs); got "
                f"{self.min_seeds} and {self.max_seeds}"
            )

    @property
    def decision_alpha(self) -> float:
        return self.alpha / max(self.comparisons, 1)


@dataclass(frozen=True)
class Look:
    """A comparison at its latest look: the interval, its p-value and what it decided."""

    pairs: int
    mean: float
    low: float
    high: float
    p_value: float  # the repeated p-value, before correction across comparisons
    decision: str  # UNDECIDED, EFFECT or PRECISE


@functools.lru_cache(maxsize=16)
def null_statistic(min_seeds: int, max_seeds: int) -> np.ndarray:
    """`_statistic` over all looks of comparisons with no effect, sorted, from
    `NULL_SIMULATIONS` simulated ones. Fixed-seeded: every process computes the same."""
    generator = np.random.default_rng(20_240_613)
    values = np.ones(NULL_SIMULATIONS)
    chunk = 50_000
    for start in range(0, NULL_SIMULATIONS, chunk):
        draws = generator.standard_normal((min(chunk, NULL_SIMULATIONS - start), max_seeds))
        values[start : start + len(draws)] = _statistic(draws, min_seeds, max_seeds)
    return np.sort(values)


def _weights(min_seeds: int, max_seeds: int, looks: int) -> np.ndarray:
    """Each look's share of the last look's nominal level."""
    return (np.arange(min_seeds, min_seeds + looks) / max_seeds) ** BOUNDARY_POWER


def _statistic(differences: np.ndarray, min_seeds: int, max_seeds: int) -> np.ndarray:
    """Per row of paired differences in seed order: the smallest nominal paired t-test p-value
    over the looks from `min_seeds` to the row's length, each over its look's weight."""
    p = _nominal_p(differences, min_seeds)
    return (p / _weights(min_seeds, max_seeds, p.shape[1])).min(axis=1)


def _nominal_p(differences: np.ndarray, min_seeds: int) -> np.ndarray:
    """Per row and look from `min_seeds` on: the two-sided paired t-test's p-value."""
    n = np.arange(1, differences.shape[1] + 1)
    sums = np.cumsum(differences, axis=1)
    squares = np.cumsum(differences**2, axis=1)
    means = sums / n
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = (squares - n * means**2) / (n - 1)
        t = means / np.sqrt(np.maximum(variances, 0.0) / n)
    looks = slice(min_seeds - 1, None)
    p = 2 * stats.t.sf(np.abs(t[:, looks]), df=n[looks] - 1)
    return np.nan_to_num(p, nan=1.0)


def nominal_level(design: Design, alpha: float, pairs: int) -> float:
    """Look `pairs`'s two-sided level, such that crossing at any look has probability `alpha`."""
    return _nominal_level(design.min_seeds, design.max_seeds, alpha, pairs)


@functools.lru_cache(maxsize=1024)
def _nominal_level(min_seeds: int, max_seeds: int, alpha: float, pairs: int) -> float:
    scale = float(np.quantile(null_statistic(min_seeds, max_seeds), alpha, method="lower"))
    return scale * (pairs / max_seeds) ** BOUNDARY_POWER


@functools.lru_cache(maxsize=1024)
def _critical_t(min_seeds: int, max_seeds: int, alpha: float, pairs: int) -> float:
    level = _nominal_level(min_seeds, max_seeds, alpha, pairs)
    return float(stats.t.ppf(1 - level / 2, df=pairs - 1))


def sequential_p(differences: Sequence[float], design: Design) -> float:
    """The repeated p-value of paired differences in seed order at their latest look (Jennison
    and Turnbull 2000, section 9.2); 1 before the first look."""
    values = np.asarray(differences, dtype=float)
    if len(values) < design.min_seeds:
        return 1.0
    looks = _nominal_p(values[None, :], design.min_seeds)[0]
    weight = _weights(design.min_seeds, design.max_seeds, len(looks))[-1]
    observed = float(looks[-1] / weight)  # the current look's, as its interval sees it
    null = null_statistic(design.min_seeds, design.max_seeds)
    # (1 + count) / (1 + N): a Monte Carlo p-value never below its resolution.
    count = np.searchsorted(null, observed, side="right")
    return float((1 + count) / (1 + len(null)))


def repeated_interval(
    differences: Sequence[float], design: Design, alpha: float
) -> tuple[float, float, float]:
    """Mean difference and its repeated confidence interval at family level `alpha`."""
    values = np.asarray(differences, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, -math.inf, math.inf
    critical = _critical_t(design.min_seeds, design.max_seeds, alpha, n)
    half = critical * float(values.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def look(differences: Sequence[float], design: Design) -> Look:
    """A comparison's state after its latest seed: decided or not, and why."""
    n = len(differences)
    mean, low, high = repeated_interval(differences, design, design.decision_alpha)
    decision = UNDECIDED
    if n >= design.min_seeds:
        if low > 0 or high < 0:
            decision = EFFECT
        elif design.precision > 0 and (high - low) / 2 <= design.precision:
            decision = PRECISE
    return Look(n, mean, low, high, sequential_p(differences, design), decision)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order; NaN stays NaN and is not counted.

    The k-th smallest of m p-values (k from 0) is multiplied by m - k, then a running maximum
    keeps the adjusted values in the order of the raw ones, capped at 1.
    """
    raw = np.asarray(p_values, dtype=float)
    adjusted = np.full(raw.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(raw))
    m = len(valid)
    order = valid[np.argsort(raw[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * raw[index]))
        adjusted[index] = running
    return adjusted


def undecided(differences: Mapping[str, Sequence[float]], design: Design) -> list[str]:
    """The settings that take one more seed: undecided and below the most seeds."""
    return [
        setting
        for setting, values in differences.items()
        if len(values) < design.max_seeds and look(values, design).decision == UNDECIDED
    ]


# The noise models of `simulate`: the distribution of the paired differences from seed to seed.
NOISE_MODELS = ("normal", "t3", "lognormal", "skewed-0.8", "skewed-1.75")


def draw_noise(
    model: str, generator: np.random.Generator, shape: tuple[int, int, int]
) -> np.ndarray:
    """Seed-to-seed noise of the arms of simulated studies, baseline first.

    Arm i's paired differences with the baseline (arm i minus arm 0) have mean 0, variance 1
    and correlation 1/2 with another arm's, under every model; a per-seed offset shared by all
    arms would cancel in them, so there is none. The models:

    - ``normal``: every arm's noise normal, what the boundary is calibrated on;
    - ``t3``: the normal arms of a seed divided by one draw of sqrt(chi-squared(3) / 3), so each
      difference is t with 3 degrees of freedom (scaled to variance 1): a seed that is off for
      every arm at once, heavy tails both ways;
    - ``lognormal``: every arm's noise lognormal (sigma 1, skewness 6.2), independent: the
      arms are exchangeable, so the differences are symmetric but heavy-tailed;
    - ``skewed-<s>``, e.g. ``skewed-1.75``: differences that are centred gamma draws of
      skewness s (shape 4 / s^2): the settings' noise is gamma with a long upper tail, the
      baseline's the same with a long lower tail (their sum is gamma again).

    Args:
        model: One of `NOISE_MODELS`, or ``skewed-`` and any positive skewness.
        generator: Where the draws come from.
        shape: (studies, arms, seeds).
    """
    if model == "normal":
        return math.sqrt(0.5) * generator.standard_normal(shape)
    if model == "t3":
        scale = np.sqrt(generator.chisquare(3, (shape[0], 1, shape[2])) / 3)
        return math.sqrt(0.5 / 3) * generator.standard_normal(shape) / scale
    if model == "lognormal":
        sigma = 1.0
        mean = math.exp(sigma**2 / 2)
        spread = math.sqrt((math.exp(sigma**2) - 1) * math.exp(sigma**2))
        draws = np.exp(sigma * generator.standard_normal(shape))
        return math.sqrt(0.5) * (draws - mean) / spread
    if model.startswith("skewed-"):
        skewness = float(model.removeprefix("skewed-"))
        if skewness <= 0:
            raise ValueError(f"noise {model!r}: the skewness must be positive")
        # Each arm is Gamma(k, theta) centred; the difference is the sum of two, Gamma(2k,
        # theta): skewness 2 / sqrt(2k) = s and variance 2k theta^2 = 1.
        shape_k = 2 / skewness**2
        theta = 1 / math.sqrt(2 * shape_k)
        draws = generator.gamma(shape_k, theta, shape) - shape_k * theta
        draws[:, 0] *= -1
        return draws
    raise ValueError(f"noise {model!r}: expected one of {', '.join(NOISE_MODELS)}")


def stopping_looks(differences: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Per row of paired differences in seed order (`design.max_seeds` of them): the pairs at
    which `look` first decides, or the most seeds, and the decision there."""
    n = np.arange(1, differences.shape[1] + 1)
    means = np.cumsum(differences, axis=1) / n
    squares = np.cumsum(differences**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviations = np.sqrt(np.maximum(squares - n * means**2, 0.0) / (n - 1))
    looks = np.arange(design.min_seeds, design.max_seeds + 1)
    critical = np.array(
        [
            _critical_t(design.min_seeds, design.max_seeds, design.decision_alpha, int(pairs))
            for pairs in looks
        ]
    )
    half = critical * deviations[:, looks - 1] / np.sqrt(looks)
    effect = np.abs(means[:, looks - 1]) > half
    precise = (design.precision > 0) & (half <= design.precision)
    decided = effect | precise
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), len(looks) - 1)
    rows = np.arange(len(differences))
    decisions = np.where(
        effect[rows, first], EFFECT, np.where(precise[rows, first], PRECISE, UNDECIDED)
    )
    return looks[first], decisions


@dataclass(frozen=True, eq=False)
class Simulation:
    """What `simulate` found, one row per study and one column per setting.

    Attributes:
        rejected: Whether Holm rejected the setting at `design.alpha`.
        seeds: The pairs its comparison used.
        estimates: Its mean paired difference where it stopped.
        decisions: Why it stopped: UNDECIDED (the most seeds), EFFECT or PRECISE.
    """

    rejected: np.ndarray
    seeds: np.ndarray
    estimates: np.ndarray
    decisions: np.ndarray

    @property
    def studies(self) -> int:
        return len(self.rejected)

    @property
    def any_rejection_rate(self) -> float:
        """The share of studies where Holm rejected at least one setting."""
        return float(self.rejected.any(axis=1).mean())

    @property
    def rejection_rate(self) -> list[float]:
        return self.rejected.mean(axis=0).tolist()

    @property
    def mean_seeds(self) -> list[float]:
        return self.seeds.mean(axis=0).tolist()

    @property
    def mean_trials(self) -> float:
        """Trials per study: the baseline runs in every round, i.e. as many seeds as the setting
        that took the most, and each setting its own."""
        return float((self.seeds.max(axis=1) + self.seeds.sum(axis=1)).mean())


def simulate(
    design: Design,
    effects: Sequence[float],
    studies: int = 1_000,
    seed: int = 0,
    noise: str = "normal",
) -> Simulation:
    """Run the adaptive procedure on simulated studies whose truth is known.

    Setting i's paired differences with the baseline are `effects[i]` plus noise of variance 1
    (`draw_noise`), so effects are in standard deviations of the paired differences. Rounds add a
    seed to the baseline and every undecided setting until none is left or the most seeds are
    reached, as an adaptive study does; each comparison's decisions depend on its own pairs
    only, so every setting's stopping look is found at once (`stopping_looks`). The repeated
    p-values there are then Holm-corrected at `design.alpha`.
    """
    generator = np.random.default_rng(seed)
    m = len(effects)
    arms = draw_noise(noise, generator, (studies, m + 1, design.max_seeds))
    differences = arms[:, 1:] - arms[:, :1] + np.asarray(effects, dtype=float)[:, None]
    rows = differences.reshape(studies * m, design.max_seeds)
    pairs, decisions = stopping_looks(rows, design)
    p = _nominal_p(rows, design.min_seeds)[np.arange(len(rows)), pairs - design.min_seeds]
    observed = p / (pairs / design.max_seeds) ** BOUNDARY_POWER
    null = null_statistic(design.min_seeds, design.max_seeds)
    repeated = (1 + np.searchsorted(null, observed, side="right")) / (1 + len(null))
    estimates = np.cumsum(rows, axis=1)[np.arange(len(rows)), pairs - 1] / pairs
    return Simulation(
        rejected=holm_rows(repeated.reshape(studies, m)) < design.alpha,
        seeds=pairs.reshape(studies, m),
        estimates=estimates.reshape(studies, m),
        decisions=decisions.reshape(studies, m),
    )


def holm_rows(p_values: np.ndarray) -> np.ndarray:
    """`holm` of every row of finite p-values at once."""
    m = p_values.shape[1]
    order = np.argsort(p_values, axis=1, kind="stable")
    ranked = np.take_along_axis(p_values, order, axis=1)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked), axis=1)
    result = np.empty_like(adjusted)
    np.put_along_axis(result, order, adjusted, axis=1)
    return result


# The pooled sample skewness of the paired differences beyond which the report warns. The design
# is exact for normal differences and conservative for symmetric heavy-tailed ones, but skewed
# differences make it report effects that are not there more often than alpha, the more so the
# more skewed (docs/adaptive-seeds.md has the rates); at skewness 1 the excess is no longer small
# next to alpha, and normal differences of a study of 3 settings rarely look this skewed.
SKEWNESS_LIMIT = 1.0


@dataclass(frozen=True)
class Skewness:
    """How skewed a study's paired differences are (`skewness`).

    Attributes:
        settings: Each setting's sample skewness; NaN below 3 pairs or with no spread.
        pooled: The sample skewness of every setting's differences together, each centred on
            its mean and scaled by its standard deviation; NaN below 3 of them.
        pairs: The differences pooled.
    """

    settings: dict[str, float]
    pooled: float
    pairs: int

    @property
    def in_doubt(self) -> bool:
        """Whether the pooled skewness is beyond `SKEWNESS_LIMIT` either way."""
        return bool(abs(self.pooled) > SKEWNESS_LIMIT)

    @property
    def beyond(self) -> list[str]:
        """The settings whose own skewness is beyond `SKEWNESS_LIMIT` either way."""
        return [name for name, value in self.settings.items() if abs(value) > SKEWNESS_LIMIT]


def skewness(differences: Mapping[str, Sequence[float]]) -> Skewness:
    """The sample skewness (adjusted Fisher-Pearson, as ``scipy.stats.skew(bias=False)``) of
    each setting's paired differences and of all of them pooled.

    Pooling counts the baseline's seeds once per setting: a skewed baseline skews every
    comparison, and the skewness of a few pairs says little on its own: normal samples of ten
    often look skewed.
    """
    own, standardised = {}, []
    for name, values in differences.items():
        values = np.asarray(values, dtype=float)
        spread = float(values.std(ddof=1)) if len(values) >= 2 else 0.0
        if len(values) < 3 or not spread > 0:
            own[name] = math.nan
            continue
        own[name] = float(stats.skew(values, bias=False))
        standardised.append((values - values.mean()) / spread)
    pooled = np.concatenate(standardised) if standardised else np.array([])
    return Skewness(
        settings=own,
        pooled=float(stats.skew(pooled, bias=False)) if len(pooled) >= 3 else math.nan,
        pairs=len(pooled),
    )


def fixed_design_power(effect: float, seeds: int, alpha: float = ALPHA) -> float:
    """The power of a fixed design's two-sided paired t-test at `alpha` with `seeds` pairs, for a
    difference of `effect` standard deviations of the paired differences (as in `simulate`)."""
    critical = stats.t.ppf(1 - alpha / 2, df=seeds - 1)
    shift = effect * math.sqrt(seeds)
    return float(
        stats.nct.sf(critical, seeds - 1, shift) + stats.nct.cdf(-critical, seeds - 1, shift)
    )


def fixed_design_seeds(effect: float, power: float, alpha: float = ALPHA) -> int:
    """The fewest seeds a fixed design needs for `power` on one comparison, by
    `fixed_design_power`."""
    for seeds in range(2, 10_000):
        if fixed_design_power(effect, seeds, alpha) >= power:
            return seeds
    raise ValueError(f"no fixed design below 10,000 seeds reaches power {power}")


def main() -> None:
    """Print the simulation's false-positive rate and power against a fixed design
    (``python -m bench.sequential_design`` has every noise model and more settings)."""
    studies = 20_000
    null = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(null, [0.0, 0.0, 0.0], studies=studies)
    print(
        f"no effect, 3 settings, seeds 3..10, {studies:,} studies: family-wise "
        f"false-positive rate {found.any_rejection_rate:.3f}, mean seeds "
        f"{np.mean(found.mean_seeds):.2f}"
    )
    one = Design(min_seeds=3, max_seeds=10, comparisons=1)
    found = simulate(one, [1.0], studies=studies)
    power = found.rejection_rate[0]
    fixed = fixed_design_seeds(1.0, power)
    print(
        f"an effect of one SD of the paired differences, seeds 3..10: power {power:.3f} with "
        f"{found.mean_seeds[0]:.2f} seeds on average ({found.mean_trials:.1f} trials); a fixed "
        f"design of {fixed} seeds has power {fixed_design_power(1.0, fixed):.3f}, of {fixed - 1} "
        f"seeds {fixed_design_power(1.0, fixed - 1):.3f}"
    )


if __name__ == "__main__":
    main()


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
