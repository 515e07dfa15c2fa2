"""Resuming a study: what must hold before Tune restores it, and after, so nothing is lost or run
that someone else planted."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gapan import results
from gapan.space import SPLIT_PREFIX, StudySpace
from gapan.tune.folder import (
    TUNE_DIR,
    earlier_experiments,
    holds_trials,
    started,
    study_artefacts,
)
from gapan.tune.options import StudyError
from gapan.tune.search import OPTUNA_FILE, journal

# What a resumed study must share with the one that started.
SAME_ON_RESUME = (
    "name",
    "kind",
    "metric",
    "mode",
    "search",
    "seeds",
    "fixed",
    "methods",
    "num_samples",
    "first_seed",
    "objectives",
)


def check_same_study(study_dir: Path, space: StudySpace, extending: bool = False) -> None:
    """Refuse to go on with a study whose study.json `space` would write differently (but for
    its number of trials, when an extended search asks for more)."""
    # A study written before these fields existed had their defaults.
    saved = {"first_seed": 0, "objectives": [], **read_study_file(study_dir)}
    wanted = space.to_dict()
    same = [key for key in SAME_ON_RESUME if not (extending and key == "num_samples")]
    differs = [key for key in same if saved.get(key) != wanted.get(key)]
    if differs:
        raise StudyError(
            f"{study_dir} belongs to another study or other options (different "
            f"{', '.join(differs)}); resume with the options it started with, or give a new --name"
        )


def check_same_splits(study_dir: Path, splits: int) -> None:
    """Refuse to resume a study on another number of class splits than it started with."""
    if not (study_dir / results.STUDY_FILE).exists():
        return  # nothing to resume: the study's own checks say so
    ran = len(read_study_file(study_dir).get("splits") or [0])
    if ran != splits:
        flag = f"--splits {ran}" if ran > 1 else "no --splits"
        raise StudyError(
            f"{study_dir} ran on {ran} class split{'s' if ran > 1 else ''}, not {splits}; resume "
            f"it with {flag}, or give a new --name to run another study"
        )


def check_same_seeding(study_dir: Path, adaptive: bool) -> None:
    """Refuse to resume an adaptive study without --seeds auto, or another one with it."""
    if not (study_dir / results.STUDY_FILE).exists():
        return  # nothing to resume: the study's own checks say so
    saved = read_study_file(study_dir)
    if "splits" in saved:
        for split in sorted(study_dir.glob(f"{SPLIT_PREFIX}*/")):
            check_same_seeding(split, adaptive)
        return
    design = saved.get("sequential")
    if design is not None and not adaptive:
        flags = f"--seeds auto --min-seeds {design.get('min_seeds')} --max-seeds " + str(
            design.get("max_seeds")
        )
        if design.get("precision"):
            flags += f" --precision {design['precision']}"
        raise StudyError(
            f"{study_dir} is an adaptive study (--seeds auto): resume it with --resume {flags} "
            "and the other flags it started with"
        )
    if design is None and adaptive:
        raise StudyError(
            f"{study_dir} holds a study with a fixed number of seeds, not an adaptive one; "
            "resume it without --seeds auto (with the --seeds it started with, if any)"
        )


def extension(study_dir: Path, space: StudySpace) -> int | None:
    """For a search resumed with a larger --num-samples than it ran: the trials it ran before,
    which a new Tune experiment goes on from, with the sampler's whole history; None for a
    resume that Tune restores as it was.

    A new experiment, because Tune keeps its number of trials in the state it restores. It is
    also the answer for an extension stopped before its experiment's first snapshot.

    Raises:
        StudyError: --num-samples asks for fewer trials than the search planned, or for more
            before it finished the ones it planned.
    """
    if space.kind != "search" or not (study_dir / results.STUDY_FILE).exists():
        return None
    planned = read_study_file(study_dir).get("num_samples")
    ended = _ended_in_table(study_dir, space) or 0
    if planned == space.num_samples:
        # An extension stopped before its experiment recorded a trial starts that experiment
        # again; one that recorded trials is resumed by Tune.
        if earlier_experiments(study_dir) and not holds_trials(study_dir / TUNE_DIR):
            return ended
        return None
    if not isinstance(planned, int) or space.num_samples < planned:
        raise StudyError(
            f"{study_dir} is a search of {planned} trials ({ended} ended); --num-samples "
            f"{space.num_samples} would drop some. Resume it with --num-samples {planned}, or "
            f"extend it with a larger number"
        )
    if ended < planned:
        raise StudyError(
            f"{study_dir} has ended {ended} of its {planned} trials; finish them first (the same "
            f"command with --resume --num-samples {planned}), then extend it to "
            f"--num-samples {space.num_samples}"
        )
    return planned


def check_resumable(study_dir: Path, space: StudySpace, extending: bool = False) -> None:
    """Refuse a resume that cannot work, saying why and what to do instead; `extending`: a
    search extended (`extension`), whose new experiment may not have started yet."""
    if not (study_dir / results.STUDY_FILE).exists():
        leftovers = study_artefacts(study_dir)
        if leftovers:
            raise StudyError(
                f"{study_dir} has no {results.STUDY_FILE}, so it cannot be resumed, but it holds a "
                f"study's results ({', '.join(leftovers)}). Restore {results.STUDY_FILE} from a "
                "backup to resume it, or give a new --name to start another study; do not delete "
                "parts of a study folder."
            )
        raise StudyError(f"{study_dir} holds no study to resume; run without --resume to start it")
    if not started(study_dir) and not extending:
        raise StudyError(
            f"{study_dir} holds no Tune experiment to resume ({study_dir / TUNE_DIR} is missing "
            "or incomplete)"
            + (
                "; its study stopped before its first trial: run without --resume to start it"
                if not (study_dir / results.TRIALS_FILE).exists()
                else ""
            )
        )
    check_trusted(study_dir)
    if not extending or holds_trials(study_dir / TUNE_DIR):
        check_experiment_state(study_dir)
    for earlier in earlier_experiments(study_dir):
        check_experiment_state(study_dir, earlier)
    saved = read_study_file(study_dir)
    if saved.get("folder") not in (None, str(study_dir)):
        raise StudyError(
            f"{study_dir} was made as {saved['folder']} and has moved since; Tune's and Optuna's "
            "state inside it name the old place, so a resume here would write there. Resume it "
            "where it was made, or give a new --name to start a new study."
        )
    check_same_study(study_dir, space, extending)


def check_trusted(study_dir: Path) -> None:
    """Refuse to resume from state files that someone else could have written.

    Tune's resume unpickles its state (tuner.pkl, trials serialised inside its experiment
    state), and unpickling runs whatever code the file names. Only a folder whose files belong to
    this user and that no one else may write is resumed (docs/when-things-go-wrong.md, the trust
    model).
    """
    user = os.getuid()
    paths = [study_dir, study_dir / OPTUNA_FILE]
    for tune_dir in [study_dir / TUNE_DIR, *earlier_experiments(study_dir)]:
        paths += [tune_dir, *sorted(tune_dir.rglob("*"))]
    for path in paths:
        if not path.exists():
            continue
        info = path.lstat()
        problem = ""
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symbolic link, whose target could be anyone's"
        elif info.st_uid != user:
            problem = f"belongs to another user (uid {info.st_uid})"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"may be written by others (mode {stat.filemode(info.st_mode)})"
        if problem:
            raise StudyError(
                f"{path} {problem}: resuming unpickles the study's state files, which would run "
                "any code planted in them, so it is refused. If you trust every user who can "
                f"write it, make it yours and private (chown, then chmod go-w {path}) and resume; "
                "otherwise start a new study with --name."
            )


def check_experiment_state(study_dir: Path, tune_dir: Path | None = None) -> None:
    """Refuse a resume whose Tune experiment state (or the searcher's, beside it) is unreadable.

    Tune would print the error, start the experiment afresh and replace every finished trial's
    record; the study folder's tables must never shrink that way.
    """
    tune_dir = tune_dir or study_dir / TUNE_DIR
    experiment = sorted(tune_dir.glob("experiment_state-*.json"))
    searcher = sorted(tune_dir.glob("searcher-state-*.json"))
    problem = ""
    if not experiment and (study_dir / results.TRIALS_FILE).exists():
        where = tune_dir
        problem = f"Tune's experiment state (experiment_state-*.json in {where}) is missing"
    for state in experiment[-1:] + searcher[-1:]:
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problem = problem or f"Tune's experiment state {state} is damaged ({error})"
    if problem:
        raise StudyError(
            f"{problem}, after a full disk or a crash while it was written; resuming would start "
            f"the study afresh and drop its finished trials. They are safe in "
            f"{results.TRIALS_FILE} and {OPTUNA_FILE}. Restore {tune_dir.name}/ from a backup and "
            "pass --resume again, or give a new --name to start a new study (this folder's report "
            "still rebuilds with `python -m reports`)."
        )


def ended_trials(study_dir: Path, space: StudySpace) -> dict[str, int]:
    """How many trials the folder already records as ended, by the file that records them.

    trials.csv is the record when there is one. The Optuna journal runs ahead of it (Optuna
    records a trial's end before Tune's next snapshot), so its count is only the journal's
    check that it can be read, and the record only when trials.csv is missing."""
    counts: dict[str, int] = {}
    in_table = _ended_in_table(study_dir, space)
    if in_table is not None:
        counts[results.TRIALS_FILE] = in_table
    if (study_dir / OPTUNA_FILE).exists():
        try:
            study = optuna.load_study(study_name=space.name, storage=journal(study_dir))
            finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
            journal_count = len(study.get_trials(deepcopy=False, states=finished))
        except (ValueError, KeyError, OSError) as error:
            raise StudyError(
                f"{study_dir / OPTUNA_FILE}, the Optuna study, cannot be read "
                f"({type(error).__name__}: {error}); the sampler's history is in it. Restore it "
                "from a backup and resume, or give a new --name to start a new study (this "
                "folder's report still rebuilds with `python -m reports`)."
            ) from None
        if results.TRIALS_FILE not in counts:
            counts[OPTUNA_FILE] = journal_count
    return counts


def _ended_in_table(study_dir: Path, space: StudySpace) -> int | None:
    """The trials trials.csv records as ended; None when there is no trials.csv."""
    table = study_dir / results.TRIALS_FILE
    if not table.exists():
        return None
    ended = results.ended_statuses(space.scheduler is not None)
    with table.open(newline="", encoding="utf-8") as file:
        return sum(row.get("status") in ended for row in csv.DictReader(file))


def check_nothing_lost(before: dict[str, int], records: list[results.TrialRecord]) -> None:
    """Refuse to write tables with fewer ended trials than the folder recorded before a resume."""
    now = sum(results.trial_status(record) in results.ENDED for record in records)
    if not before or now >= max(before.values()):
        return
    recorded = ", ".join(f"{name}: {count}" for name, count in before.items())
    raise StudyError(
        f"the resumed study holds {now} ended trials where the folder recorded more ({recorded}): "
        "Tune lost part of its experiment state. Nothing was written; the folder's tables are as "
        f"they were. Restore {TUNE_DIR}/ from a backup and pass --resume again, or give a new "
        "--name to start a new study."
    )


def read_study_file(study_dir: Path) -> dict[str, Any]:
    """study.json, or a StudyError naming it when it is damaged."""
    path = study_dir / results.STUDY_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise StudyError(
            f"{path} is damaged ({error}); it records what the study asked for. Restore it from "
            "a backup to resume, or give a new --name to start another study."
        ) from None
    return saved
