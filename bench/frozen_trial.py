"""Frozen-backbone mode on the CPU: the feature cache, one trial, and a small study's overhead.

Three figures, on the embedded data set with the default config (MobileNetV2, 96 px):

1. The feature cache: its load time, and its build time when it is absent (or with
   --rebuild-cache, which builds a fresh copy in a temporary folder).
2. One default frozen-mode trial, `gapan.train.train` with ``train.epochs=8`` (a run folder, so
   checkpoints are written as in a study): its wall time, split into set-up (data, backbone,
   feature cache, model) and the epochs (training + evaluation).
3. Real studies through `gapan.tune.run_study`: the flow-depth ablation at depth 2 only, with
   6 seeds (6 equal trials of 2 epochs) and with 1, one trial at a time by default. Ray's start
   is timed on its own. A study's overhead is its wall time - the trials' own time /
   concurrency, where a trial's own time is either Tune's ``time_total_s`` or only its epochs
   (training + evaluation); per trial, it is that over the trials. The two studies split it
   into a fixed part per study (Tune's start, the trial worker's start and imports, the result
   tables) and a marginal part per trial.

    python -m bench.frozen_trial                  # minutes on a small CPU
    python -m bench.frozen_trial --rebuild-cache --epochs 8 --study-epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.common import add_output_argument, emit, environment, print_table, rounded
from gapan.backbone import build_backbone
from gapan.config import ExperimentConfig, from_flat
from gapan.data import build_splits
from gapan.features import cached_features
from gapan.weights import cache_root


def cache_figures(cfg: ExperimentConfig, rebuild: bool) -> dict[str, Any]:
    """Seconds to read the data set, build the backbone, build the cache (if absent), load it."""
    started = time.perf_counter()
    splits = build_splits(cfg.data)
    figures: dict[str, Any] = {"build_splits_s": time.perf_counter() - started}
    started = time.perf_counter()
    backbone = build_backbone(cfg.model)
    figures["build_backbone_s"] = time.perf_counter() - started
    sets = {"train": splits.train, "val": splits.val, "test": splits.test}
    figures["images"] = sum(len(images) for images in sets.values())
    device = torch.device("cpu")

    def features(folder: Path | None) -> float:
        started = time.perf_counter()
        cached_features(
            backbone, sets, cfg.data.image_size, cfg.train.eval_batch_size, device, cache_dir=folder
        )
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="gapan-bench-cache-") as scratch:
        folder = Path(scratch) if rebuild else None
        shared = cache_root() / "features"
        before = set(shared.glob("*.safetensors")) if shared.exists() else set()
        first = features(folder)
        after = set(shared.glob("*.safetensors")) if shared.exists() else set()
        built = rebuild or after != before
        figures["cache_build_s"] = first if built else None
        figures["cache_load_s"] = features(folder)
    return figures


def one_trial(cfg: ExperimentConfig) -> dict[str, Any]:
    """Wall time of one `train` run, its epochs (training + evaluation) and the rest (set-up)."""
    from gapan.train import train

    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gapan-bench-run-") as run_dir:
        started = time.perf_counter()
        final = train(cfg, reports.append, run_dir=run_dir)
        wall = time.perf_counter() - started
    epochs = sum(report["time_this_epoch_s"] for report in reports)
    return {
        "epochs": len(reports),
        "status": final.get("status"),
        "val_map_at_r": final.get("val_map_at_r"),
        "trial_s": wall,
        "epochs_s": epochs,
        "setup_s": wall - epochs,
        "epoch_s": [rounded(report["time_this_epoch_s"], 3) for report in reports],
    }


def run_one_study(seeds: int, epochs: int, cpus: int, concurrency: int) -> dict[str, Any]:
    """One real study through `run_study`: flow depth 2 only, `seeds` trials of equal length."""
    from gapan.space import load_space
    from gapan.tune import StudyOptions, run_study

    space = load_space("ablate_flow_depth")
    one_depth = {**space.search["flow.depth"], "values": [2]}
    space = dataclasses.replace(space, search={"flow.depth": one_depth}, baseline=2)
    with tempfile.TemporaryDirectory(prefix="gapan-bench-study-") as results_dir:
        options = StudyOptions(
            name="bench_overhead",
            results_dir=Path(results_dir),
            overrides={"train.epochs": epochs},
            seeds=seeds,
            cpus_per_trial=1.0,
            num_cpus=cpus,
            max_concurrent=concurrency,
        )
        started = time.perf_counter()
        study_dir = run_study(space, options)
        outer_wall = time.perf_counter() - started
        trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
        epochs_table = pd.read_csv(study_dir / "epochs.csv", dtype={"trial_id": str})
        study_wall = json.loads((study_dir / "environment.json").read_text())["study_wall_s"]
    count = len(trials)
    tune_time = float(trials["time_total_s"].sum())
    epoch_time = float(epochs_table["time_this_epoch_s"].sum())
    concurrency = min(count, concurrency, cpus)
    return {
        "trials": count,
        "completed": int((trials["status"] == "completed").sum()),
        "run_study_s": outer_wall,
        "study_wall_s": study_wall,
        "trials_time_total_s": tune_time,
        "trials_epochs_s": epoch_time,
        # The study's wall time beyond its trials' own time (Tune's time_total_s).
        "overhead_s": study_wall - tune_time / concurrency,
        "overhead_per_trial_s": (study_wall - tune_time / concurrency) / count,
        "overhead_per_trial_vs_epochs_s": (study_wall - epoch_time / concurrency) / count,
        "in_trial_setup_per_trial_s": (tune_time - epoch_time) / count,
    }


def study_figures(epochs: int, trials: int, cpus: int, concurrency: int) -> dict[str, Any]:
    """A study of `trials` equal trials and one of a single trial, on one Ray instance.

    Their overheads split into a fixed part per study (Tune's start, the trial worker's start
    and imports, the result tables) and a marginal part per trial:
    marginal = (overhead(n) - overhead(1)) / (n - 1), fixed = overhead(1) - marginal.
    """
    import ray

    from gapan.tune import StudyOptions, start_ray

    # A Ray instance of its own even where another cluster runs here (ray.init would join
    # that one, and refuse num_cpus); otherwise exactly as run_study starts it.
    os.environ["RAY_ADDRESS"] = "local"
    started = time.perf_counter()
    start_ray(StudyOptions(name="bench_overhead", num_cpus=cpus))
    ray_init = time.perf_counter() - started
    many = run_one_study(trials, epochs, cpus, concurrency)
    single = run_one_study(1, epochs, cpus, concurrency)
    ray.shutdown()
    marginal = (many["overhead_s"] - single["overhead_s"]) / max(trials - 1, 1)
    return {
        **many,
        "concurrency": min(trials, concurrency, cpus),
        "ray_init_s": ray_init,
        "single_trial_overhead_s": single["overhead_s"],
        "marginal_overhead_per_trial_s": marginal,
        "fixed_overhead_per_study_s": single["overhead_s"] - marginal,
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.frozen_trial",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rebuild-cache",
        action="store_true",
        help="time a fresh feature-cache build (in a temporary folder)",
    )
    parser.add_argument(
        "--epochs", type=int, default=8, help="epochs of the single trial (default 8)"
    )
    parser.add_argument(
        "--study-epochs", type=int, default=2, help="epochs per study trial (default 2)"
    )
    parser.add_argument(
        "--study-trials", type=int, default=6, help="trials of the larger study (default 6)"
    )
    parser.add_argument(
        "--study-concurrency",
        type=int,
        default=1,
        help="study trials at a time (default 1: the overhead alone, without idle CPUs)",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=os.cpu_count() or 1,
        help="CPUs of the Ray instance (default: all)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of the single trial (default: torch's own choice)",
    )
    parser.add_argument("--skip-study", action="store_true")
    add_output_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_flat({"train.epochs": args.epochs, "train.device": "cpu"})
    cache = cache_figures(cfg, args.rebuild_cache)
    print_table(
        "feature cache (embedded data set, mobilenetv2_100, 96 px)",
        [cache],
        ["images", "build_splits_s", "build_backbone_s", "cache_build_s", "cache_load_s"],
    )
    trial = one_trial(cfg)
    print_table(
        f"one default frozen-mode trial ({args.epochs} epochs)",
        [trial],
        ["epochs", "status", "val_map_at_r", "trial_s", "epochs_s", "setup_s"],
    )
    print(f"  seconds per epoch: {trial['epoch_s']}")
    study = None
    if not args.skip_study:
        study = study_figures(
            args.study_epochs, args.study_trials, args.cpus, args.study_concurrency
        )
        print_table(
            f"studies of {study['trials']} and of 1 equal trials x {args.study_epochs} epochs, "
            f"{study['concurrency']} at a time",
            [study],
            [
                "trials",
                "completed",
                "ray_init_s",
                "run_study_s",
                "study_wall_s",
                "trials_time_total_s",
                "trials_epochs_s",
                "overhead_per_trial_s",
                "overhead_per_trial_vs_epochs_s",
                "in_trial_setup_per_trial_s",
                "single_trial_overhead_s",
                "fixed_overhead_per_study_s",
                "marginal_overhead_per_trial_s",
            ],
        )

    def tidy(values: dict[str, Any] | None) -> dict[str, Any] | None:
        if values is None:
            return None
        return {
            key: rounded(value) if isinstance(value, float) and math.isfinite(value) else value
            for key, value in values.items()
        }

    emit(
        {
            "bench": "frozen_trial",
            "environment": environment("cpu"),
            "cache": tidy(cache),
            "trial": tidy(trial),
            "study": tidy(study),
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
