"""A study's results folder: tidy tables the reports read without Ray (docs/results-folder.md)."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from gapan.files import write_atomic
from gapan.space import METHOD, StudySpace

STUDY_FILE = "study.json"
ENVIRONMENT_FILE = "environment.json"
TRIALS_FILE = "trials.csv"
EPOCHS_FILE = "epochs.csv"
TRIALS_DIR = "trials"  # one folder per trial, holding its resolved config
REFERENCE_FILE = "reference.json"  # the pretrained backbone with no training (gapan.evaluate)
TUNE_DIR = "tune"  # Tune's own experiment folder (checkpoints, experiment state)
SEQUENTIAL_FILE = "sequential.json"  # an adaptive study's rounds and decisions
CLASS_SCORES_FILE = "class_scores.csv"  # each trial's final scores per validation and test class
# The trained weights a study keeps (`--keep-checkpoints`, gapan/tune/checkpoints.py): one folder
# per kept trial, `models/<trial_id>/`, holding its final model as safetensors, its resolved
# config and its final metrics. The reader is gapan/export.py.
MODELS_DIR = "models"
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
MODEL_METRICS_FILE = "metrics.json"
# What `--keep-checkpoints` may ask for: the final weights of the best trial of each setting (of
# the best trial, in a search), of every completed trial, or of none.
KEEP_POLICIES = ("best", "last", "none")
# An ablated setting in trials.csv: `SETTING`, its text as people read it (the reports group
# trials by it), and `SETTING_VALUE`, the knob's value as JSON, so that it reads back with its
# type (`read_setting`). Tables written before that column hold the text alone.
SETTING = "setting"
SETTING_VALUE = "setting_value"
# Where a trial's last report carries its per-class scores (gapan.train.CLASS_SCORES): JSON text
# {"fields": [...], "rows": [[...], ...]}.
CLASS_SCORES_KEY = "class_scores"
CLASS_SCORE_COLUMNS = (
    "trial_id",
    "split",
    "class",
    "queries",
    "map_at_r",
    "recall_at_1",
    "r_precision",
)

EPOCH_COLUMNS = (
    "epoch",
    "time_this_epoch_s",
    "train_loss",
    "train_align",
    "train_nll",
    "train_metric",
    "lr",
    "time_per_step_s",
    "peak_gpu_memory_mb",
    "node_id",
)
# What a trial cost, in trials.csv: the mean over its epochs of the time per training step and
# per epoch (evaluation included), and its highest GPU memory (CUDA only).
COST_COLUMNS = ("time_per_step_s", "time_per_epoch_s", "peak_gpu_memory_mb")
# Statuses a trial reports itself in its last result, with the reason under `error`.
REPORTED_ENDS = ("completed", "diverged", "failed")
# Every status of trials.csv (`trial_status`). `stopped_early`: the study's scheduler stopped the
# trial, and nothing else; `interrupted`: the study stopped before the trial ended (Ctrl-C, a
# killed driver), a state that --resume continues.
STATUSES = ("completed", "stopped_early", "failed", "diverged", "interrupted")
# Every status but `interrupted`: the trial will not run again.
ENDED = tuple(status for status in STATUSES if status != "interrupted")


def ended_statuses(scheduled: bool) -> tuple[str, ...]:
    """The statuses of trials that ended in a study with a scheduler (`scheduled`) or without.

    Without one no trial stops early: trials.csv files written before stops were recorded label
    interrupted trials `stopped_early` when every trial had ended, and those must run on.
    """
    return ENDED if scheduled else tuple(status for status in ENDED if status != "stopped_early")


@dataclass
class TrialRecord:
    """What a study kept of one trial: its config, every epoch it reported, and its error."""

    trial_id: str
    number: int
    config: dict[str, Any]  # what Tune handed the trial (fixed and searched keys)
    resolved: dict[str, Any] = field(default_factory=dict)  # every config key, as trained
    epochs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    time_total_s: float = math.nan
    gpus: float = 0.0
    stopped_by_scheduler: bool = False  # the scheduler ended it (`gapan.tune.search.RecordedASHA`)


def write_study(study_dir: Path, space: StudySpace, extra: dict[str, Any]) -> None:
    record = {**space.to_dict(), **extra}
    _write_json(study_dir / STUDY_FILE, record)


def write_reference(study_dir: Path, reference: dict[str, Any]) -> None:
    _write_json(study_dir / REFERENCE_FILE, reference)


def read_study(study_dir: Path) -> dict[str, Any]:
    return json.loads((study_dir / STUDY_FILE).read_text())


def environment(device: str) -> dict[str, Any]:
    versions = {}
    for package in ("torch", "torchvision", "timm", "nflows", "ray", "optuna", "pandas", "plotly"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "versions": versions,
        "command": " ".join(sys.argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def write_environment(study_dir: Path, info: dict[str, Any]) -> None:
    _write_json(study_dir / ENVIRONMENT_FILE, info)


def trial_status(record: TrialRecord) -> str:
    """`completed`, `stopped_early`, `failed`, `diverged`, or `interrupted`.

    A trial fails by raising (after its retries; the error is Tune's) or by reporting `failed`
    itself (out of GPU memory, which a retry would not mend). One that ended any other way
    without finishing was stopped early only if the scheduler stopped it: Tune ends every
    running trial when its driver is interrupted, too.
    """
    if record.error:
        return "failed"
    last = record.epochs[-1] if record.epochs else {}
    status = last.get("status")
    if status in REPORTED_ENDS:
        return status
    return "stopped_early" if record.stopped_by_scheduler else "interrupted"


def setting_text(value: Any) -> str:
    """A setting as people read it: trials.csv's `SETTING`, the keys of sequential.json."""
    return str(value)


def setting_json(value: Any) -> str:
    """A setting as trials.csv's `SETTING_VALUE` holds it: the knob's value as JSON."""
    return json.dumps(value, default=_python_scalar)


def _python_scalar(value: Any) -> Any:
    """A numpy scalar (a sampler's choice may be one) as the Python number it holds."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a setting is a number, a string, a bool or None; got {value!r}")


def read_setting(text: str, value: str | None = None) -> Any:
    """A setting of trials.csv read back with its type: its JSON `value` (`SETTING_VALUE`) where
    the row has one; else, in a table written before that column, its `text` read as a bool
    (``true`` or ``false``, any case), an int, a float, or else the text itself.

    Examples:
        >>> read_setting("4", "4"), read_setting("gapan", '"gapan"'), read_setting("1.0", "1.0")
        (4, 'gapan', 1.0)
        >>> read_setting("4"), read_setting("1e-05"), read_setting("false"), read_setting("glow")
        (4, 1e-05, False, 'glow')

    Raises:
        ValueError: `value` is not JSON, or not the value whose text is `text`.
    """
    if not isinstance(value, str) or not value.strip():
        return _setting_from_text(text)
    try:
        read = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{SETTING_VALUE} {value[:40]!r} is not JSON") from None
    if setting_text(read) != text:
        raise ValueError(
            f"{SETTING_VALUE} {value[:40]!r} is not the value of the setting {text[:40]!r}"
        )
    return read


def _setting_from_text(text: str) -> Any:
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def setting_values(trials: pd.DataFrame) -> dict[str, Any]:
    """Each setting of a trials table (its text) with its value (`read_setting`), in the order
    the table first holds them."""
    texts = trials[SETTING].astype(str)
    stored = trials[SETTING_VALUE] if SETTING_VALUE in trials.columns else [None] * len(texts)
    return {text: read_setting(text, value) for text, value in zip(texts, stored, strict=True)}


def _setting_cells(config: dict[str, Any], knob: str | None) -> dict[str, str]:
    """A trial's `SETTING` and `SETTING_VALUE`; empty in a search, which has no knob."""
    if knob is None or knob not in config:
        return {SETTING: "", SETTING_VALUE: ""}
    return {SETTING: setting_text(config[knob]), SETTING_VALUE: setting_json(config[knob])}


def trials_table(records: list[TrialRecord], space: StudySpace) -> pd.DataFrame:
    rows = []
    searched = [*space.search, "train.seed"]
    for record in sorted(records, key=lambda r: r.number):
        last = record.epochs[-1] if record.epochs else {}
        status = trial_status(record)
        row: dict[str, Any] = {
            "trial_id": record.trial_id,
            "number": record.number,
            "status": status,
            "seed": record.config.get("train.seed", 0),
            **_setting_cells(record.config, space.knob),
        }
        row.update(
            {f"config/{key}": record.config.get(key) for key in searched if key != "train.seed"}
        )
        row.update({k: v for k, v in last.items() if k.startswith(("val_", "test_"))})
        # A diverged or failed trial's last report ends it; it trained no epoch.
        trained = [
            epoch.get("epoch", 0)
            for epoch in record.epochs
            if epoch.get("status") not in ("diverged", "failed")
        ]
        row["epochs"] = int(max(trained, default=0))
        row.update(trial_cost(record.epochs))
        row["time_total_s"] = record.time_total_s
        row["gpus"] = record.gpus
        row["gpu_time_s"] = record.gpus * record.time_total_s
        row["node_id"] = last.get("node_id", "")  # the Ray node of the last epoch
        row["error"] = record.error or (last.get("error", "") if status in REPORTED_ENDS else "")
        rows.append(row)
    return pd.DataFrame(rows)


def trial_cost(epochs: list[dict[str, Any]]) -> dict[str, float]:
    """`COST_COLUMNS` of a trial from the epochs it reported (NaN where none reported it)."""

    def values(key: str) -> list[float]:
        return [float(epoch[key]) for epoch in epochs if isinstance(epoch.get(key), int | float)]

    steps, spans, peaks = (
        values(key) for key in ("time_per_step_s", "time_this_epoch_s", "peak_gpu_memory_mb")
    )
    return {
        "time_per_step_s": sum(steps) / len(steps) if steps else math.nan,
        "time_per_epoch_s": sum(spans) / len(spans) if spans else math.nan,
        "peak_gpu_memory_mb": max(peaks) if peaks else math.nan,
    }


def epochs_table(records: list[TrialRecord]) -> pd.DataFrame:
    rows = []
    for record in records:
        for epoch in record.epochs:
            if epoch.get("status") in ("diverged", "failed"):
                continue  # the end of the trial, not an epoch it trained
            row = {"trial_id": record.trial_id}
            row.update({k: epoch[k] for k in EPOCH_COLUMNS if k in epoch})
            row.update({k: v for k, v in epoch.items() if k.startswith("val_")})
            rows.append(row)
    return pd.DataFrame(rows)


def class_scores_table(records: list[TrialRecord]) -> pd.DataFrame:
    """`CLASS_SCORE_COLUMNS`: one row per trial, split and class, from each trial's last report
    (trials that did not finish have none)."""
    frames = []
    for record in records:
        text = record.epochs[-1].get(CLASS_SCORES_KEY) if record.epochs else None
        if not isinstance(text, str):
            continue
        scores = json.loads(text)
        frame = pd.DataFrame(scores["rows"], columns=scores["fields"])
        frames.append(frame.assign(trial_id=record.trial_id))
    if not frames:
        return pd.DataFrame(columns=list(CLASS_SCORE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(CLASS_SCORE_COLUMNS)]


def write_tables(study_dir: Path, records: list[TrialRecord], space: StudySpace) -> pd.DataFrame:
    """Write trials.csv, epochs.csv, class_scores.csv and each trial's resolved config; return
    the trials table."""
    trials = trials_table(records, space)
    # Atomic: a driver killed while writing leaves the previous tables, never a cut-off one.
    write_atomic(study_dir / EPOCHS_FILE, csv_text(epochs_table(records)))
    write_atomic(study_dir / CLASS_SCORES_FILE, csv_text(class_scores_table(records)))
    for record in records:
        trial_dir = study_dir / TRIALS_DIR / record.trial_id
        trial_dir.mkdir(parents=True, exist_ok=True)
        _write_json(trial_dir / "config.json", record.resolved or record.config)
    # Last: a part of a study whose trials.csv says it ended is kept as it is on a resume, so
    # everything else it wrote must be there first.
    write_atomic(study_dir / TRIALS_FILE, csv_text(trials))
    return trials


def csv_text(table: pd.DataFrame) -> str:
    """A table as CSV text with every text cell quoted.

    With the default minimal quoting a text cell holding a lone carriage return (an error
    message can) is written bare, and every CSV reader splits its row in two there.
    """
    return table.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)


def method_overrides(config: dict[str, Any], space: StudySpace) -> dict[str, Any]:
    """A trial's flat config with a comparison's method name expanded into its overrides."""
    flat = dict(config)
    method = flat.pop(METHOD, None)
    if method is not None:
        flat.update(space.methods[method])
    return flat


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


# The trials a study kept (`--keep-checkpoints`): read by the runner, prune and export alike.


@dataclass(frozen=True)
class KeptModel:
    """A trial whose final weights the study keeps (`MODELS_DIR`/<trial_id>)."""

    trial_id: str
    folder: Path
    setting: str  # the ablated setting as text (trials.csv's `setting`); "" in a search
    value: float  # the study's metric at the trial's end


def kept_models(study_dir: Path) -> list[KeptModel]:
    """The trials whose weights the folder keeps, read from their metrics.json."""
    kept = []
    for folder in sorted((study_dir / MODELS_DIR).glob("*")):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            record = json.loads((folder / MODEL_METRICS_FILE).read_text())
            value = float(record["metrics"][record["metric"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not written whole: the next settle replaces or removes it
        kept.append(KeptModel(folder.name, folder, str(record.get("setting", "")), value))
    return kept


def better(value: float, than: float, mode: str) -> bool:
    """Whether `value` beats `than` in `mode`; a NaN beats nothing and loses to any number."""
    if math.isnan(than):
        return not math.isnan(value)
    return value > than if mode == "max" else value < than


def chosen(models: list[KeptModel], policy: str, mode: str) -> set[str]:
    """The trial ids `policy` keeps among `models`: all (last), none, or the best of each setting
    (the first kept wins a tie).

    Examples:
        >>> models = [KeptModel("a", Path("a"), "0", 0.2), KeptModel("b", Path("b"), "0", 0.3),
        ...           KeptModel("c", Path("c"), "4", 0.1)]
        >>> sorted(chosen(models, "best", "max")), sorted(chosen(models, "best", "min"))
        (['b', 'c'], ['a', 'c'])
        >>> sorted(chosen(models, "last", "max")), chosen(models, "none", "max")
        (['a', 'b', 'c'], set())
    """
    if policy == "none":
        return set()
    if policy == "last":
        return {model.trial_id for model in models}
    best: dict[str, KeptModel] = {}
    for model in models:
        if model.setting not in best or better(model.value, best[model.setting].value, mode):
            best[model.setting] = model
    return {model.trial_id for model in best.values()}
