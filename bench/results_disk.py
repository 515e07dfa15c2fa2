"""What a study leaves on disk and writes on the way: run a study command, measure its folder.

    python -m bench.results_disk results/ablate_flow_depth -- python studies/ablate_flow_depth.py

Runs the command (everything after ``--``) in a child process and reports:

- ``wall_s``: the command's wall time (the study, its report, Ray's start and stop);
- ``study_wall_s``: the study's own wall time (its environment.json);
- ``folder_mb``, ``models_mb``, ``tune_mb``: the study folder's size at the end, and its kept
  weights' and Tune folder's share;
- ``peak_folder_mb``: the largest size the folder reached, sampled every ``--every`` seconds;
- ``disk_written_mb``: what reached the disk that holds the study folder while the command ran
  (sectors written, from /sys/dev/block, after a final sync): the study's files and everything
  else written there, trials' working copies and Ray's logs included, by any process (run it
  on an otherwise idle machine). Files deleted before the kernel wrote them back never reach
  the disk and are not counted.

Linux only. The study folder must not exist before (a new ``--name``/``--results-dir``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import add_output_argument, emit, print_table, relative_command, rounded

PR_SET_CHILD_SUBREAPER = 36


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue  # a file deleted while walking
    return total


def disk_written_bytes(folder: Path) -> int:
    """Bytes written so far to the block device that holds `folder` (or its first parent)."""
    while not folder.exists():
        folder = folder.parent
    device = os.stat(folder).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat").read_text()
    return int(stat.split()[6]) * 512  # sectors written, of 512 bytes whatever the device's


def reap_all(timeout: float) -> None:
    """Wait for every descendant handed to this subreaper; end those left after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0 and time.monotonic() > deadline:
            for child in children():
                os.kill(child, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        elif pid == 0:
            time.sleep(0.2)


def children() -> list[int]:
    """This process's children (orphans of its descendants included), from /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rpartition(") ")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid():
            found.append(int(entry.name))
    return found


def measure(study_dir: Path, command: list[str], every: float) -> dict[str, Any]:
    if study_dir.exists():
        raise SystemExit(f"{study_dir} exists; measure a new study folder")
    # Ray's processes outlive the driver by a moment: as their subreaper this process waits for
    # every one of them before the final count.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("cannot become a child subreaper (Linux only)")
    os.sync()
    written_before = disk_written_bytes(study_dir)
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak = 0
    while process.poll() is None:
        if study_dir.exists():
            peak = max(peak, folder_bytes(study_dir))
        time.sleep(every)
    wall = time.perf_counter() - started
    reap_all(timeout=60)
    os.sync()
    written = disk_written_bytes(study_dir) - written_before
    size = folder_bytes(study_dir)
    environment = json.loads((study_dir / "environment.json").read_text())
    megabytes = 1e6
    return {
        "study": study_dir.name,
        "command": relative_command(command),
        "returncode": process.returncode,
        "wall_s": rounded(wall),
        "study_wall_s": rounded(environment.get("study_wall_s", float("nan"))),
        "trials": environment.get("trials"),
        "folder_mb": rounded(size / megabytes),
        "peak_folder_mb": rounded(max(peak, size) / megabytes),
        "models_mb": rounded(folder_bytes(study_dir / "models") / megabytes),
        "tune_mb": rounded(folder_bytes(study_dir / "tune") / megabytes),
        "disk_written_mb": rounded(written / megabytes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.results_disk",
        usage="python -m bench.results_disk STUDY_DIR [--every S] [--json-out FILE] -- COMMAND...",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study_dir", type=Path, help="the folder the command's study writes")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between size samples")
    add_output_argument(parser)
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the study command after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    result = measure(args.study_dir, command, args.every)
    columns = [key for key in result if key not in ("study", "command")]
    print_table(f"{result['study']}: {result['command']}", [result], columns)
    emit({"bench": "results_disk", **result}, args.json_out)
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
