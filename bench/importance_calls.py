"""How often a search report would name a most important parameter when none matters.

Small random searches (12 trials over a log-scaled rate, a uniform float, an integer and a
two-way choice) of pure noise, each scored as `reports.search.most_important` scores a real
search, and counted under four rules: the evaluators agree; PED-ANOVA is first in most bootstrap
resamples; either (the rule first asked for); both (the reports' rule).

python -m bench.importance_calls --searches 100
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import optuna

from reports.search import most_important, param_importances, quiet_optuna

DISTRIBUTIONS = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
    "prior": optuna.distributions.FloatDistribution(0.0, 1.0),
    "depth": optuna.distributions.IntDistribution(0, 8),
    "family": optuna.distributions.CategoricalDistribution(["glow", "realnvp"]),
}


def noise_search(trials: int, seed: int) -> optuna.Study:
    rng = np.random.default_rng(seed)
    with quiet_optuna():
        study = optuna.create_study(direction="maximize")
        for _ in range(trials):
            params = {
                "lr": float(10 ** rng.uniform(-5, -2)),
                "prior": float(rng.uniform()),
                "depth": int(rng.integers(0, 9)),
                "family": str(rng.choice(["glow", "realnvp"])),
            }
            trial = optuna.trial.create_trial(
                value=float(rng.normal()), params=params, distributions=DISTRIBUTIONS
            )
            study.add_trial(trial)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    counts = {"evaluators agree": 0, "bootstrap majority": 0, "either": 0, "both (reports)": 0}
    for seed in range(args.searches):
        study = noise_search(args.trials, seed)
        importances = param_importances(study)
        call = most_important(study, importances, resamples=args.resamples)
        leaders = set(call.leaders.values())
        agree = len(call.leaders) > 1 and len(leaders) == 1 and None not in leaders
        top = next(iter(call.shares), None)
        majority = top is not None and call.shares[top] > 0.5
        counts["evaluators agree"] += agree
        counts["bootstrap majority"] += majority
        counts["either"] += agree or majority
        counts["both (reports)"] += call.param is not None
    print(
        f"pure noise, {args.searches} searches of {args.trials} trials, {args.resamples} "
        "resamples: share of searches in which the rule names a parameter"
    )
    for name, count in counts.items():
        print(f"{name:>20}  {count / args.searches:.2f}")
    rates = {name: count / args.searches for name, count in counts.items()}
    print(json.dumps({"bench": "importance_calls", "args": vars(args), "rates": rates}))


if __name__ == "__main__":
    main()
