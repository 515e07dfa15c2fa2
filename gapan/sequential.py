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
whose truth is known (``python -m gapan.sequential`` prints the figures).

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


@dataclass(frozen=True)
class Simulation:
    """What `simulate` found over many studies."""

    studies: int
    any_rejection_rate: float  # share of studies where Holm rejected at least one setting
    rejection_rate: list[float]  # per setting
    mean_seeds: list[float]  # per setting: the pairs its comparison used


def simulate(
    design: Design, effects: Sequence[float], studies: int = 1_000, seed: int = 0
) -> Simulation:
    """Run the adaptive procedure on simulated studies whose truth is known.

    Every seed draws a shared offset (what pairing removes) and each setting's own noise, each of
    variance 1/2: a setting's metric varies from seed to seed with standard deviation 1, and so
    do the paired differences. Setting i adds `effects[i]` (in those standard deviations) over
    the baseline. Rounds add a seed to the baseline and every undecided setting until none is
    left or the most seeds are reached, as an adaptive study does; the repeated p-values are
    then Holm-corrected at `design.alpha`.
    """
    generator = np.random.default_rng(seed)
    rejected = np.zeros((studies, len(effects)), dtype=bool)
    seeds = np.zeros((studies, len(effects)))
    for study in range(studies):
        half = math.sqrt(0.5)
        shared = half * generator.standard_normal(design.max_seeds)
        baseline = shared + half * generator.standard_normal(design.max_seeds)
        runs = [
            shared + effect + half * generator.standard_normal(design.max_seeds)
            for effect in effects
        ]
        counts = [design.min_seeds] * len(effects)
        while True:
            differences = {
                str(i): runs[i][: counts[i]] - baseline[: counts[i]] for i in range(len(effects))
            }
            more = undecided(differences, design)
            if not more:
                break
            for name in more:
                counts[int(name)] += 1
        p_values = [sequential_p(values, design) for values in differences.values()]
        rejected[study] = holm(p_values) < design.alpha
        seeds[study] = counts
    return Simulation(
        studies=studies,
        any_rejection_rate=float(rejected.any(axis=1).mean()),
        rejection_rate=rejected.mean(axis=0).tolist(),
        mean_seeds=seeds.mean(axis=0).tolist(),
    )


def fixed_design_seeds(effect: float, power: float, alpha: float = ALPHA) -> int:
    """The fewest seeds a fixed design needs for `power` on one comparison: a two-sided paired
    t-test at `alpha` of a difference of `effect` standard deviations of the paired differences
    (as in `simulate`)."""
    for n in range(2, 10_000):
        critical = stats.t.ppf(1 - alpha / 2, df=n - 1)
        shift = effect * math.sqrt(n)
        reached = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
        if reached >= power:
            return n
    raise ValueError(f"no fixed design below 10,000 seeds reaches power {power}")


def main() -> None:
    """Print the simulation's false-positive rate and power against a fixed design."""
    null = Design(min_seeds=3, max_seeds=10, comparisons=3)
    found = simulate(null, [0.0, 0.0, 0.0])
    print(
        f"no effect, 3 settings, seeds 3..10, {found.studies} studies: family-wise "
        f"false-positive rate {found.any_rejection_rate:.3f}, mean seeds "
        f"{np.mean(found.mean_seeds):.2f}"
    )
    one = Design(min_seeds=3, max_seeds=10, comparisons=1)
    found = simulate(one, [1.0])
    fixed = fixed_design_seeds(1.0, found.rejection_rate[0])
    print(
        f"an effect of one seed-to-seed SD, seeds 3..10: power {found.rejection_rate[0]:.3f} "
        f"with {found.mean_seeds[0]:.2f} seeds on average; a fixed design needs {fixed} seeds "
        "for that power"
    )


if __name__ == "__main__":
    main()
