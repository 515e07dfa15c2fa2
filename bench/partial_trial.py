"""Partial fine-tuning on the CPU: the stage-output cache and one trial.

On the embedded data set with the default config (96 px) and ``model.backbone_mode=partial``:

1. The cache of the frozen stages' output: the time to build it in a fresh temporary folder
   (the training images in ``data.cached_views`` augmented views, the evaluated images once),
   its size on disk and in memory, and the time to read it back.
2. One partial trial, `gapan.train.train` with ``train.epochs=8`` and a run folder (checkpoints
   written as in a study), reading that cache: its wall time, split into set-up and epochs.

    python -m bench.partial_trial                      # mobilenetv2_100, last stage, 4 views
    python -m bench.partial_trial --backbone resnet50 --trainable-blocks 2 --views 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import add_output_argument, emit, environment, print_table, rounded
from bench.frozen_trial import one_trial
from gapan.config import ExperimentConfig, from_flat
from gapan.data import build_splits
from gapan.inputs import partial_inputs


def cache_figures(cfg: ExperimentConfig) -> dict[str, Any]:
    """Build the stage-output cache in the current cache root, which the caller made empty."""
    splits = build_splits(cfg.data)
    device = torch.device("cpu")
    # Seeded as `train` seeds before building its inputs: random weights (model.pretrained=none)
    # are then the trial's own, and so is the cache entry, keyed by the weights' identity.
    torch.manual_seed(cfg.train.seed)
    started = time.perf_counter()
    partial_inputs(cfg, splits, device)
    build = time.perf_counter() - started
    torch.manual_seed(cfg.train.seed)
    started = time.perf_counter()
    inputs = partial_inputs(cfg, splits, device)
    load = time.perf_counter() - started
    files = list(Path(os.environ["GAPAN_CACHE"], "features").glob("*.safetensors"))
    example, _, _ = next(inputs.train_batches(1))
    return {
        "images": len(splits.train) + len(splits.val) + len(splits.test),
        "train_images": len(splits.train),
        "views": cfg.data.cached_views,
        "map_shape": "x".join(str(size) for size in example.shape[1:]),
        "build_s": build,  # with building the backbone and cutting it
        "load_s": load,
        "disk_mb": sum(path.stat().st_size for path in files) / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.partial_trial",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--pretrained", help="weights (default: the config's)")
    parser.add_argument("--trainable-blocks", type=int, default=1)
    parser.add_argument("--views", type=int, default=4, help="data.cached_views")
    parser.add_argument("--epochs", type=int, default=8)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    flat = {
        "model.backbone_mode": "partial",
        "model.backbone": args.backbone,
        "model.trainable_blocks": args.trainable_blocks,
        "data.cached_views": args.views,
        "train.epochs": args.epochs,
        "train.device": "cpu",
    }
    if args.pretrained:
        flat["model.pretrained"] = args.pretrained
    from gapan.data.wesnoth import default_root

    # The prepared data set stays where it is; only the derived caches start empty.
    flat["data.root"] = str(default_root())
    cfg = from_flat(flat)
    shared = os.environ.get("GAPAN_CACHE")
    with tempfile.TemporaryDirectory(prefix="gapan-bench-partial-") as scratch:
        # A fresh cache for the stage outputs; the converted weights are copied in by the
        # loader from their package again, which the build time includes.
        os.environ["GAPAN_CACHE"] = scratch
        try:
            cache = cache_figures(cfg)
            trial = one_trial(cfg)
        finally:
            if shared is None:
                os.environ.pop("GAPAN_CACHE")
            else:
                os.environ["GAPAN_CACHE"] = shared
    title = f"{args.backbone}, last {args.trainable_blocks} stage(s) trained, 96 px"
    print_table(
        f"stage-output cache ({title})",
        [cache],
        ["images", "train_images", "views", "map_shape", "build_s", "load_s", "disk_mb"],
    )
    print_table(
        f"one partial trial ({args.epochs} epochs)",
        [trial],
        ["epochs", "status", "val_map_at_r", "trial_s", "epochs_s", "setup_s"],
    )
    print(f"  seconds per epoch: {trial['epoch_s']}")
    emit(
        {
            "bench": "partial_trial",
            "environment": environment("cpu"),
            # The prepared data set's folder is this machine's; the rest says what ran.
            "config": {key: value for key, value in flat.items() if key != "data.root"},
            "cache": {k: rounded(v) if isinstance(v, float) else v for k, v in cache.items()},
            "trial": {k: rounded(v) if isinstance(v, float) else v for k, v in trial.items()},
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
