"""A finished study's orchestration overhead, from its results folder alone.

A study with S slots (trials at once) that ran trials of own times t_i (Tune's ``time_total_s``:
set-up, training and evaluation inside the trial) in a wall time W spent
W - sum(t_i) / S outside its trials: Ray and Tune starting trials and workers, the searcher,
the result tables, and slots left idle (a last long trial running alone). Per trial, that is
over the trial count. Slot use is sum(t_i) / (S x W).

S is what the machine allowed: its CPUs over the study's CPUs per trial, or its GPUs over the
GPUs per trial (from the folder's environment.json and study.json), or --slots (a cluster).

    python studies/ablate_flow_depth.py && python -m bench.study_overhead results/ablate_flow_depth
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import add_output_argument, emit, print_table, relative_command, rounded


def slots_of(study: dict[str, Any], environment: dict[str, Any]) -> int:
    """Trials the study's machine ran at once, from its resources per trial."""
    resources = study.get("resources", {})
    limits = []
    if resources.get("gpu"):
        limits.append(environment.get("gpu_count", 0) / resources["gpu"])
    if resources.get("cpu"):
        limits.append(environment["cpu_count"] / resources["cpu"])
    return max(1, int(min(limits, default=1)))


def overhead(study_dir: Path, slots: int | None) -> dict[str, Any]:
    study = json.loads((study_dir / "study.json").read_text())
    environment = json.loads((study_dir / "environment.json").read_text())
    if "study_wall_s" not in environment:
        raise SystemExit(f"{study_dir}: the study has not finished (no study_wall_s)")
    trials = pd.read_csv(study_dir / "trials.csv")
    slots = slots or slots_of(study, environment)
    wall = environment["study_wall_s"]
    own = float(trials["time_total_s"].sum())
    outside = wall - own / slots
    return {
        "study": study_dir.name,
        "trials": len(trials),
        "slots": slots,
        "study_wall_s": rounded(wall),
        "trials_time_total_s": rounded(own),
        "overhead_s": rounded(outside),
        "overhead_per_trial_s": rounded(outside / len(trials)),
        "slot_use": rounded(own / (slots * wall)),
        "command": relative_command(shlex.split(environment.get("command") or "")),
        "finished": environment.get("finished"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.study_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study_dirs", nargs="+", type=Path, help="finished study folders")
    parser.add_argument("--slots", type=int, help="trials at once (default: from the folder)")
    add_output_argument(parser)
    args = parser.parse_args(argv)
    rows = [overhead(study_dir, args.slots) for study_dir in args.study_dirs]
    columns = [key for key in rows[0] if key not in ("command", "finished")]
    print_table("study overhead (wall - trials' own time / slots)", rows, columns)
    emit({"bench": "study_overhead", "studies": rows}, args.json_out)


if __name__ == "__main__":
    main()
