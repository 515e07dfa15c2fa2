"""Read a study's results folder (docs/results-folder.md) into pandas tables.

Only what the study saved on disk is read, never a live Ray object, so a report can be rebuilt
anywhere, later. `study.json` and `trials.csv` are required (a folder with study.json and no
trials.csv holds an unfinished study: `UnfinishedStudyError` says how to resume it); a missing
`epochs.csv` or `environment.json` leaves its part of the report out and is said so in
`Results.notes`. Malformed rows of the tables (a file cut off mid-row, a mangled value) are left
out with a note naming the file and the lines, and so are (setting, seed) pairs of the study's
plan that have no trial. A metric value that its column cannot hold (`VALUE_RANGES`: a score
outside [0, 1], a negative cost, anything not finite) is left out alone, with such a note, as if
the trial had not reported it; an empty cell is a value not reported, and gets no note. The
optional `reference.json` (the pretrained backbone's metrics with no training) is absent from
older studies; an unreadable one is left out with a note, never an error.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gapan.results import (
    CLASS_SCORE_COLUMNS,
    CLASS_SCORES_FILE,
    COST_COLUMNS,
    ENVIRONMENT_FILE,
    EPOCHS_FILE,
    REFERENCE_FILE,
    SEQUENTIAL_FILE,
    SETTING,
    SETTING_VALUE,
    STATUSES,
    STUDY_FILE,
    TRIALS_FILE,
    TUNE_DIR,
    read_setting,
    setting_text,
    setting_values,
)
from gapan.tune.lock import describe, running_driver

KINDS = ("ablation", "search", "compare")
MODES = ("max", "min")
# Trials whose final validation metric enters the statistics; failed and diverged ones do not.
USABLE_STATUSES = ("completed", "stopped_early")
# Columns of trials.csv that hold numbers; every other column is kept as the exact text written.
NUMERIC_TRIAL_COLUMNS = (
    "number",
    "seed",
    "epochs",
    "round",
    "time_total_s",
    "gpus",
    "gpu_time_s",
    *COST_COLUMNS,
)
TEXT_TRIAL_COLUMNS = ("trial_id", "status", SETTING, SETTING_VALUE, "error")


# How far past its range a value may lie by rounding in its metric's own arithmetic (sklearn's
# NMI of a perfect clustering can exceed 1 by a few units in the last place); only a value further
# out is impossible.
ROUNDING = 1e-9


@dataclass(frozen=True)
class ValueRange:
    """The values a metric column can hold: finite numbers from `low` to `high`, inclusive."""

    low: float
    high: float
    words: str  # the range as a note names it: "a score in [0, 1]"

    def holds(self, numbers: pd.Series) -> pd.Series:
        """Which of `numbers` are finite and in the range, give or take `ROUNDING`."""
        inside = numbers.between(self.low - ROUNDING, self.high + ROUNDING)
        return inside & np.isfinite(numbers)


# What each metric column of trials.csv, epochs.csv and class_scores.csv can hold, by the pattern
# of its name; the first pattern that matches the whole name wins, and a column that none matches
# (number, seed, epoch, lr, queries) is not checked. A value outside its range, or not finite,
# cannot have come from a trial: it is left out of the statistics with a note, as is a cell that
# does not parse.
VALUE_RANGES: tuple[tuple[re.Pattern[str], ValueRange], ...] = (
    # Retrieval scores (gapan.metrics: means of per-query fractions, and NMI); split-prefixed in
    # trials.csv and epochs.csv, bare in class_scores.csv.
    (
        re.compile(r"((val|test)_)?(map_at_r|r_precision|nmi|(recall|precision)_at_\d+)"),
        ValueRange(0.0, 1.0, "a score in [0, 1]"),
    ),
    # Costs: times in seconds (time_per_step_s, time_total_s, gpu_time_s, ...) and GPU memory
    # in MiB (peak_gpu_memory_mb).
    (re.compile(r"\w+_(s|mb)"), ValueRange(0.0, math.inf, "a cost of 0 or more")),
    # Losses and their parts (train_loss, train_nll, ...), and any other metric.
    (re.compile(r"(train|val|test)_\w+"), ValueRange(-math.inf, math.inf, "a finite number")),
)


def value_range(column: str) -> ValueRange | None:
    """The values `column` can hold (`VALUE_RANGES`); None for a column that is not a metric."""
    for pattern, allowed in VALUE_RANGES:
        if pattern.fullmatch(column):
            return allowed
    return None


class ResultsError(ValueError):
    """A results folder that cannot be reported on; the message names the file and the problem."""


class UnfinishedStudyError(ResultsError):
    """A study folder without its tables yet: the message says how to resume or restart it."""


@dataclass(frozen=True)
class Reference:
    """reference.json: the pretrained backbone as it is, evaluated with no training.

    Attributes:
        metrics: Metric -> value, keyed by the trials.csv column names (``val_map_at_r``,
            ``test_map_at_r``, ...); NaN where the file holds null.
        description: What was evaluated, in words.
        data: The data set it was evaluated on (``name``, ``version``, ...).
        model: The backbone and its weights (``backbone``, ``pretrained``, ``image_size``, ...).
    """

    metrics: dict[str, float]
    description: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Results:
    """Everything a study saved, as read from its results folder.

    Attributes:
        directory: The results folder.
        study: The contents of study.json.
        trials: trials.csv, one row per trial; text columns as written, numeric columns as floats,
            plus `gpu_time_s` (computed from `gpus` x `time_total_s` when absent). Each setting
            is read back with its value by `gapan.results.setting_values` (its `setting_value`,
            empty in a table written before that column).
        epochs: epochs.csv, one row per trial and epoch (empty when the file is missing).
        environment: The contents of environment.json (empty when the file is missing).
        notes: Problems found while reading that the report shows, e.g. a missing optional file.
        reference: reference.json, the pretrained backbone with no training; None when the file
            is missing (older studies) or unreadable (then `notes` says why).
        sequential: sequential.json of an adaptive study (`gapan.tune.adaptive`): its design,
            rounds and decisions; None for every other study.
        classes: class_scores.csv, each trial's scores per validation and test class; None when
            the study has none (older studies) or it is unreadable (then `notes` says why).
    """

    directory: Path
    study: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    environment: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    reference: Reference | None = None
    sequential: dict[str, Any] | None = None  # sequential.json of an adaptive study
    classes: pd.DataFrame | None = None  # class_scores.csv

    @property
    def name(self) -> str:
        return str(self.study.get("name") or self.directory.name)

    @property
    def kind(self) -> str:
        return str(self.study["kind"])

    @property
    def is_ablation(self) -> bool:
        """Ablation and compare studies vary one knob over seeds; search studies do not."""
        return self.kind in ("ablation", "compare")

    @property
    def mode(self) -> str:
        return str(self.study["mode"])

    @property
    def knob(self) -> str:
        return str(self.study.get("knob") or ("method" if self.kind == "compare" else "setting"))

    @property
    def metric(self) -> str:
        """The validation column that the study optimises or compares, e.g. ``val_map_at_r``."""
        return validation_column(str(self.study["metric"]))

    @property
    def test_metric(self) -> str | None:
        """The matching test column on unseen classes, or None when trials.csv has none."""
        column = "test_" + self.metric.removeprefix("val_")
        return column if column in self.trials.columns else None


def validation_column(metric: str) -> str:
    """The trials.csv column of a study metric (``map_at_r`` and ``val_map_at_r`` are both fine)."""
    return metric if metric.startswith("val_") else f"val_{metric}"


def load_results(results_dir: Path | str) -> Results:
    """Read a results folder.

    Args:
        results_dir: The folder a study wrote (it holds study.json and trials.csv).

    Raises:
        UnfinishedStudyError: The folder holds a study that has not written its tables yet; the
            message says how to resume (or restart) it.
        ResultsError: A required file is missing or unreadable, or a key or column is wrong.
    """
    directory = Path(results_dir)
    if not directory.is_dir():
        raise ResultsError(f"{directory} is not a folder; pass the results folder of a study.")
    notes: list[str] = []
    study = _read_study(_required(directory, STUDY_FILE))
    trials_path = directory / TRIALS_FILE
    if not trials_path.is_file() or trials_path.stat().st_size == 0:
        raise UnfinishedStudyError(_unfinished(directory, study, trials_path))
    driver = running_study(directory)
    if driver is not None:
        notes.append(
            f"The study is still running ({driver}): this report shows the trials recorded so "
            "far; build it again when the study ends."
        )
    trials = read_trials(trials_path, study, notes)
    notes += plan_gaps(study, trials, trials_path)
    # The optional files, each read or its absence noted, in this order.
    epochs = _optional_epochs(directory, notes)
    environment = _optional_environment(directory, notes)
    reference = _optional_reference(directory, notes)
    sequential = _optional_sequential(directory, study, notes)
    classes = _optional_class_scores(directory, study, notes)
    return Results(
        directory, study, trials, epochs, environment, tuple(notes), reference, sequential, classes
    )


def _optional_epochs(directory: Path, notes: list[str]) -> pd.DataFrame:
    """epochs.csv; an empty table, and a note, when it is missing or unreadable."""
    path = directory / EPOCHS_FILE
    if not path.is_file():
        notes.append(f"{path} is missing, so the report has no learning curves.")
    else:
        try:
            return read_epochs(path, notes)
        except ResultsError as error:
            notes.append(f"{error} The report has no learning curves.")
    return pd.DataFrame(columns=["trial_id", "epoch"])


def _optional_environment(directory: Path, notes: list[str]) -> dict[str, Any]:
    """environment.json; {} and a note when it is missing (an unreadable one is an error)."""
    path = directory / ENVIRONMENT_FILE
    if path.is_file():
        return _read_json(path)
    notes.append(f"{path} is missing, so the report has no environment.")
    return {}


def _optional_reference(directory: Path, notes: list[str]) -> Reference | None:
    """reference.json; None when it is missing (older studies) or, with a note, unreadable."""
    path = directory / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return read_reference(path)
    except ResultsError as error:
        notes.append(f"{error} The report leaves the pretrained reference out.")
        return None


def _optional_sequential(
    directory: Path, study: Mapping[str, Any], notes: list[str]
) -> dict[str, Any] | None:
    """An adaptive study's sequential.json; None for any other study, or with a note when an
    adaptive study's is missing."""
    if "sequential" not in study:
        return None
    path = directory / SEQUENTIAL_FILE
    if path.is_file():
        return _read_json(path)
    notes.append(f"{path} is missing, so the report cannot say how it stopped.")
    return None


