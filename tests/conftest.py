"""Shared test helpers."""

import sys
from pathlib import Path


def study_command(space_file: Path, results: Path, name: str, resume: bool) -> list[str]:
    """A Python command running one study in its own process (and its own Ray instance), so a
    test can kill it the way a crash would."""
    code = (
        "from pathlib import Path; from gapan.space import load_space; from gapan.tune import *; "
        f"run_study(load_space({str(space_file)!r}), StudyOptions(name={name!r}, "
        f"results_dir=Path({str(results)!r}), max_concurrent=1, num_cpus=2, dashboard_port=0, "
        f"resume={resume}))"
    )
    return [sys.executable, "-c", code]
