"""The adaptive-seeds design (`gapan.sequential`) on simulated studies whose truth is known.

Three tables, all with seeds 3 to 10 and alpha 0.05:

- False positives: with no effect in any of m settings (1, 3, 5), the share of studies where
  Holm rejects at least one, for every noise model of `gapan.sequential.draw_noise` and a range
  of skewness; beside it the same studies tested once at 10 seeds (paired t-tests, Holm), and,
  for m = 3, how often the report's skewness warning (`gapan.sequential.skewness`) fires, over
  all studies and over those with a false positive.
- Efficiency: one setting with an effect of 1 SD of the paired differences and m - 1 without,
  normal noise. Power is the share of studies where Holm rejects the effect; the fixed design of
  equal power is the fewest seeds whose paired t-test at alpha / m reaches it
  (`fixed_design_seeds`; Holm tests the smallest p-value at alpha / m), checked by simulating
  it, and beside it the power of one seed fewer (when the two are close, that one is the
  fairer match). Trials: adaptive = the baseline's seeds (as many as the setting that took
  the most) + every setting's; fixed = (m + 1) x its seeds.
- Bias: the mean estimate where a comparison stopped, over the true effect, given how it
  stopped; one setting, normal noise.

    python -m bench.sequential_design                    # 100,000 studies per scenario
    python -m bench.sequential_design --studies 20000 --json-out results.jsonl
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from scipy import stats

from bench.common import add_output_argument, emit, print_table, rounded
from gapan.sequential import (
    EFFECT,
    NOISE_MODELS,
    PRECISE,
    SKEWNESS_LIMIT,
    Design,
    draw_noise,
    fixed_design_power,
    fixed_design_seeds,
    holm_rows,
    simulate,
    skewness,
    stopping_looks,
)

MIN_SEEDS, MAX_SEEDS = 3, 10
COMPARISONS = (1, 3, 5)
# Skewness of the paired differences between the suite's 0.8 and 1.75, and beyond.
EXTRA_SKEWNESS = (0.4, 0.6, 1.0, 1.25, 1.5, 2.5)
WARNING_STUDIES = 5_000  # the warning is computed study by study, as the report does


def fixed_rejections(
    noise: str, effects: list[float], seeds: int, studies: int, seed: int
) -> np.ndarray:
    """Per study and setting: rejected by paired t-tests at `seeds` seeds, Holm at 0.05."""
    generator = np.random.default_rng(seed)
    arms = draw_noise(noise, generator, (studies, len(effects) + 1, seeds))
    differences = arms[:, 1:] - arms[:, :1] + np.asarray(effects)[:, None]
    p = stats.ttest_1samp(differences, 0.0, axis=2).pvalue
    return holm_rows(p) < 0.05


def warning_rates(noise: str, studies: int, seed: int) -> tuple[float, float]:
    """At m = 3 with no effect: how often the skewness warning fires, over all studies and over
    those with a false positive. The differences are `simulate`'s: the same seed, drawn first."""
    design = Design(MIN_SEEDS, MAX_SEEDS, comparisons=3)
    found = simulate(design, [0.0] * 3, studies=studies, seed=seed, noise=noise)
    generator = np.random.default_rng(seed)
    arms = draw_noise(noise, generator, (studies, 4, MAX_SEEDS))
    rows = (arms[:, 1:] - arms[:, :1]).reshape(-1, MAX_SEEDS)
    pairs, _ = stopping_looks(rows, design)
    if not (pairs.reshape(studies, 3) == found.seeds).all():
        raise RuntimeError("these are not the differences simulate drew")
    fired = np.array(
        [
            skewness(
                {str(i): row[:n] for i, (row, n) in enumerate(zip(group, counts, strict=True))}
            ).in_doubt
            for group, counts in zip(
                rows.reshape(studies, 3, -1), pairs.reshape(studies, 3), strict=True
            )
        ]
    )
    false_positive = found.rejected.any(axis=1)
    return float(fired.mean()), float(fired[false_positive].mean())


