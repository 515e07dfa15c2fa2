"""Packing: N trials sharing one GPU (1/N each) against one trial alone, in real studies.

Two studies run through `gapan.tune.run_study` on the same Ray instance, with identical trials
(the same setting, different seeds): first --alone-trials trials at 1 GPU each (so one at a
time), then N trials at 1/N GPU each, all at once. Every trial fine-tunes a small backbone with
random weights on synthetic JPEG images (written once into --data-dir) with the same steps,
epochs, CPUs and DataLoader workers, so the per-trial work is the same in both.

Throughput is training images per second. A trial's rate counts its epochs after the first (the
first pays for worker start-up and cuDNN tuning); an epoch's time includes its small validation.
Packed throughput is the sum of the N concurrent trials' rates; the target is at least 0.85 x N
times the rate of a trial alone. The wall-clock figure (all the study's training images over the
study's wall time) is shown beside it. On CUDA, a thread samples each process's GPU memory
(nvidia-smi) to check it against the trial's cap, its 1/N share of the GPU.

    python -m bench.packing                          # GPU: 4 trials at 0.25 GPU, mobilenetv2_100
    python -m bench.packing --device cpu --trials 2 --alone-trials 1 --epochs 2 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.common import (
    add_data_dir_argument,
    bench_parser,
    emit,
    environment,
    fill_device_defaults,
    print_table,
    rounded,
    write_image_folder,
)
from gapan.space import parse_space

# Identical trials: one setting of a knob that does not change the work, one trial per seed.
PACKING_SPACE = '''"""Packing: identical trials of one setting, one per seed."""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 1
FIXED = {}
SEARCH = {"prior.variance": {"type": "float", "values": [1.0]}}
BASELINE = 1.0
'''


class GpuMemoryMonitor(threading.Thread):
    """Peak GPU memory of every process on the GPU, sampled with nvidia-smi."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: dict[str, int] = {}  # pid -> MiB
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid, used in _compute_apps():
                self.peaks[pid] = max(used, self.peaks.get(pid, 0))
            self._stop_event.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        return dict(self.peaks)


def _compute_apps() -> list[tuple[str, int]]:
    output = _nvidia_smi("--query-compute-apps=pid,used_memory")
    apps = []
    for line in output.splitlines():
        pid, _, used = line.partition(",")
        if used.strip().isdigit():
            apps.append((pid.strip(), int(used)))
    return apps


def _nvidia_smi(query: str) -> str:
    if shutil.which("nvidia-smi") is None:
        return ""
    done = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout


def gpu_total_mib() -> int | None:
    text = _nvidia_smi("--query-gpu=memory.total").strip().splitlines()
    return int(text[0]) if text and text[0].strip().isdigit() else None


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A results table; an empty one (every trial failed before its first epoch) has `columns`."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns)


