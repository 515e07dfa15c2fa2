"""Studies made of several studies in one folder (a tuned comparison's searches, an adaptive
study's rounds): each part runs, resumes and is kept like any other study."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from gapan import results
from gapan.space import StudySpace
from gapan.tune import folder
from gapan.tune.options import StudyError, StudyOptions
from gapan.tune.resume import check_same_study
from gapan.tune.runner import held, run_single


def run_part(part: StudySpace, options: StudyOptions, study_dir: Path) -> Path:
    """Run one part in `study_dir/part.name`, unless a resume finds it finished."""
    part_dir = study_dir / part.name
    if options.resume and finished(part_dir, part):
        print(f"{part_dir} finished before; kept as it is", flush=True)
        return part_dir
    part_options = dataclasses.replace(
        options,
        name=part.name,
        storage=str(study_dir),
        # The whole study applied these to every part already.
        overrides={},
        smoke=False,
        seeds=None,
        num_samples=None,
        adaptive=False,
        splits=1,
        # A warm start seeds the parts that search; the others run a fixed grid.
        warm_start=options.warm_start if part.kind == "search" else (),
        # A part stopped before Tune recorded it starts afresh (`folder.check_new`).
        resume=options.resume and folder.started(part_dir),
    )
    print(f"Running {part_dir.name} ({part.trial_count()} trials)", flush=True)
    folder.check_writable(part_dir)
    with held(part_dir):
        run_single(part, part_options)
    if not finished(part_dir, part):
        raise StudyError(
            f"the study stopped in {part_dir} before all its trials ended; what finished is "
            "kept: run the same command with --resume to continue"
        )
    return part_dir


def finished(part_dir: Path, part: StudySpace) -> bool:
    """Whether a part wrote its tables with every planned trial ended.

    Raises:
        StudyError: The part's folder holds a study with other settings than `part`.
    """
    if (part_dir / results.STUDY_FILE).exists():
        check_same_study(part_dir, part)
    try:
        trials = pd.read_csv(part_dir / results.TRIALS_FILE)
    except (OSError, ValueError, pd.errors.ParserError):
        return False
    statuses = results.ended_statuses(part.scheduler is not None)
    ended = trials["status"].isin(statuses).all() if "status" in trials else False
    return len(trials) == part.trial_count() and bool(ended)


def check_whole_study(study_dir: Path, space: StudySpace, resume: bool) -> None:
    """Before a study of parts starts: a new one needs a folder without a study, a resume the
    study.json of the same study."""
    study_file = study_dir / results.STUDY_FILE
    if resume:
        if not study_file.exists():
            raise StudyError(f"{study_dir} holds no study to resume; run without --resume")
        check_same_study(study_dir, space)
        return
    if study_file.exists() or any(study_dir.glob(f"*/{results.STUDY_FILE}")):
        raise StudyError(
            f"{study_dir} already holds a study; pass --resume to continue it, or --name to "
            "start a new one beside it"
        )
    folder.check_writable(study_dir)
