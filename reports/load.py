"""Read a study's results folder (docs/results-folder.md) into pandas tables.

Only what the study saved on disk is read, never a live Ray object, so a report can be rebuilt
anywhere, later. `study.json` and `trials.csv` are required; a missing `epochs.csv` or
`environment.json` leaves its part of the report out and is said so in `Results.notes`. The
optional `reference.json` (the pretrained backbone's metrics with no training) is absent from
older studies; an unreadable one is left out with a note, never an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("ablation", "search", "compare")
MODES = ("max", "min")
# `interrupted`: the study itself stopped before the trial finished (a resumable state).
STATUSES = ("completed", "stopped_early", "failed", "diverged", "interrupted")
# Trials whose final validation metric enters the statistics; failed and diverged ones do not.
USABLE_STATUSES = ("completed", "stopped_early")
# Columns of trials.csv that hold numbers; every other column is kept as the exact text written.
NUMERIC_TRIAL_COLUMNS = ("number", "seed", "epochs", "time_total_s", "gpus", "gpu_time_s")
TEXT_TRIAL_COLUMNS = ("trial_id", "status", "setting", "error")
REFERENCE_FILE = "reference.json"


class ResultsError(ValueError):
    """A results folder that cannot be reported on; the message names the file and the problem."""


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
            plus `gpu_time_s` (computed from `gpus` x `time_total_s` when absent).
        epochs: epochs.csv, one row per trial and epoch (empty when the file is missing).
        environment: The contents of environment.json (empty when the file is missing).
        notes: Problems found while reading that the report shows, e.g. a missing optional file.
        reference: reference.json, the pretrained backbone with no training; None when the file
            is missing (older studies) or unreadable (then `notes` says why).
    """

    directory: Path
    study: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    environment: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    reference: Reference | None = None

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
        ResultsError: A required file is missing or unreadable, or a key or column is wrong.
    """
    directory = Path(results_dir)
    if not directory.is_dir():
        raise ResultsError(f"{directory} is not a folder; pass the results folder of a study.")
    notes: list[str] = []
    study = _read_study(_required(directory, "study.json"))
    trials = read_trials(_required(directory, "trials.csv"), study)
    epochs_path = directory / "epochs.csv"
    if epochs_path.is_file():
        epochs = read_epochs(epochs_path)
    else:
        epochs = pd.DataFrame(columns=["trial_id", "epoch"])
        notes.append(f"{epochs_path} is missing, so the report has no learning curves.")
    environment_path = directory / "environment.json"
    if environment_path.is_file():
        environment = _read_json(environment_path)
    else:
        environment = {}
        notes.append(f"{environment_path} is missing, so the report has no environment.")
    reference = None
    reference_path = directory / REFERENCE_FILE
    if reference_path.is_file():
        try:
            reference = read_reference(reference_path)
        except ResultsError as error:
            notes.append(f"{error} The report leaves the pretrained reference out.")
    return Results(directory, study, trials, epochs, environment, tuple(notes), reference)


def _required(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise ResultsError(
            f"{path} is missing: {directory} is not a results folder of a study "
            "(one holds study.json, trials.csv, epochs.csv and environment.json; "
            "see docs/results-folder.md)."
        )
    return path


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
    return study


def read_trials(path: Path, study: Mapping[str, Any]) -> pd.DataFrame:
    """Read trials.csv: text columns stay exactly as written, numeric ones become floats.

    Raises:
        ResultsError: The file lacks `trial_id`, `status` or the study's metric column, holds an
            unknown status, or (ablation, compare) lacks the setting or seed of each trial.
    """
    try:
        # Read everything as text first: a setting such as "None" or "1e-3" must keep its spelling.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ResultsError(f"{path} is not a readable CSV table: {error}") from error
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame(columns=["trial_id", "status"])
    metric = validation_column(str(study["metric"]))
    for column in ("trial_id", "status", metric):
        if column not in raw.columns:
            present = ", ".join(raw.columns) or "none"
            raise ResultsError(f"{path} has no {column!r} column (columns: {present}).")
    trials = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        if column in TEXT_TRIAL_COLUMNS:
            trials[column] = raw[column].astype(object)
        elif column in NUMERIC_TRIAL_COLUMNS or column.startswith(("val_", "test_")):
            trials[column] = _to_float(raw[column])
        elif column.startswith("config/"):
            trials[column] = _maybe_numeric(raw[column])
        else:
            trials[column] = raw[column].astype(object)
    trials["status"] = trials["status"].str.strip().str.lower()
    unknown = sorted(set(trials["status"]) - set(STATUSES))
    if unknown:
        raise ResultsError(
            f"{path}: unknown status {', '.join(map(repr, unknown))}; "
            f"a trial is one of {', '.join(STATUSES)}."
        )
    for column in ("setting", "error"):
        if column not in trials.columns:
            trials[column] = ""
    if "number" not in trials.columns:
        trials["number"] = np.arange(len(trials), dtype=float)
    for column in ("seed", "epochs", "time_total_s", "gpus"):
        if column not in trials.columns:
            trials[column] = np.nan
    if "gpu_time_s" not in trials.columns:
        trials["gpu_time_s"] = trials["gpus"].fillna(0.0) * trials["time_total_s"]
    if study["kind"] in ("ablation", "compare"):
        _check_ablation_columns(path, trials, study)
    return trials.sort_values("number", kind="stable").reset_index(drop=True)


def _check_ablation_columns(path: Path, trials: pd.DataFrame, study: Mapping[str, Any]) -> None:
    knob = study.get("knob") or ("method" if study["kind"] == "compare" else None)
    knob_column = f"config/{knob}"
    missing_setting = trials["setting"].astype(str).str.strip() == ""
    if missing_setting.any() and knob and knob_column in trials.columns:
        # The setting is the knob's value as text; derive it where the study left it empty.
        trials.loc[missing_setting, "setting"] = trials.loc[missing_setting, knob_column].map(
            _setting_text
        )
        missing_setting = trials["setting"].astype(str).str.strip() == ""
    if missing_setting.any():
        rows = ", ".join(trials.loc[missing_setting, "trial_id"].astype(str).head(5))
        raise ResultsError(
            f"{path}: trials {rows} have no 'setting' (the value of the ablated knob); "
            f"an {study['kind']} study needs it to group trials."
        )
    if trials["seed"].isna().any():
        rows = ", ".join(trials.loc[trials["seed"].isna(), "trial_id"].astype(str).head(5))
        raise ResultsError(
            f"{path}: trials {rows} have no 'seed'; an {study['kind']} study pairs trials by seed."
        )


def _setting_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _to_float(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column.replace("", np.nan), errors="coerce").astype(float)


def _maybe_numeric(column: pd.Series) -> pd.Series:
    """Numbers where every non-empty value is one (ints stay ints); the text otherwise."""
    filled = column[column.str.strip() != ""]
    numbers = pd.to_numeric(filled, errors="coerce")
    if len(filled) == 0 or numbers.isna().any():
        return column.astype(object)
    converted = _to_float(column)
    whole = converted.dropna()
    if (whole == whole.round()).all() and not filled.str.contains(r"[.eE]").any():
        return converted.astype("Int64") if converted.isna().any() else converted.astype(int)
    return converted


def read_epochs(path: Path) -> pd.DataFrame:
    """Read epochs.csv: `trial_id` as text, every other column as numbers.

    Raises:
        ResultsError: The file is unreadable or lacks `trial_id` or `epoch`.
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ResultsError(f"{path} is not a readable CSV table: {error}") from error
    for column in ("trial_id", "epoch"):
        if column not in raw.columns:
            raise ResultsError(f"{path} has no {column!r} column.")
    epochs = pd.DataFrame({"trial_id": raw["trial_id"].astype(object)})
    for column in raw.columns.drop("trial_id"):
        epochs[column] = _to_float(raw[column])
    return epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


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
    present = list(dict.fromkeys(results.trials["setting"].astype(str)))
    numbers = setting_numbers(present)
    if numbers is not None:
        return [setting for _, setting in sorted(zip(numbers, present, strict=True))]
    declared: Sequence[Any] = ()
    dimension = results.study["search"].get(results.knob)
    if isinstance(dimension, Mapping) and isinstance(dimension.get("values"), list):
        declared = dimension["values"]
    elif results.kind == "compare":
        declared = list(results.study["methods"])
    ordered = [setting for value in declared for setting in present if same_setting(setting, value)]
    ordered = list(dict.fromkeys(ordered))
    return ordered + [setting for setting in present if setting not in ordered]


def setting_numbers(settings: Sequence[str]) -> list[float] | None:
    """The settings as numbers when every one is a finite number (not a bool), else None."""
    numbers = []
    for setting in settings:
        if setting.strip().lower() in ("true", "false"):
            return None
        try:
            number = float(setting)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return numbers if numbers else None


def same_setting(setting: str, value: Any) -> bool:
    """Whether a setting's text names a value from study.json (``"0.001"`` names ``1e-3``)."""
    if setting == str(value):
        return True
    if isinstance(value, bool):
        return setting.strip().lower() == str(value).lower()
    try:
        return math.isclose(float(setting), float(value), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def baseline_setting(results: Results) -> str | None:
    """The setting that study.json's `baseline` names, or None when it names none of them."""
    baseline = results.study.get("baseline")
    if baseline is None:
        return None
    for setting in setting_order(results):
        if same_setting(setting, baseline):
            return setting
    return None
