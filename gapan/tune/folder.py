"""The study folder's life cycle: refusing or clearing it, checking a resume, and turning Tune's
results into the folder's tables."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune

from gapan import results
from gapan.space import StudySpace
from gapan.tune.faults import FAULTS_DIR
from gapan.tune.options import StudyError
from gapan.tune.search import OPTUNA_FILE, journal

TUNE_DIR = "tune"  # Tune's own experiment folder inside the study folder


def started(study_dir: Path) -> bool:
    """Whether Tune recorded the study: it writes its first snapshot before any trial ends."""
    return tune.Tuner.can_restore(str(study_dir / TUNE_DIR))


def check_writable(study_dir: Path) -> None:
    """Refuse, before any work, a study folder that cannot be written."""
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=study_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise StudyError(
            f"cannot write the study folder {study_dir} ({error.strerror or error}). Choose a "
            "folder you can write with --results-dir (or --storage), or fix its permissions."
        ) from None


def check_free_space(study_dir: Path, need: int) -> None:
    """Refuse a study whose checkpoints would not fit on its disk, before its first trial."""
    free = shutil.disk_usage(study_dir).free
    if free < need:
        raise StudyError(
            f"the study needs about {need / 1e9:.1f} GB for its trials' checkpoints, and "
            f"{study_dir} has {free / 1e9:.1f} GB free. Free some space, put the results on a "
            "larger disk with --results-dir, or run fewer trials (--seeds, --num-samples)."
        )


def study_artefacts(study_dir: Path) -> list[str]:
    """What a study left in its folder that a new study would overwrite or mix with."""
    names = (results.TRIALS_FILE, results.EPOCHS_FILE, OPTUNA_FILE, TUNE_DIR, "trials")
    return [name for name in names if (study_dir / name).exists()]


def check_new(study_dir: Path) -> None:
    """Refuse a folder that holds a study; clear one whose study stopped before Tune recorded it.

    A study stopped while Ray was starting (Ctrl-C, a killed driver) leaves study.json and an
    empty Optuna study but no trial: starting it afresh loses nothing. Anything else a study
    leaves (Tune's experiment, trial tables, trial folders) is refused, with or without
    study.json: a new study there would overwrite them.
    """
    has_study_file = (study_dir / results.STUDY_FILE).exists()
    if has_study_file and (started(study_dir) or (study_dir / results.TRIALS_FILE).exists()):
        raise StudyError(
            f"{study_dir} already holds a study; pass --resume to continue it, or --name to "
            "start a new one beside it"
        )
    if not has_study_file and study_artefacts(study_dir):
        raise StudyError(
            f"{study_dir} holds a study's results ({', '.join(study_artefacts(study_dir))}) but "
            f"no {results.STUDY_FILE}; starting here would overwrite them. Give a new --name, or "
            f"restore {results.STUDY_FILE} from a backup and pass --resume."
        )
    if not has_study_file:
        return
    print(
        f"{study_dir} holds a study that stopped before its first trial; starting it afresh",
        flush=True,
    )
    for leftover in (OPTUNA_FILE, FAULTS_DIR, TUNE_DIR):
        path = study_dir / leftover
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_resumable(study_dir: Path, space: StudySpace) -> None:
    """Refuse a resume that cannot work, saying why and what to do instead."""
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
    if not started(study_dir):
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
    check_experiment_state(study_dir)
    saved = read_study_file(study_dir)
    wanted = space.to_dict()
    differs = [
        k
        for k in (
            "name",
            "kind",
            "metric",
            "mode",
            "search",
            "seeds",
            "fixed",
            "methods",
            "num_samples",
        )
        if saved.get(k) != wanted.get(k)
    ]
    if differs:
        raise StudyError(
            f"{study_dir} belongs to another study or other options (different "
            f"{', '.join(differs)}); resume with the options it started with, or give a new --name"
        )


def check_trusted(study_dir: Path) -> None:
    """Refuse to resume from state files that someone else could have written.

    Tune's resume unpickles its state (tuner.pkl, trials serialised inside its experiment
    state), and unpickling runs whatever code the file names. Only a folder whose files belong to
    this user and that no one else may write is resumed (docs/when-things-go-wrong.md, the trust
    model).
    """
    user = os.getuid()
    paths = [study_dir, *sorted((study_dir / TUNE_DIR).rglob("*")), study_dir / OPTUNA_FILE]
    for path in paths:
        if not path.exists():
            continue
        info = path.lstat()
        problem = ""
        if info.st_uid != user:
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


def check_experiment_state(study_dir: Path) -> None:
    """Refuse a resume whose Tune experiment state is unreadable.

    Tune would print the error, start the experiment afresh and replace every finished trial's
    record; the study folder's tables must never shrink that way.
    """
    states = sorted((study_dir / TUNE_DIR).glob("experiment_state-*.json"))
    problem = ""
    if not states:
        if (study_dir / results.TRIALS_FILE).exists():
            where = study_dir / TUNE_DIR
            problem = f"Tune's experiment state (experiment_state-*.json in {where}) is missing"
    else:
        try:
            json.loads(states[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problem = f"Tune's experiment state {states[-1]} is damaged ({error})"
    if problem:
        raise StudyError(
            f"{problem}, after a full disk or a crash while it was written; resuming would start "
            f"the study afresh and drop its finished trials. They are safe in "
            f"{results.TRIALS_FILE} and {OPTUNA_FILE}. Restore {TUNE_DIR}/ from a backup and pass "
            "--resume again, or give a new --name to start a new study (this folder's report "
            "still rebuilds with `python -m reports`)."
        )


ENDED = ("completed", "stopped_early", "failed", "diverged")


def ended_trials(study_dir: Path, space: StudySpace) -> dict[str, int]:
    """How many trials the folder already records as ended, by the file that records them."""
    counts = {}
    table = study_dir / results.TRIALS_FILE
    if table.exists():
        with table.open(newline="", encoding="utf-8") as file:
            counts[results.TRIALS_FILE] = sum(
                row.get("status") in ENDED for row in csv.DictReader(file)
            )
    if (study_dir / OPTUNA_FILE).exists():
        try:
            study = optuna.load_study(study_name=space.name, storage=journal(study_dir))
            finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
            counts[OPTUNA_FILE] = len(study.get_trials(deepcopy=False, states=finished))
        except (ValueError, KeyError, OSError) as error:
            raise StudyError(
                f"{study_dir / OPTUNA_FILE}, the Optuna study, cannot be read "
                f"({type(error).__name__}: {error}); the sampler's history is in it. Restore it "
                "from a backup and resume, or give a new --name to start a new study (this "
                "folder's report still rebuilds with `python -m reports`)."
            ) from None
    return counts


def check_nothing_lost(
    before: dict[str, int], records: list[results.TrialRecord], finished: bool
) -> None:
    """Refuse to write tables with fewer ended trials than the folder recorded before a resume."""
    now = sum(results.trial_status(record, finished) in ENDED for record in records)
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


def trial_records(grid: tune.ResultGrid, gpus: float) -> list[results.TrialRecord]:
    records = []
    for result in grid:
        if result.metrics_dataframe is None and result.error is None:
            continue  # created but never started (the study stopped first): nothing to record
        trial_id = Path(result.path).name
        match = re.match(r"trial_(\d+)_", trial_id)
        frame = result.metrics_dataframe
        epochs = frame.to_dict("records") if frame is not None else []
        last = result.metrics or {}
        config = dict(result.config or {})
        record = results.TrialRecord(
            trial_id=last.get("trial_id", trial_id),
            number=int(match.group(1)) if match else len(records),
            config=config,
            epochs=[{k: v for k, v in row.items() if not _is_missing(v)} for row in epochs],
            error=_first_lines(result.error),
            time_total_s=float(last.get("time_total_s", math.nan)),
            gpus=gpus,
        )
        records.append(record)
    return records


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _first_lines(error: BaseException | None, lines: int = 12) -> str:
    if error is None:
        return ""
    text = str(error).strip() or type(error).__name__
    return "\n".join(text.splitlines()[-lines:])


def close_abandoned_optuna_trials(study_dir: Path, space: StudySpace) -> None:
    """Mark as failed the Optuna trials still RUNNING once every Tune trial has ended.

    A driver killed just after Optuna handed out a trial can leave it open in the journal with
    no Tune trial behind it; left RUNNING, optuna-dashboard shows it as running for ever.
    """
    storage = journal(study_dir)
    study = optuna.load_study(study_name=space.name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
