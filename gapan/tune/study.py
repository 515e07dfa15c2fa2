"""`run_study`: any study, run (or resumed) to the end; the one entry point of the runner.

It checks what a resume must match, holds the study folder for this driver, and hands the study
to what runs its kind: several class splits (`splits`), a tuned comparison (`tuned`), adaptive
seeds (`adaptive`), or a plain study (`runner.run_single`). Studies made of studies run their
parts through `parts.run_part`, never through this function, so the runner's modules import one
way only.
"""

from __future__ import annotations

from pathlib import Path

from gapan.space import StudySpace
from gapan.tune import folder, resume
from gapan.tune.adaptive import run_adaptive
from gapan.tune.options import StudyError, StudyOptions
from gapan.tune.runner import held, run_single
from gapan.tune.splits import run_splits
from gapan.tune.tuned import run_tuned


def run_study(space: StudySpace, options: StudyOptions) -> Path:
    """Run (or resume) a study to the end and write its results folder; return the folder.

    Raises:
        StudyUnfinished: The study stopped (Ctrl-C) before every trial ended; what ended is
            written, and a resume runs the rest.
        StudyError: It cannot start or resume; the message says why and what to do.
    """
    if options.adaptive and space.kind == "tuned":
        raise StudyError(
            "--seeds auto is for ablations and comparisons; a tuned comparison confirms "
            "each method with its space's SEEDS (or --seeds N)"
        )
    if options.resume:
        resume.check_same_splits(options.study_dir, options.splits)
        resume.check_same_seeding(options.study_dir, options.adaptive)
    folder.check_writable(options.study_dir)
    with held(options.study_dir):
        if options.splits > 1:
            return run_splits(space, options)
        if space.kind == "tuned":
            return run_tuned(space, options)
        if options.adaptive:
            return run_adaptive(space, options)
        return run_single(space, options)