def _optional_class_scores(
    directory: Path, study: Mapping[str, Any], notes: list[str]
) -> pd.DataFrame | None:
    """class_scores.csv; None, with a note for an ablation or comparison, when it is missing
    (a study from before trials kept them) or unreadable."""
    path = directory / CLASS_SCORES_FILE
    if path.is_file():
        try:
            return read_class_scores(path, notes)
        except ResultsError as error:
            notes.append(f"{error} The report has no intervals over classes.")
    elif study.get("kind") in ("ablation", "compare"):
        notes.append(
            f"{path} is missing (a study from before trials kept their per-class "
            "scores), so every interval in this report is over seeds only."
        )
    return None


def _required(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise ResultsError(
            f"{path} is missing: {directory} is not a results folder of a study "
            "(one holds study.json, trials.csv, epochs.csv and environment.json; "
            "see docs/results-folder.md)."
        )
    return path


def _tune_started(directory: Path) -> bool:
    """Whether Tune recorded the study: it saves its experiment state before any trial ends."""
    return any((directory / TUNE_DIR).glob("experiment_state*.json"))


def study_record(directory: Path | str) -> dict[str, Any]:
    """A folder's study.json as it is, or {} where there is none or it cannot be read: for
    telling what kind of folder this is; `load_results` names what is wrong with one."""
    try:
        study = json.loads((Path(directory) / STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return study if isinstance(study, dict) else {}


def _outermost_study(directory: Path, study: Mapping[str, Any]) -> tuple[Path, Mapping[str, Any]]:
    """The study `directory` is a part of (a tuned comparison's search, a split), or itself: a
    part is run, and resumed, by its whole study's command."""
    top, record = directory, study
    for parent in directory.resolve().parents:
        found = study_record(parent)
        if not found:
            break
        top, record = parent, found
    return top, record


def _study_command(directory: Path, study: Mapping[str, Any], resume: bool) -> str:
    """The command that runs the study in `directory` (again), as far as study.json tells it."""
    directory, study = _outermost_study(directory, study)
    name = str(study.get("name") or directory.name)
    words = [f"python studies/{name}.py"] + (["--resume"] if resume else [])
    if directory.name != name:
        words.append(f"--name {directory.name}")
    parent = directory.resolve().parent
    if parent != (Path.cwd() / "results").resolve():
        words.append(f"--results-dir {parent}")
    if isinstance(study.get("splits"), list) and len(study["splits"]) > 1:
        words.append(f"--splits {len(study['splits'])}")
    if "sequential" in study:
        words.append("--seeds auto")
    elif study.get("kind") in ("ablation", "compare") and isinstance(study.get("seeds"), int):
        words.append(f"--seeds {study['seeds']}")
    if study.get("kind") == "search" and isinstance(study.get("num_samples"), int):
        words.append(f"--num-samples {study['num_samples']}")
    return " ".join(words)


def running_study(directory: Path) -> str | None:
    """Which driver runs the study in `directory`, or the study it is a part of, in words; None
    when none does (`gapan.tune.lock`)."""
    for folder in [directory, *directory.resolve().parents]:
        if folder != directory and not study_record(folder):
            break
        driver = running_driver(folder)
        if driver is not None:
            return describe(driver)
    return None


def _unfinished(directory: Path, study: Mapping[str, Any], trials_path: Path) -> str:
    written = "is empty" if trials_path.is_file() else "is not written yet"
    driver = running_study(directory)
    if driver is not None:
        return (
            f"{directory} holds a study that is running ({driver}); its tables and report are "
            "written when it ends. Follow it on the Ray dashboard or with TensorBoard meanwhile."
        )
    if _tune_started(directory):
        return (
            f"{directory} holds an unfinished study: {trials_path.name} {written} (a study "
            "writes its tables when it ends, or stops on Ctrl-C; this one was stopped before "
            f"that, by a killed driver or a reboot). Resume it with "
            f"`{_study_command(directory, study, resume=True)}` (add any other flags it was "
            "started with, such as --smoke, --dataset or --set); its finished trials are kept "
            "and the tables and report are written when it ends."
        )
    command = _study_command(directory, study, resume=False)
    return (
        f"{directory} holds a study that stopped before its first trial ({trials_path.name} "
        f"{written} and Tune recorded nothing under {TUNE_DIR}/), so there is nothing to resume "
        f"or report. Start it again with `{command}` (and any other flags it was started with)."
    )


def plan_gaps(study: Mapping[str, Any], trials: pd.DataFrame, path: Path) -> list[str]:
    """Notes on the trials the study planned (study.json) that trials.csv lacks.

    An ablation or comparison plans every setting (its knob's ``values``, or its ``methods``)
    with every seed ``first_seed`` .. ``first_seed + seeds - 1``; a search plans
    ``num_samples`` trials. A trial counts as present whatever its status; rows left out as
    malformed count as missing.
    """
    if "sequential" in study:
        return []  # an adaptive study plans each round from the last; its report lists them
    if study["kind"] == "search":
        planned = study.get("num_samples")
        if isinstance(planned, int) and len(trials) < planned:
            return [f"{path} holds {len(trials)} of the {planned} trials the study planned."]
        return []
    seeds = study.get("seeds")
    knob = study.get("knob") or "method"
    dimension = study["search"].get(knob)
    values: list[Any] = []
    if isinstance(dimension, Mapping) and isinstance(dimension.get("values"), list):
        values = dimension["values"]
    elif study["kind"] == "compare":
        values = list(study["methods"])
    if not values or not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        return []
    settings = setting_values(trials)
    present = {
        (str(setting), int(seed))
        for setting, seed in zip(trials[SETTING], trials["seed"], strict=True)
        if isinstance(seed, int | float) and math.isfinite(seed)
    }
    first = study.get("first_seed", 0)
    first = first if isinstance(first, int) and not isinstance(first, bool) else 0
    missing = [
        (value, seed)
        for seed in range(first, first + seeds)
        for value in values
        if not any(
            same_setting(settings[setting], value) and seed == run for setting, run in present
        )
    ]
    if not missing:
        return []
    shown = ", ".join(f"{knob} = {value} with seed {seed}" for value, seed in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return [
        f"{path} has no trial for {len(missing)} of the {len(values) * seeds} (setting, "
        f"seed) pairs the study planned ({len(values)} settings of {knob} x {seeds} seeds in "
        f"study.json): {shown}{more}. Those settings are compared over fewer seeds."
    ]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(content, dict):
        raise ResultsError(f"{path} must hold a JSON object, not {type(content).__name__}.")
    return content


def read_reference(path: Path) -> Reference:
    """Read reference.json (docs/results-folder.md).

    Raises:
        ResultsError: The file is not a JSON object, its `metrics` is not an object of numbers,
            or `data` or `model` is not an object.
    """
    content = _read_json(path)
    metrics = content.get("metrics")
    if not isinstance(metrics, dict):
        raise ResultsError(f"{path} has no 'metrics' object (metric name -> value).")
    values = {}
    for name, value in metrics.items():
        if value is None:
            values[name] = math.nan
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = float(value)
        else:
            raise ResultsError(f"{path}: metrics[{name!r}] is {value!r}, not a number.")
    for key in ("data", "model"):
        if content.get(key) is not None and not isinstance(content[key], dict):
            raise ResultsError(f"{path}: {key!r} must be a JSON object.")
    return Reference(
        metrics=values,
        description=str(content.get("description") or ""),
        data=dict(content.get("data") or {}),
        model=dict(content.get("model") or {}),
    )


def _read_study(path: Path) -> dict[str, Any]:
    study = _read_json(path)
    for key in ("kind", "metric", "mode"):
        if key not in study:
            raise ResultsError(f"{path} has no {key!r} key; docs/results-folder.md lists the keys.")
    if study["kind"] not in KINDS:
        raise ResultsError(f"{path}: 'kind' is {study['kind']!r}; use one of {', '.join(KINDS)}.")
    if study["mode"] not in MODES:
        raise ResultsError(f"{path}: 'mode' is {study['mode']!r}; use 'max' or 'min'.")
    for key in ("fixed", "search", "methods", "resources"):
        if study.get(key) is None:
            study[key] = {}
        elif not isinstance(study[key], dict):
            raise ResultsError(f"{path}: {key!r} must be a JSON object.")
    contrasts = study.get("contrasts")
    if contrasts is not None and not (
        isinstance(contrasts, dict)
        and all(isinstance(value, str | int | float) for value in contrasts.values())
    ):
        raise ResultsError(
            f"{path}: 'contrasts' must be a JSON object of setting -> the setting it is "
            "compared with."
        )
    return study


def read_trials(path: Path, study: Mapping[str, Any], notes: list[str]) -> pd.DataFrame:
    """Read trials.csv: text columns stay exactly as written, numeric ones become floats.

    Malformed rows (a wrong number of fields, as in a file cut off mid-row; a number that does
    not parse; a status outside `STATUSES`; a `setting_value` that is not its setting's value as
    JSON; an ablation trial without its setting or seed) are
    left out, and one note naming the file and their lines is appended to `notes`. A metric
    value that its column cannot hold (`VALUE_RANGES`: out of range, or not finite) is left out
    as if not reported (NaN), the rest of its row kept, with another such note.

    Raises:
        ResultsError: The file is unreadable or empty, lacks `trial_id`, `status` or the study's
            metric column, (ablation, compare) has no setting or seed at all, or holds no
            well-formed row.
    """
    table = _read_csv(path)
    if table.header is None:
        raise ResultsError(f"{path} is empty; a study writes it with a header row.")
    raw = table.frame
    metric = validation_column(str(study["metric"]))
    for column in ("trial_id", "status", metric):
        if column not in raw.columns:
            present = ", ".join(raw.columns) or "none"
            raise ResultsError(f"{path} has no {column!r} column (columns: {present}).")
    numeric = [
        column
        for column in raw.columns
        if column in NUMERIC_TRIAL_COLUMNS or column.startswith(("val_", "test_"))
    ]
    problems = _row_problems(raw, numeric)
    for index, status in raw["status"].items():
        if status.strip().lower() not in STATUSES:
            problems[index].append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    bad = table.bad + _bad_rows(table, problems)
    raw = raw.loc[[not problems[index] for index in raw.index]]
    trials, impossible = _typed_trials(raw, numeric, table)
    unusable = _setting_problems(trials)
    if study["kind"] in ("ablation", "compare"):
        unusable += _check_ablation_columns(path, trials, raw, study)
    bad += [
        _BadRow(table.lines[index], problem, str(trials.at[index, "trial_id"]))
        for index, problem in unusable
    ]
    trials = trials.drop(index=[index for index, _ in unusable])
    if bad and trials.empty:
        raise ResultsError(f"{path} holds no well-formed row: {_listing(bad)}.")
    if bad:
        _note_bad_rows(notes, path, bad)
    kept = {table.lines[index] for index in trials.index}  # a row left out is named once
    _note_bad_values(notes, path, [row for row in impossible if row.line in kept])
    return trials.sort_values("number", kind="stable").reset_index(drop=True)


def _typed_trials(
    raw: pd.DataFrame, numeric: Sequence[str], table: _Table
) -> tuple[pd.DataFrame, list[_BadRow]]:
    """The well-formed rows of trials.csv with their columns typed: text as written, numbers as
    floats (each value its column cannot hold made NaN, and named), config values as numbers
    where every one is; and the columns an older study did not write, filled in."""
    trials = pd.DataFrame(index=raw.index)
    impossible: list[_BadRow] = []
    for column in raw.columns:
        if column in TEXT_TRIAL_COLUMNS:
            trials[column] = raw[column].astype(object)
        elif column in numeric:
            trials[column], found = _checked_numbers(raw, column, table.lines)
            impossible += found
        elif column.startswith("config/"):
            trials[column] = _maybe_numeric(raw[column])
        else:
            trials[column] = raw[column].astype(object)
    trials["status"] = trials["status"].str.strip().str.lower()
    for column in (SETTING, SETTING_VALUE, "error"):
        if column not in trials.columns:
            trials[column] = ""
    if "number" not in trials.columns:
        trials["number"] = np.arange(len(trials), dtype=float)
    for column in ("seed", "epochs", "time_total_s", "gpus"):
        if column not in trials.columns:
            trials[column] = np.nan
    if "gpu_time_s" not in trials.columns:
        trials["gpu_time_s"] = trials["gpus"].fillna(0.0) * trials["time_total_s"]
    return trials, impossible


def _setting_problems(trials: pd.DataFrame) -> list[tuple[Any, str]]:
    """The rows whose `setting_value` does not read back as their setting's value
    (`gapan.results.read_setting`), each with the problem."""
    problems = []
    for index, text, value in zip(
        trials.index, trials[SETTING], trials[SETTING_VALUE], strict=True
    ):
        try:
            read_setting(text, value)
        except ValueError as error:
            problems.append((index, str(error)))
    return problems


def _check_ablation_columns(
    path: Path, trials: pd.DataFrame, raw: pd.DataFrame, study: Mapping[str, Any]
) -> list[tuple[Any, str]]:
    """Give a row without a setting its knob's config value (as written, in `raw`) as its
    setting; return the rows still lacking a setting or a seed, each with the problem.

    Raises:
        ResultsError: No row has a setting, or none has a seed: a column is missing, not a row.
    """
    knob = study.get("knob") or ("method" if study["kind"] == "compare" else None)
    knob_column = f"config/{knob}"
    missing_setting = trials[SETTING].astype(str).str.strip() == ""
    if missing_setting.any() and knob and knob_column in raw.columns:
        # The knob's value read back, and written as the study writes a setting.
        trials.loc[missing_setting, SETTING] = [
            setting_text(read_setting(written)) if written.strip() else ""
            for written in raw.loc[missing_setting, knob_column]
        ]
        missing_setting = trials[SETTING].astype(str).str.strip() == ""
    missing_seed = trials["seed"].isna()
    if len(trials) and missing_setting.all():
        raise ResultsError(
            f"{path}: no trial has a 'setting' (the value of the ablated knob); "
            f"an {study['kind']} study needs it to group trials."
        )
    if len(trials) and missing_seed.all():
        raise ResultsError(
            f"{path}: no trial has a 'seed'; an {study['kind']} study pairs trials by seed."
        )
    unpaired = []
    for index in trials.index:
        if missing_setting[index]:
            unpaired.append((index, f"no setting (the value of {knob or 'the knob'})"))
        elif missing_seed[index]:
            unpaired.append((index, "no seed"))
    return unpaired


def _parse_numbers(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Text cells as floats, as Python's `float` reads them (NaN for an empty cell), and which
    cells are not numbers (NaN there)."""
    stripped = column.astype(str).str.strip()
    numbers = pd.to_numeric(stripped.mask(stripped == "", "nan"), errors="coerce").astype(float)
    invalid = pd.Series(False, index=column.index)
    # pandas refuses a few spellings that `float` reads ("infinity", "1_000"); look again at
    # those only, so a large table is parsed at pandas' speed.
    for index in numbers.index[numbers.isna() & (stripped != "")]:
        try:
            numbers[index] = float(stripped[index])
        except ValueError:
            invalid[index] = True
    return numbers, invalid


def _to_float(column: pd.Series) -> pd.Series:
    """Numbers from text cells; NaN where a cell is empty or not a number."""
    return _parse_numbers(column)[0]


def _checked_numbers(
    raw: pd.DataFrame, column: str, lines: Sequence[int]
) -> tuple[pd.Series, list[_BadRow]]:
    """A numeric column of well-formed rows as floats, with each value the column cannot hold
    (`value_range`) made NaN and named, one `_BadRow` each.

    An empty cell is a value the trial did not report (a failed, diverged or interrupted one):
    NaN, and not named.

    Args:
        raw: The table as text, indexed by row (0 = the first row after the header).
        column: The column to read.
        lines: The line of the file each row starts on.
    """
    numbers = _to_float(raw[column])
    allowed = value_range(column)
    if allowed is None:
        return numbers, []
    written = raw[column].astype(str).str.strip()
    impossible = (written != "") & ~allowed.holds(numbers)
    bad = [
        _BadRow(
            lines[index],
            f"{column} is {written[index][:40]!r}, not {allowed.words}",
            str(raw.at[index, "trial_id"]),
        )
        for index in numbers.index[impossible]
    ]
    return numbers.mask(impossible), bad


def _maybe_numeric(column: pd.Series) -> pd.Series:
    """Numbers where every non-empty value is one (ints stay ints); the text otherwise."""
    filled = column[column.str.strip() != ""]
    converted, invalid = _parse_numbers(column)
    if len(filled) == 0 or invalid.any():
        return column.astype(object)
    whole = converted.dropna()
    if (whole == whole.round()).all() and not filled.str.contains(r"[.eE]").any():
        return converted.astype("Int64") if converted.isna().any() else converted.astype(int)
    return converted


# epochs.csv columns that hold numbers; a cell in them that does not parse makes its row
# malformed. Others (`node_id`, ...) are kept as the text written.
NUMERIC_EPOCH_COLUMNS = ("epoch", "time_this_epoch_s", "lr", "elapsed_s")
NUMERIC_EPOCH_PREFIXES = ("train_", "val_", "test_")


def read_epochs(path: Path, notes: list[str]) -> pd.DataFrame:
    """Read epochs.csv: `trial_id` and other text columns as text, the metrics as numbers.

    Malformed rows (a wrong number of fields, no trial id or epoch, a metric that does not
    parse) are left out, and one note naming the file and their lines is appended to `notes`;
    a metric value its column cannot hold is left out alone, as in `read_trials`.

    Raises:
        ResultsError: The file is unreadable, lacks `trial_id` or `epoch`, or holds no
            well-formed row.
    """
    table = _read_csv(path)
    if table.header is None:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    raw = table.frame
    for column in ("trial_id", "epoch"):
        if column not in raw.columns:
            raise ResultsError(f"{path} has no {column!r} column.")
    numeric = [
        column
        for column in raw.columns
        if column in NUMERIC_EPOCH_COLUMNS or column.startswith(NUMERIC_EPOCH_PREFIXES)
    ]
    problems = _row_problems(raw, numeric)
    for index, epoch in raw["epoch"].items():
        if not epoch.strip():
            problems[index].append("no epoch")
    raw = _well_formed(table, problems, path, notes)
    epochs = pd.DataFrame({"trial_id": raw["trial_id"].astype(object)})
    impossible: list[_BadRow] = []
    for column in raw.columns.drop("trial_id"):
        if column in numeric:
            epochs[column], found = _checked_numbers(raw, column, table.lines)
            impossible += found
        else:
            epochs[column] = raw[column].astype(object)
    _note_bad_values(notes, path, impossible)
    return epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


NUMERIC_CLASS_COLUMNS = ("queries", "map_at_r", "recall_at_1", "r_precision")


def read_class_scores(path: Path, notes: list[str]) -> pd.DataFrame:
    """Read class_scores.csv: trial, split and class as text, the scores as numbers.

    Malformed rows, and scores their column cannot hold, are left out with a note, as in
    `read_epochs`.

    Raises:
        ResultsError: The file is unreadable, lacks a column, or holds no well-formed row.
    """
    table = _read_csv(path)
    if table.header is None:
        return pd.DataFrame(columns=list(CLASS_SCORE_COLUMNS))
    raw = table.frame
    missing = [column for column in CLASS_SCORE_COLUMNS if column not in raw.columns]
    if missing:
        raise ResultsError(f"{path} has no {', '.join(map(repr, missing))} column.")
    problems = _row_problems(raw, NUMERIC_CLASS_COLUMNS)
    raw = _well_formed(table, problems, path, notes)
    scores = pd.DataFrame({column: raw[column].astype(object) for column in CLASS_SCORE_COLUMNS})
    impossible: list[_BadRow] = []
    for column in NUMERIC_CLASS_COLUMNS:
        scores[column], found = _checked_numbers(raw, column, table.lines)
        impossible += found
    _note_bad_values(notes, path, impossible)
    return scores.reset_index(drop=True)


@dataclass(frozen=True)
class _BadRow:
    """A malformed row: the line of the file it starts on, what is wrong, and its trial."""

    line: int
    problem: str
    trial_id: str = ""


@dataclass(frozen=True)
class _Table:
    """A CSV file read as text: the well-shaped rows (every field a string, indexed 0..n-1),
    the line each starts on, and the rows of the wrong shape."""

    header: list[str] | None
    frame: pd.DataFrame
    lines: list[int]
    bad: list[_BadRow]


def _read_csv(path: Path) -> _Table:
    """Read a CSV file as text, keeping rows that have as many fields as the header.

    The study's writers end every file with a line break; a file without one was cut off in
    the middle of its last row, whose last field may then hold a cut number, so that row is
    malformed too.
    """
    try:
        # newline="": line breaks inside quoted cells stay as written (a "\r" included).
        with path.open(encoding="utf-8", errors="replace", newline="") as file:
            text = file.read()
    except OSError as error:
        raise ResultsError(f"{path} cannot be read: {error}") from error
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[_BadRow] = []
    last_was_row = False
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields:
                continue  # a blank line
            if header is None:
                header = fields
                continue
            last_was_row = len(fields) == len(header)
            if last_was_row:
                rows.append(fields)
                lines.append(line)
            else:
                problem = f"{len(fields)} fields where the header has {len(header)}"
                bad.append(_BadRow(line, problem, _field(fields, header, "trial_id")))
    except csv.Error as error:
        bad.append(_BadRow(start, f"unreadable from here on ({error})"))
        last_was_row = False
    if header is not None and len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise ResultsError(f"{path}: the header names {', '.join(map(repr, twice))} twice.")
    if rows and last_was_row and not text.endswith(("\n", "\r")):
        trial_id = _field(rows.pop(), header, "trial_id")
        bad.append(_BadRow(lines.pop(), "the file ends inside this row (cut off)", trial_id))
    frame = pd.DataFrame(rows, columns=header or [], dtype=object)
    return _Table(header, frame, lines, bad)


def _well_formed(
    table: _Table, problems: Mapping[Any, list[str]], path: Path, notes: list[str]
) -> pd.DataFrame:
    """The rows of `table` without `problems`; one note names the others.

    Raises:
        ResultsError: No row is well-formed.
    """
    raw = table.frame
    bad = table.bad + _bad_rows(table, problems)
    raw = raw.loc[[not problems[index] for index in raw.index]]
    if bad and raw.empty:
        raise ResultsError(f"{path} holds no well-formed row: {_listing(bad)}.")
    if bad:
        _note_bad_rows(notes, path, bad)
    return raw


def _field(fields: Sequence[str], header: Sequence[str], name: str) -> str:
    """The field under `name` of a row, or "" when the header lacks it or the row is short."""
    position = list(header).index(name) if name in header else len(fields)
    return fields[position] if position < len(fields) else ""


def _row_problems(raw: pd.DataFrame, numeric: Sequence[str]) -> dict[Any, list[str]]:
    """What is wrong with each row of a text table: no trial id, or a number that does not
    parse in one of the `numeric` columns."""
    problems: dict[Any, list[str]] = {index: [] for index in raw.index}
    for index, trial_id in raw["trial_id"].items():
        if not trial_id.strip():
            problems[index].append("no trial_id")
    for column in numeric:
        invalid = _parse_numbers(raw[column])[1]
        for index in invalid.index[invalid]:
            problems[index].append(f"{column} is {raw.at[index, column][:40]!r}, not a number")
    return problems


def _bad_rows(table: _Table, problems: Mapping[Any, list[str]]) -> list[_BadRow]:
    return [
        _BadRow(table.lines[index], "; ".join(found), table.frame.at[index, "trial_id"])
        for index, found in problems.items()
        if found
    ]


def _listing(bad: Sequence[_BadRow], limit: int = 8) -> str:
    """The malformed rows in the order of the file, at most `limit` of them spelled out."""
    ordered = sorted(bad, key=lambda row: row.line)
    shown = [
        f"line {row.line}"
        + (f" (trial {row.trial_id})" if row.trial_id.strip() else "")
        + f": {row.problem}"
        for row in ordered[:limit]
    ]
    more = f"; and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return "; ".join(shown) + more


def _note_bad_rows(notes: list[str], path: Path, bad: Sequence[_BadRow]) -> None:
    rows = f"{len(bad)} malformed row{'' if len(bad) == 1 else 's'}"
    notes.append(
        f"{path}: {rows} left out of this report ({_listing(bad)}). A file cut off while being "
        "written, or edited by hand, looks like this; the rest of the report stands. Fix or "
        "delete those rows, or restore the file from a copy, and build the report again."
    )


def _note_bad_values(notes: list[str], path: Path, bad: Sequence[_BadRow]) -> None:
    """One note naming the values their column cannot hold (`_checked_numbers`), if any."""
    if not bad:
        return
    values = f"{len(bad)} impossible value{'' if len(bad) == 1 else 's'}"
    notes.append(
        f"{path}: {values} left out of this report ({_listing(bad)}). Each counts as not "
        "reported, as an empty cell does, in every statistic; the rest of its row stands. A file "
        "edited by hand or damaged looks like this. Fix those values (leave a cell empty where "
        "a trial reported nothing), or restore the file from a copy, and build the report again."
    )


def usable_trials(results: Results, column: str | None = None) -> pd.DataFrame:
    """The trials that enter the statistics: completed or stopped early, with a finite metric.

    Args:
        results: The study.
        column: The metric that must be finite; the study's validation metric by default.
    """
    column = column or results.metric
    trials = results.trials
    keep = trials["status"].isin(USABLE_STATUSES) & np.isfinite(trials[column].astype(float))
    return trials[keep]


def setting_order(results: Results) -> list[str]:
    """The settings of an ablation or compare study in the order a reader expects.

    Numeric settings ascend; otherwise the order of the search space's `values` (or of `methods`
    for a compare study), then any other setting in the order trials started.
    """
    values = setting_values(results.trials)
    present = list(values)
    numbers = setting_numbers(list(values.values()))
    if numbers is not None:
        return [setting for _, setting in sorted(zip(numbers, present, strict=True))]
    declared: Sequence[Any] = ()
    dimension = results.study["search"].get(results.knob)
    if isinstance(dimension, Mapping) and isinstance(dimension.get("values"), list):
        declared = dimension["values"]
    elif results.kind == "compare":
        declared = list(results.study["methods"])
    ordered = [
        setting for value in declared for setting in present if same_setting(values[setting], value)
    ]
    ordered = list(dict.fromkeys(ordered))
    return ordered + [setting for setting in present if setting not in ordered]


def setting_numbers(values: Sequence[Any]) -> list[float] | None:
    """Settings' values as numbers when every one is a finite number (not a bool), else None."""
    if not values or not all(_is_number(value) and math.isfinite(value) for value in values):
        return None
    return [float(value) for value in values]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same_setting(setting: Any, value: Any) -> bool:
    """Whether two settings are one: the same text, the same bool, or numbers equal to rounding
    (``"0.001"`` names ``1e-3``). A setting given as text (study.json names its contrasts so) is
    read as `gapan.results.read_setting` reads a setting of trials.csv."""
    if setting_text(setting) == setting_text(value):
        return True
    if isinstance(setting, bool) or isinstance(value, bool):
        return _read(setting) is _read(value)
    first, second = _read(setting), _read(value)
    if not (_is_number(first) and _is_number(second)):
        return False
    return math.isclose(float(first), float(second), rel_tol=1e-9, abs_tol=0.0)


def _read(setting: Any) -> Any:
    return read_setting(setting) if isinstance(setting, str) else setting


def baseline_setting(results: Results) -> str | None:
    """The setting that study.json's `baseline` names, or None when it names none of them."""
    baseline = results.study.get("baseline")
    if baseline is None:
        return None
    values = setting_values(results.trials)
    for setting in setting_order(results):
        if same_setting(values[setting], baseline):
            return setting
    return None
