"""Does a warm start from a cheap search help an expensive one?

Runs partial fine-tuning GAPan searches with the same space and budget in three arms, each
repeated with sampler seeds 0, 1, ...: cold; warm-started (`--warm-start`) from one shared
frozen-feature search; and warm-started from a frozen search of its own, run with the same
sampler seed (so the repeats also vary the search they start from). Then it confirms every
search's best configuration (by validation MAP@R) over fresh seeds on the test classes. Prints
the best validation MAP@R after each trial (median and range over sampler seeds), the trials
each search needed to reach the cold searches' median best, and the confirmed test MAP@R.

    python -m bench.warm_start --out bench/results/warm_start   # over an hour on 2 CPU cores

Every search is the study script a user runs, so its commands are in the JSON record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import add_output_argument, emit, relative_command

METRIC = "val_map_at_r"
SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "search_gapan.py"


def run_search(out: Path, name: str, *flags: str) -> dict[str, Any]:
    """One search study through its script; its command and wall time (None for a search a
    previous run of this bench finished, which is read again, not rerun)."""
    words = [sys.executable, str(SCRIPT), "--results-dir", str(out), "--name", name, "--no-report"]
    words += list(flags)
    if (out / name / "trials.csv").exists():
        return {"command": relative_command(words), "wall_s": None}
    started = time.perf_counter()
    subprocess.run(words, check=True, stdout=subprocess.DEVNULL)
    return {"command": relative_command(words), "wall_s": time.perf_counter() - started}


def best_after_each(folder: Path) -> list[float]:
    """The best validation MAP@R of completed trials after each trial, in the order they began
    (a trial the scheduler stopped early leaves the best where it was)."""
    trials = pd.read_csv(folder / "trials.csv").sort_values("number")
    best, curve = float("-inf"), []
    for _, row in trials.iterrows():
        if row["status"] == "completed" and pd.notna(row[METRIC]):
            best = max(best, float(row[METRIC]))
        curve.append(best)
    return curve


def best_config(folder: Path) -> dict[str, Any]:
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    completed = trials[trials["status"] == "completed"]
    best = completed.loc[completed[METRIC].idxmax(), "trial_id"]
    return json.loads((folder / "trials" / best / "config.json").read_text())


def confirm(config: dict[str, Any], seed: int) -> float:
    """Test MAP@R of one configuration trained again with `seed`."""
    import torch

    from gapan.config import from_flat
    from gapan.train import train

    torch.set_num_threads(1)
    cfg = from_flat({**config, "train.seed": seed})
    return float(train(cfg, report=lambda _: None)["test_map_at_r"])


def trials_to_reach(curve: list[float], level: float) -> int | None:
    return next((index + 1 for index, best in enumerate(curve) if best >= level), None)


def summary(curves: list[list[float]]) -> list[str]:
    rows = []
    for index in range(len(curves[0])):
        column = [curve[index] for curve in curves]
        rows.append(f"{statistics.median(column):.4f} [{min(column):.4f}, {max(column):.4f}]")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.warm_start", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/warm_start"))
    parser.add_argument("--repeats", type=int, default=5, help="sampler seeds per arm")
    parser.add_argument("--trials", type=int, default=12, help="trials of each partial search")
    parser.add_argument("--frozen-trials", type=int, default=24)
    parser.add_argument("--confirm-seeds", type=int, default=3)
    add_output_argument(parser)
    args = parser.parse_args()
    out = args.out.resolve()
    frozen = ["--num-samples", str(args.frozen_trials)]
    runs = {"frozen": run_search(out, "frozen", *frozen)}
    partial = ["--backbone-mode", "partial", "--num-samples", str(args.trials)]
    for seed in range(args.repeats):
        sampler = ["--sampler-seed", str(seed)]
        runs[f"cold_{seed}"] = run_search(out, f"cold_{seed}", *partial, *sampler)
        warm = ["--warm-start", str(out / "frozen")]
        runs[f"warm_{seed}"] = run_search(out, f"warm_{seed}", *partial, *sampler, *warm)
        runs[f"frozen_{seed}"] = run_search(out, f"frozen_{seed}", *frozen, *sampler)
        own = ["--warm-start", str(out / f"frozen_{seed}")]
        runs[f"warmown_{seed}"] = run_search(out, f"warmown_{seed}", *partial, *sampler, *own)
    arms = {
        arm: [f"{arm}_{seed}" for seed in range(args.repeats)]
        for arm in ("cold", "warm", "warmown")
    }
    curves = {name: best_after_each(out / name) for names in arms.values() for name in names}
    cold_median = statistics.median(curves[name][-1] for name in arms["cold"])
    # Fresh seeds: every search trained its trials with seed 0.
    seeds = list(range(1, args.confirm_seeds + 1))
    jobs = [(name, seed) for names in arms.values() for name in names for seed in seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        scores = list(
            pool.map(confirm, [best_config(out / name) for name, _ in jobs], [s for _, s in jobs])
        )
    confirmed: dict[str, list[float]] = {}
    for (name, _), score in zip(jobs, scores, strict=True):
        confirmed.setdefault(name, []).append(score)
    record = {
        "runs": runs,
        "confirm_wall_s": time.perf_counter() - started,
        "cold_median_best": cold_median,
        "curves": curves,
        "trials_to_cold_median": {
            name: trials_to_reach(curves[name], cold_median) for name in curves
        },
        "confirmed_test_map_at_r": confirmed,
    }
    print(
        "best validation MAP@R after each trial, median [range] over sampler seeds (warm: from "
        "one shared frozen search; warmown: each from its own)"
    )
    table = pd.DataFrame({arm: summary([curves[n] for n in names]) for arm, names in arms.items()})
    table.index = range(1, len(table) + 1)
    print(table.to_string())
    print(f"\ntrials to reach the cold searches' median best ({cold_median:.4f}):")
    for arm, names in arms.items():
        reached = [record["trials_to_cold_median"][name] for name in names]
        print(f"  {arm}: {reached} (None: never)")
    print(f"\nconfirmed test MAP@R of each search's best configuration, seeds {seeds}:")
    for arm, names in arms.items():
        means = [statistics.mean(confirmed[name]) for name in names]
        print(
            f"  {arm}: per search {[round(m, 4) for m in means]}; median "
            f"{statistics.median(means):.4f}, range [{min(means):.4f}, {max(means):.4f}]"
        )
    emit({"bench": "warm_start", **record}, args.json_out)


if __name__ == "__main__":
    main()
