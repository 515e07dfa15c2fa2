"""The study runner: the only package that imports Ray, and with the reports the only one that
imports Optuna. When Ray's or Optuna's API moves, these are the files to edit.

- `options`: what a run is asked for (`StudyOptions`) applied to a search space;
- `search`: Optuna's ask and tell behind Ray Tune's `Searcher` (`StudySearcher`), the scheduler;
- `trainable`: the trainer as a Tune trainable (`run_trial`);
- `cluster`: Ray started or joined (`start_ray`), and the checks that fail fast before it;
- `folder`: the study folder before and after a run, and Tune's results turned into records;
- `lock`: one driver per study folder, and which process holds it;
- `checkpoints`: what a study keeps of its trials (`--keep-checkpoints`); `prune`, the same
  for a finished folder (``python -m gapan.tune.prune``);
- `resume`: what a resume must find (a trusted, intact folder) and must keep (every ended trial);
- `faults`: injected faults for rehearsals, out-of-memory reasons;
- `runner`: `run_single`, one plain study, which ties them together;
- `parts`, `tuned`, `splits`, `adaptive`: studies made of studies;
- `study`: `run_study`, any study: the one entry point;
- `cli`: the command line every study script shares.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use, so that `gapan.tune.cli` answers --help before Ray and torch load.
_PUBLIC = {
    "StudyError": "gapan.tune.options",
    "StudyOptions": "gapan.tune.options",
    "apply_options": "gapan.tune.options",
    "smoke_space": "gapan.tune.options",
    "start_ray": "gapan.tune.cluster",
    "run_study": "gapan.tune.study",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gapan.tune' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
