"""Coverage of intervals over seeds and classes, on simulated studies whose truth is known.

Each simulated study draws new classes from a population whose mean paired difference is zero:
per-class effects (SD `class`), a per-seed offset (SD `seed`) and per-cell noise (SD `cell`),
classes weighed by random query counts as `class_scores.csv` does. It prints how often each
95% interval covers zero:

- the t-interval over seeds (what the reports showed before per-class scores);
- a two-level bootstrap (classes, then seeds, with replacement; query-weighted means), its
  percentile interval: the method the reports' interval over classes was first built on;
- the reports' interval over seeds and classes (`reports.stats.class_seed_interval`: the crossed
  design's variance components, Student-t with Satterthwaite's degrees of freedom).

python -m bench.class_intervals --studies 2000
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from reports import stats

# (seeds, classes, class SD, seed SD, cell SD): classes dominating at the embedded set's
# validation and test sizes, then mixed and seed-dominated cases with few seeds.
SCENARIOS = (
    (5, 18, 1.0, 0.05, 0.1),
    (5, 40, 1.0, 0.05, 0.1),
    (5, 78, 1.0, 0.05, 0.1),
    (5, 78, 0.3, 0.1, 0.1),
    (3, 78, 0.3, 0.1, 0.1),
    (3, 18, 0.3, 0.1, 0.1),
    (3, 78, 0.0, 0.1, 0.3),
    (8, 78, 0.05, 0.05, 0.3),
)


def bootstrap_interval(
    differences: np.ndarray, queries: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    seeds, classes = differences.shape
    generator = np.random.default_rng(seed)
    class_counts = generator.multinomial(classes, np.full(classes, 1 / classes), resamples)
    seed_counts = generator.multinomial(seeds, np.full(seeds, 1 / seeds), resamples)
    totals = ((seed_counts @ (differences * queries)) * class_counts).sum(axis=1)
    draws = totals / (seeds * (class_counts @ queries))
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(low), float(high)


def coverage(
    studies: int, seeds: int, classes: int, class_sd: float, seed_sd: float, cell_sd: float
) -> dict[str, float]:
    generator = np.random.default_rng(classes * 100 + seeds)
    covered = {"over seeds": 0, "bootstrap percentile": 0, "over seeds and classes": 0}
    for study in range(studies):
        per_class = class_sd * generator.standard_normal(classes)
        per_seed = seed_sd * generator.standard_normal((seeds, 1))
        differences = per_class + per_seed + cell_sd * generator.standard_normal((seeds, classes))
        queries = generator.integers(5, 30, classes).astype(float)
        by_seed = differences @ (queries / queries.sum())
        interval = stats.t_interval(by_seed)
        covered["over seeds"] += interval.low <= 0 <= interval.high
        low, high = bootstrap_interval(differences, queries, 1000, study)
        covered["bootstrap percentile"] += low <= 0 <= high
        low, high = stats.class_seed_interval(differences, queries).interval(0.95)
        covered["over seeds and classes"] += low <= 0 <= high
    return {name: count / studies for name, count in covered.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--json-out", help="append the JSON line to this file too")
    args = parser.parse_args()
    rows = []
    for seeds, classes, class_sd, seed_sd, cell_sd in SCENARIOS:
        found = coverage(args.studies, seeds, classes, class_sd, seed_sd, cell_sd)
        scenario = {"seeds": seeds, "classes": classes, "class": class_sd, "seed": seed_sd}
        rows.append({**scenario, "cell": cell_sd, **found})
    error = math.sqrt(0.95 * 0.05 / args.studies)
    print(
        f"coverage of 95% intervals, {args.studies} studies per scenario; Monte Carlo error "
        f"{error:.4f}"
    )
    names = list(rows[0])
    print("  ".join(f"{name:>22}" for name in names))
    for row in rows:
        print("  ".join(f"{row[name]:>22.4g}" for name in names))
    line = json.dumps({"bench": "class_intervals", "args": vars(args), "rows": rows})
    print(line)
    if args.json_out:
        with open(args.json_out, "a") as file:
            file.write(line + "\n")


if __name__ == "__main__":
    main()
