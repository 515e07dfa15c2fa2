"""The study folder before and after a run: refusing or clearing it for a new study, checking it
can be written and holds the disk the study needs, and turning Tune's results into records."""

from __future__ import annotations

import math
import re
import shutil
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

TUNE_DIR = results.TUNE_DIR
# The Tune experiments of an extended search before its current one: tune_1/, tune_2/, ...
EARLIER_PREFIX = f"{TUNE_DIR}_"


def started(study_dir: Path) -> bool:
    """Whether Tune recorded the study: it writes its first snapshot before any trial ends."""
    return tune.Tuner.can_restore(str(study_dir / TUNE_DIR))


def earlier_experiments(study_dir: Path) -> list[Path]:
    """The finished Tune experiments of an extended search, in the order they ran."""
    found = [
        (int(path.name.removeprefix(EARLIER_PREFIX)), path)
        for path in study_dir.glob(f"{EARLIER_PREFIX}*")
        if path.is_dir() and path.name.removeprefix(EARLIER_PREFIX).isdigit()
    ]
    return [path for _, path in sorted(found)]


def holds_trials(tune_dir: Path) -> bool:
    """Whether a Tune experiment's folder holds a trial's folder (Tune makes it as the trial
    starts)."""
    return any(tune_dir.glob("trial_*"))


def recorded(study_dir: Path) -> bool:
    """Whether the study's current Tune experiment wrote its state (Tune writes it before any
    trial ends; `started` only says that its tuner was saved)."""
    return any((study_dir / TUNE_DIR).glob("experiment_state-*.json"))


def set_aside(study_dir: Path) -> None:
    """Make room for an extended search's new Tune experiment: its finished one becomes the
    next `tune_<k>/`. An extension's experiment stopped before it recorded anything (no state,
    no trial) holds nothing to keep, and goes; any other that Tune cannot restore is refused."""
    current = study_dir / TUNE_DIR
    if not current.exists():
        return
    if earlier_experiments(study_dir) and not holds_trials(current):
        shutil.rmtree(current)
        return
    if not (started(study_dir) and recorded(study_dir)):
        raise StudyError(
            f"{current}, the search's Tune experiment, is incomplete (its tuner or its state is "
            "missing), so its trials cannot be kept when the search is extended. Restore "
            f"{TUNE_DIR}/ from a backup and pass --resume again, or give a new --name."
        )
    number = len(earlier_experiments(study_dir)) + 1
    current.rename(study_dir / f"{EARLIER_PREFIX}{number}")


def check_writable(study_dir: Path) -> None:
    """Refuse, before any work, a study folder that cannot be made or written; create nothing."""
    existing = study_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as error:
        raise StudyError(
            f"cannot write the study folder {study_dir} ({error}). Choose a folder you can write "
            "with --results-dir (or --storage), or fix its permissions."
        ) from None


def check_free_space(study_dir: Path, need: int) -> None:
    """Refuse a study whose checkpoints and kept weights would not fit on its disk, before its
    first trial (`gapan.tune.runner.disk_need`)."""
    free = shutil.disk_usage(study_dir).free
    if free < need:
        raise StudyError(
            f"the study needs about {need / 1e9:.1f} GB for its running trials' checkpoints and "
            f"the weights it keeps, and {study_dir} has {free / 1e9:.1f} GB free. Free some "
            "space, put the results on a larger disk with --results-dir, run fewer trials at "
            "once (--max-concurrent) or fewer trials (--seeds, --num-samples), or keep fewer "
            "weights (--keep-checkpoints best or none)."
        )


def study_artefacts(study_dir: Path) -> list[str]:
    """What a study left in its folder that a new study would overwrite or mix with."""
    names = (results.TRIALS_FILE, results.EPOCHS_FILE, OPTUNA_FILE, TUNE_DIR, results.TRIALS_DIR)
    found = [name for name in names if (study_dir / name).exists()]
    return found + [path.name for path in earlier_experiments(study_dir)]


def check_new(study_dir: Path) -> None:
    """Refuse a folder that holds a study; clear one whose study stopped before Tune recorded it.

    A study stopped while Ray was starting (Ctrl-C, a killed driver) leaves study.json and an
    empty Optuna study but no trial: starting it afresh loses nothing. Anything else a study
    leaves (Tune's experiment, trial tables, trial folders) is refused, with or without
    study.json: a new study there would overwrite them.
    """
    has_study_file = (study_dir / results.STUDY_FILE).exists()
    if has_study_file and (
        started(study_dir)
        or (study_dir / results.TRIALS_FILE).exists()
        or earlier_experiments(study_dir)
    ):
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


def trial_records(
    grid: tune.ResultGrid, gpus: float, stopped: set[str]
) -> list[results.TrialRecord]:
    """The trials Tune ran, as records; `stopped`: the Tune trial ids the scheduler stopped."""
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
        tune_id = str(last.get("trial_id", trial_id))
        record = results.TrialRecord(
            trial_id=tune_id,
            number=int(match.group(1)) if match else len(records),
            config=config,
            epochs=[{k: v for k, v in row.items() if not _is_missing(v)} for row in epochs],
            error=_last_lines(result.error),
            time_total_s=float(last.get("time_total_s", math.nan)),
            gpus=gpus,
            stopped_by_scheduler=tune_id in stopped,
        )
        records.append(record)
    return records


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _last_lines(error: BaseException | None, lines: int = 12) -> str:
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