def run_phase(
    name: str,
    trials: int,
    gpus: float,
    args: argparse.Namespace,
    overrides: dict[str, Any],
    results_dir: Path,
) -> dict[str, Any]:
    """Run `trials` identical trials at `gpus` GPUs each; their rates and the study's wall time."""
    from gapan.tune import StudyOptions, run_study

    space = parse_space(PACKING_SPACE, name)
    options = StudyOptions(
        name=name,
        results_dir=results_dir,
        overrides=overrides,
        seeds=trials,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=gpus,
        max_failures=0,
    )
    monitor = GpuMemoryMonitor() if gpus > 0 and shutil.which("nvidia-smi") else None
    if monitor is not None:
        monitor.start()
    started = time.perf_counter()
    study_dir = run_study(space, options)
    wall = time.perf_counter() - started
    peaks = monitor.stop() if monitor is not None else {}
    table = read_table(study_dir / "trials.csv", ["trial_id", "status", "time_total_s", "error"])
    epochs = read_table(study_dir / "epochs.csv", ["trial_id", "epoch", "time_this_epoch_s"])
    study_wall = json.loads((study_dir / "environment.json").read_text())["study_wall_s"]
    images_per_epoch = args.steps * args.batch
    rates = []
    for trial_id in table["trial_id"]:
        own = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        steady = own[own["epoch"] > 1] if len(own) > 1 else own
        seconds = float(steady["time_this_epoch_s"].sum())
        rates.append(len(steady) * images_per_epoch / seconds if seconds > 0 else float("nan"))
    total_images = int(len(epochs) * images_per_epoch)
    return {
        "phase": name,
        "trials": len(table),
        "completed": int((table["status"] == "completed").sum()),
        "gpus_per_trial": gpus,
        "cpus_per_trial": args.cpus_per_trial,
        "trial_img_per_s": [rounded(rate) for rate in rates],
        "mean_trial_img_per_s": rounded(sum(rates) / len(rates)) if rates else None,
        "sum_trial_img_per_s": rounded(sum(rates)),
        "study_wall_s": rounded(study_wall),
        "run_study_s": rounded(wall),
        "wall_img_per_s": rounded(total_images / study_wall),
        "trial_time_total_s": [rounded(value) for value in table["time_total_s"]],
        "gpu_memory_peak_mib": peaks,
        "errors": [error for error in table["error"] if isinstance(error, str) and error],
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser("packing", __doc__)
    parser.add_argument(
        "--trials", type=int, help="N, trials packed together (default 4 on CUDA, 2 on the CPU)"
    )
    parser.add_argument("--alone-trials", type=int, default=1, help="trials run alone (default 1)")
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument(
        "--image-size", type=int, default=96, help="pixels (default 96, the config default)"
    )
    parser.add_argument(
        "--batch", type=int, help="images per step (default 64 on CUDA, 16 on the CPU)"
    )
    parser.add_argument(
        "--steps", type=int, help="steps per epoch (default 40 on CUDA, 3 on the CPU)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--cpus-per-trial", type=float, help="default: the CPUs / N")
    parser.add_argument(
        "--workers", type=int, help="DataLoader workers per trial (default: CPUs per trial - 1)"
    )
    add_data_dir_argument(parser)
    args = fill_device_defaults(
        parser.parse_args(argv), trials=(4, 2), batch=(64, 16), steps=(40, 3)
    )
    cpus = os.cpu_count() or 1
    args.cpus_per_trial = args.cpus_per_trial or float(max(1, cpus // args.trials))
    if args.workers is None:
        args.workers = max(0, int(args.cpus_per_trial) - 1)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    import ray

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    # Small photos: the decoding of a few workers keeps up with a small backbone, so the GPU,
    # the shared resource, is what packing tests.
    root = args.data_dir / "packing-160x120"
    split_file = write_image_folder(root, 40, 40, 8, 20, width=160, height=120)
    overrides = {
        "data.name": "folder",
        "data.root": str(root),
        "data.split_file": str(split_file),
        "data.image_size": args.image_size,
        "data.classes_per_batch": args.batch // 4,
        "data.samples_per_class": 4,
        "data.num_workers": args.workers,
        "model.backbone": args.backbone,
        "model.pretrained": "none",
        "model.backbone_mode": "finetune",
        "train.epochs": args.epochs,
        "train.steps_per_epoch": args.steps,
        "train.device": device.type,
    }
    started = time.perf_counter()
    # Without the dashboard: a GPU host may have Ray without its dashboard packages. The GPU
    # count is given, not detected, so a detection miss cannot leave the trials waiting forever.
    # address="local": a new instance of its own, even where another Ray cluster runs.
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        num_gpus=torch.cuda.device_count() if on_cuda else 0,
        include_dashboard=False,
        log_to_driver=False,
    )
    ray_init = time.perf_counter() - started
    gpu_share = 1.0 / args.trials if on_cuda else 0.0
    with tempfile.TemporaryDirectory(prefix="gapan-bench-packing-") as results_dir:
        alone = run_phase(
            "packing_alone",
            args.alone_trials,
            1.0 if on_cuda else 0.0,
            args,
            overrides,
            Path(results_dir),
        )
        packed = run_phase(
            "packing_shared", args.trials, gpu_share, args, overrides, Path(results_dir)
        )
    ray.shutdown()

    total_mib = gpu_total_mib() if on_cuda else None
    cap_mib = int(total_mib * gpu_share) if total_mib else None
    peaks = packed["gpu_memory_peak_mib"]
    alone_rate = alone["mean_trial_img_per_s"]
    summary = {
        "trials": args.trials,
        "alone_img_per_s": alone_rate,
        "packed_img_per_s": packed["sum_trial_img_per_s"],
        "speedup": rounded(packed["sum_trial_img_per_s"] / alone_rate) if alone_rate else None,
        "target_speedup": rounded(0.85 * args.trials),
        "wall_speedup": rounded(packed["wall_img_per_s"] / alone["wall_img_per_s"]),
        "cap_mib": cap_mib,
        "max_process_mib": max(peaks.values()) if peaks else None,
        "within_cap": (max(peaks.values()) <= cap_mib) if peaks and cap_mib else None,
    }
    print_table(
        f"trials alone vs {args.trials} packed, {args.backbone}, batch {args.batch}, "
        f"{args.image_size} px, {device.type}",
        [alone, packed],
        [
            "phase",
            "trials",
            "completed",
            "gpus_per_trial",
            "cpus_per_trial",
            "mean_trial_img_per_s",
            "sum_trial_img_per_s",
            "study_wall_s",
            "wall_img_per_s",
        ],
    )
    print_table("packing", [summary], list(summary))
    if peaks:
        print(
            "GPU memory peak per process (MiB, nvidia-smi, CUDA context included): "
            + ", ".join(f"{pid}: {mib}" for pid, mib in sorted(peaks.items()))
        )
    emit(
        {
            "bench": "packing",
            "environment": environment(device),
            "ray_init_s": rounded(ray_init),
            "summary": summary,
            "phases": [alone, packed],
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