def false_positives(studies: int) -> list[dict[str, Any]]:
    rows = []
    models = list(NOISE_MODELS) + [f"skewed-{value}" for value in EXTRA_SKEWNESS]
    models.sort(key=lambda name: float(name.split("-")[1]) if name.startswith("skewed") else -1)
    for noise in models:
        row: dict[str, Any] = {"noise": noise}
        for m in COMPARISONS:
            design = Design(MIN_SEEDS, MAX_SEEDS, comparisons=m)
            found = simulate(design, [0.0] * m, studies=studies, seed=m, noise=noise)
            row[f"adaptive m={m}"] = found.any_rejection_rate
            fixed = fixed_rejections(noise, [0.0] * m, MAX_SEEDS, studies, seed=100 + m)
            row[f"fixed 10 m={m}"] = float(fixed.any(axis=1).mean())
        row["warns m=3"], row["warns | false positive"] = warning_rates(
            noise, min(studies, WARNING_STUDIES), seed=3
        )
        rows.append(row)
    return rows


def efficiency(studies: int, effect: float = 1.0) -> list[dict[str, Any]]:
    rows = []
    for m in COMPARISONS:
        design = Design(MIN_SEEDS, MAX_SEEDS, comparisons=m)
        effects = [effect] + [0.0] * (m - 1)
        found = simulate(design, effects, studies=studies, seed=10 + m)
        power = found.rejection_rate[0]
        alpha = design.decision_alpha
        seeds = fixed_design_seeds(effect, power, alpha=alpha)
        fixed = fixed_rejections("normal", effects, seeds, studies, seed=200 + m)
        rejected = found.rejected[:, 0]
        rows.append(
            {
                "m": m,
                "power": power,
                "seeds (effect)": found.mean_seeds[0],
                "seeds (no effect)": float(np.mean(found.mean_seeds[1:])) if m > 1 else None,
                "trials": found.mean_trials,
                "fixed seeds": seeds,
                "fixed power": fixed_design_power(effect, seeds, alpha),
                "simulated": float(fixed[:, 0].mean()),
                "power, 1 seed fewer": fixed_design_power(effect, seeds - 1, alpha),
                "fixed trials": (m + 1) * seeds,
                "trials / fixed": found.mean_trials / ((m + 1) * seeds),
                "estimate / effect | rejected": float(found.estimates[rejected, 0].mean()) / effect,
            }
        )
    return rows


def bias(studies: int) -> list[dict[str, Any]]:
    rows = []
    for effect, precision in ((1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (0.5, 1.0), (0.5, 0.75)):
        design = Design(MIN_SEEDS, MAX_SEEDS, comparisons=1, precision=precision)
        found = simulate(design, [effect], studies=studies, seed=20)
        estimates, decisions = found.estimates[:, 0], found.decisions[:, 0]
        row: dict[str, Any] = {"effect": effect, "precision": precision}
        for name, stopped in (
            ("interval excludes zero", decisions == EFFECT),
            ("precision", decisions == PRECISE),
        ):
            row[f"share {name}"] = float(stopped.mean())
            row[f"estimate / effect | {name}"] = (
                float(estimates[stopped].mean()) / effect if stopped.any() else None
            )
        row["estimate / effect | all"] = float(estimates.mean()) / effect
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sequential_design",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--studies", type=int, default=100_000, help="simulated studies per scenario"
    )
    add_output_argument(parser)
    args = parser.parse_args()
    start = time.perf_counter()
    found = false_positives(args.studies)
    print_table(
        f"False-positive rate with no effect, seeds {MIN_SEEDS} to {MAX_SEEDS}: adaptive vs "
        f"t-tests at {MAX_SEEDS} seeds, Holm over m settings ({args.studies:,} studies each; "
        f"Monte Carlo SE {np.sqrt(0.05 * 0.95 / args.studies):.4f} at 0.05). Skewness warning "
        f"(pooled |skewness| > {SKEWNESS_LIMIT}) at m = 3, "
        f"{min(args.studies, WARNING_STUDIES):,} studies",
        found,
        list(found[0]),
    )
    efficient = efficiency(args.studies)
    print_table(
        "Efficiency: one setting 1 SD, the others none; normal noise "
        f"({args.studies:,} studies each)",
        efficient,
        list(efficient[0]),
    )
    biased = bias(args.studies)
    print_table(
        f"Estimates where the comparison stopped, one setting ({args.studies:,} studies each)",
        biased,
        list(biased[0]),
    )
    emit(
        {
            "bench": "sequential_design",
            "studies": args.studies,
            "false_positives": [_rounded(row) for row in found],
            "efficiency": [_rounded(row) for row in efficient],
            "bias": [_rounded(row) for row in biased],
            "wall_s": rounded(time.perf_counter() - start),
        },
        args.json_out,
    )


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: rounded(value) if isinstance(value, float) else value for key, value in row.items()
    }


if __name__ == "__main__":
    main()
