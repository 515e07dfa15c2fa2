"""Frozen-backbone mode on the CPU: the feature cache, one trial, and a small study's overhead.

Three figures, on the embedded data set with the default config (MobileNetV2, 96 px):

1. The feature cache: its load time, and its build time when it is absent (or with
   --rebuild-cache, which builds a fresh copy in a temporary folder).
2. One default frozen-mode trial, `gapan.train.train` with ``train.epochs=8`` (a run folder, so
   checkpoints are written as in a study): its wall time, split into set-up (data, backbone,
   feature cache, model) and the epochs (training + evaluation).
3. A real study through `gapan.tune.run_study`: the flow-depth ablation, all 6 depths x 1 seed,
   2 epochs. Ray's start is timed on its own; the study's per-trial overhead is
   (study wall time - the trials' own time / concurrency) / trials, where a trial's own time is
   either Tune's ``time_total_s`` or only its epochs (training + evaluation), both shown.

    python -m bench.frozen_trial                  # about two minutes on 2 cores
    python -m bench.frozen_trial --rebuild-cache --epochs 8 --study-epochs 2
"""

from __future__ import annotations

import argparse
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


def study_figures(epochs: int, seeds: int, cpus: int) -> dict[str, Any]:
    """Run the flow-depth ablation once and split its wall time into trials and overhead."""
    import ray

    from gapan.space import load_space
    from gapan.tune import StudyOptions, _start_ray, run_study

    with tempfile.TemporaryDirectory(prefix="gapan-bench-study-") as results_dir:
        options = StudyOptions(
            name="bench_flow_depth",
            results_dir=Path(results_dir),
            overrides={"train.epochs": epochs},
            seeds=seeds,
            cpus_per_trial=1.0,
            num_cpus=cpus,
        )
        # A Ray instance of its own even where another cluster runs here (ray.init would join
        # that one, and refuse num_cpus); otherwise exactly as run_study starts it.
        os.environ["RAY_ADDRESS"] = "local"
        started = time.perf_counter()
        _start_ray(options)  # what run_study does first, timed on its own
        ray_init = time.perf_counter() - started
        started = time.perf_counter()
        study_dir = run_study(load_space("ablate_flow_depth"), options)
        outer_wall = time.perf_counter() - started
        trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
        epochs_table = pd.read_csv(study_dir / "epochs.csv", dtype={"trial_id": str})
        study_wall = json.loads((study_dir / "environment.json").read_text())["study_wall_s"]
    ray.shutdown()
    epoch_sums = epochs_table.groupby("trial_id")["time_this_epoch_s"].sum()
    per_trial = [
        {
            "depth": int(row["config/flow.depth"]),
            "time_total_s": rounded(row["time_total_s"], 3),
            "epochs_s": rounded(float(epoch_sums.get(row["trial_id"], math.nan)), 3),
        }
        for _, row in trials.sort_values("config/flow.depth").iterrows()
    ]
    count = len(trials)
    concurrency = min(count, int(cpus // options.cpus_per_trial))
    tune_time = float(trials["time_total_s"].sum())
    epoch_time = float(epochs_table["time_this_epoch_s"].sum())
    return {
        "trials": count,
        "completed": int((trials["status"] == "completed").sum()),
        "concurrency": concurrency,
        "ray_init_s": ray_init,
        "run_study_s": outer_wall,
        "study_wall_s": study_wall,
        "trials_time_total_s": tune_time,
        "trials_epochs_s": epoch_time,
        # What the issue calls per-trial overhead: the study's wall time beyond its trials' work.
        "overhead_per_trial_s": (study_wall - tune_time / concurrency) / count,
        "overhead_per_trial_vs_epochs_s": (study_wall - epoch_time / concurrency) / count,
        "in_trial_setup_per_trial_s": (tune_time - epoch_time) / count,
        "per_trial": per_trial,
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
    parser.add_argument("--study-seeds", type=int, default=1, help="seeds per depth (default 1)")
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
        study = study_figures(args.study_epochs, args.study_seeds, args.cpus)
        print_table(
            f"flow-depth ablation, {study['trials']} trials x {args.study_epochs} epochs, "
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
            ],
        )
        print_table("the study's trials", study["per_trial"], ["depth", "time_total_s", "epochs_s"])

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
