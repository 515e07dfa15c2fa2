"""`run_splits`: a study replicated on several class splits, each split a study of its own.

The study folder holds ``split_<k>/`` for k = 0 .. K-1: the same study (of any kind, a tuned
comparison or adaptive seeds included) run with ``data.split_seed = k``, so every split tunes
and is tested on its own classes. The folder's study.json lists the splits, for the report.
Split 0 is the data set's own split: a study on one split is the study as it runs without
``--splits``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gapan import results
from gapan.space import SPLIT_KEY, SPLIT_PREFIX, StudySpace
from gapan.tune.adaptive import adaptive_design, run_adaptive
from gapan.tune.options import StudyError, StudyOptions, apply_options
from gapan.tune.parts import check_whole_study, run_part
from gapan.tune.tuned import run_tuned

FINISHED_SPLITS = "finished_splits"  # study.json: the splits whose study ran to its end


def run_splits(space: StudySpace, options: StudyOptions) -> Path:
    """Run the study on splits 0 .. ``options.splits`` - 1, one after another; return the
    folder. With ``options.resume`` the finished splits are kept as they are (an adaptive one
    takes no more rounds) and the rest continue."""
    if SPLIT_KEY in options.overrides or SPLIT_KEY in space.fixed:
        raise StudyError(
            f"--splits chooses {SPLIT_KEY} for each split; leave it out of --set and FIXED"
        )
    applied = apply_options(space, options)
    if options.adaptive:
        adaptive_design(space, options)  # refused before any folder is written
    dataset = applied.fixed.get("data.name", "wesnoth")
    if dataset != "wesnoth":
        raise StudyError(
            f"--splits draws other class splits of the embedded set only; {dataset} keeps its "
            "standard split: run without --splits"
        )
    study_dir = options.study_dir
    check_whole_study(study_dir, applied, options.resume)
    splits = list(range(options.splits))
    finished = results.read_study(study_dir).get(FINISHED_SPLITS, []) if options.resume else []

    def record() -> None:
        extra = {"folder": str(study_dir), "splits": splits, FINISHED_SPLITS: finished}
        results.write_study(study_dir, applied, {**extra, **options.reporting})

    record()
    for split in splits:
        name = f"{SPLIT_PREFIX}{split}"
        if split in finished:
            print(f"{study_dir / name} finished before; kept as it is", flush=True)
            continue
        print(f"Split {split} ({split + 1} of {len(splits)}): {study_dir / name}", flush=True)
        split_options = dataclasses.replace(
            options, overrides={**options.overrides, SPLIT_KEY: split}, splits=1
        )
        if space.kind == "tuned" or options.adaptive:
            # A study of parts keeps its finished parts on a resume, and stops with an error
            # at an unfinished one, by itself.
            resumed = options.resume and (study_dir / name / results.STUDY_FILE).exists()
            split_study = dataclasses.replace(
                split_options, name=name, storage=str(study_dir), resume=resumed
            )
            (run_tuned if space.kind == "tuned" else run_adaptive)(space, split_study)
        else:
            part = dataclasses.replace(apply_options(space, split_options), name=name)
            run_part(part, options, study_dir)
        finished.append(split)
        record()
    return study_dir
