"""Coverage of the report's intervals when classes, not seeds, dominate the uncertainty.

Each simulated study draws new classes from a population whose mean paired difference is zero
(per-class effects with SD `--class-sd`, a per-seed offset, per-cell noise) and weighs classes by
random query counts, as `class_scores.csv` does. It prints how often each interval covers zero:
the t-interval over seeds, the two-level bootstrap's percentile interval, and the interval the
reports use (`reports.stats.class_seed_bootstrap`: t with C - 1 degrees of freedom around the
scaled bootstrap standard error).

python -m bench.class_intervals --studies 2000
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from reports import stats


def coverage(
    studies: int, seeds: int, classes: int, class_sd: float, seed_sd: float, cell_sd: float
) -> dict[str, float]:
    generator = np.random.default_rng(classes)
    covered = {"over seeds": 0, "bootstrap percentile": 0, "over seeds and classes": 0}
    for study in range(studies):
        per_class = class_sd * generator.standard_normal(classes)
        per_seed = seed_sd * generator.standard_normal((seeds, 1))
        differences = per_class + per_seed + cell_sd * generator.standard_normal((seeds, classes))
        queries = generator.integers(5, 30, classes).astype(float)
        by_seed = (differences * queries).sum(axis=1) / queries.sum()
        interval = stats.t_interval(by_seed)
        covered["over seeds"] += interval.low <= 0 <= interval.high
        found = stats.class_seed_bootstrap(differences, queries, resamples=1000, seed=study)
        low, high = found.interval(0.95)
        covered["over seeds and classes"] += low <= 0 <= high
        # The same resamples' percentile interval, for comparison.
        draws = _draws(differences, queries, 1000, study)
        low, high = np.quantile(draws, [0.025, 0.975])
        covered["bootstrap percentile"] += low <= 0 <= high
    return {name: count / studies for name, count in covered.items()}


def _draws(differences: np.ndarray, queries: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    seeds, classes = differences.shape
    generator = np.random.default_rng(seed)
    class_counts = generator.multinomial(classes, np.full(classes, 1 / classes), resamples)
    seed_counts = generator.multinomial(seeds, np.full(seeds, 1 / seeds), resamples)
    weighted = differences * queries
    totals = ((seed_counts @ weighted) * class_counts).sum(axis=1)
    return totals / (seeds * (class_counts @ queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--classes", default="18,40,78", help="class counts, comma-separated")
    parser.add_argument("--class-sd", type=float, default=1.0)
    parser.add_argument("--seed-sd", type=float, default=0.05)
    parser.add_argument("--cell-sd", type=float, default=0.1)
    parser.add_argument("--json-out", help="append the JSON line to this file too")
    args = parser.parse_args()
    rows = []
    for count in (int(text) for text in args.classes.split(",")):
        found = coverage(args.studies, args.seeds, count, args.class_sd, args.seed_sd, args.cell_sd)
        rows.append({"classes": count, **found})
    error = math.sqrt(0.95 * 0.05 / args.studies)
    print(
        f"coverage of 95% intervals, {args.studies} studies each, {args.seeds} seeds, class SD "
        f"{args.class_sd}, seed SD {args.seed_sd}, cell SD {args.cell_sd}; Monte Carlo error "
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
