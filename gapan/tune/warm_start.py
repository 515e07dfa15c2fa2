"""Warm start (`--warm-start`): a search that begins with the best configurations of earlier
studies, often run at a cheaper fidelity (frozen features before partial fine-tuning).

How the earlier trials enter TPE: only their order counts. The best `k` configurations of each
earlier study, `k` being the random start-up trials this search's sampler would otherwise draw,
are enqueued as its first trials; they run at this study's fidelity, count in its budget, and
TPE learns from what they score here. Their earlier values never enter TPE: a value measured on
cached features and one measured while a backbone stage trains are on different scales, so mixed
in one history they would either drown this study's own evidence or be drowned by it, and which
happens depends on the scale gap, not on the configurations. The order within one study is what
carries across fidelities (a configuration that is bad with frozen features is seldom good with
one stage trained), and the enqueued start-up design uses that alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from gapan import results
from gapan.config import ConfigError, from_flat, to_flat
from gapan.space import StudySpace, optuna_distributions
from gapan.tune.options import StudyError

# The Optuna user attribute that marks an enqueued configuration, with where it came from.
SEEDED_ATTR = "warm_start"
# The keys that say at which fidelity an earlier study measured its trials.
FIDELITY_KEYS = (
    "data.name",
    "data.image_size",
    "data.max_classes",
    "model.backbone",
    "model.backbone_mode",
    "model.trainable_blocks",
    "train.epochs",
)


@dataclasses.dataclass(frozen=True)
class Seed:
    """One configuration of an earlier study, projected into this study's space."""

    params: dict[str, Any]
    study: str  # the earlier study's folder
    trial_id: str
    value: float  # its metric there, at its fidelity
    fidelity: dict[str, Any]

    def attribute(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial_id": self.trial_id,
            "value": self.value,
            "fidelity": self.fidelity,
        }


def startup_trials(space: StudySpace) -> int:
    """The trials TPE draws at random before it models the history."""
    return min(10, max(2, space.num_samples // 3))


def source_folder(folder: Path, part: StudySpace) -> Path:
    """The earlier study that seeds `part`: the folder itself when it is a search, or its part
    of the same name when it is a study made of studies (a tuned comparison's method search)."""
    for candidate in (folder / part.name, folder):
        study = _study_json(candidate)
        if study is not None and study.get("kind") == "search":
            return candidate
    raise StudyError(
        f"--warm-start {folder}: neither it nor {folder / part.name} is the folder of a finished "
        "search study (with study.json and trials.csv); name a search's results folder, or a "
        "tuned comparison's folder"
    )


def seeds(space: StudySpace, folders: list[Path]) -> tuple[list[Seed], list[str]]:
    """The configurations to enqueue, best first within each earlier study, and one note per
    change made to fit this space (a value clipped, a trial left out, a fixed value taken)."""
    distributions = optuna_distributions(space)
    count = startup_trials(space)
    chosen: list[Seed] = []
    notes: list[str] = []
    for folder in folders:
        source = source_folder(folder, space)
        ranked, source_notes = _ranked(source, distributions)
        notes.extend(source_notes)
        taken = [seed for seed in ranked if seed.params not in [c.params for c in chosen]]
        chosen.extend(taken[:count])
    return chosen, notes


def seed_study(study: optuna.Study, chosen: list[Seed]) -> int:
    """Enqueue `chosen` as the study's first trials, unless it was seeded before (a resumed
    study keeps its seeding in its journal); return how many were enqueued now."""
    if any(SEEDED_ATTR in trial.user_attrs for trial in study.get_trials(deepcopy=False)):
        return 0
    for seed in chosen:
        study.enqueue_trial(
            seed.params, user_attrs={SEEDED_ATTR: seed.attribute()}, skip_if_exists=True
        )
    return len(chosen)


def seeded_trials(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The Optuna trial numbers whose configuration came from an earlier study, and whence."""
    return {
        trial.number: trial.user_attrs[SEEDED_ATTR]
        for trial in study.get_trials(deepcopy=False)
        if SEEDED_ATTR in trial.user_attrs
    }


def _study_json(folder: Path) -> dict[str, Any] | None:
    try:
        study = json.loads((folder / results.STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return study if isinstance(study, dict) else None


def _ranked(
    source: Path, distributions: dict[str, BaseDistribution]
) -> tuple[list[Seed], list[str]]:
    """The earlier study's completed trials, best first, projected onto `distributions`."""
    study = _study_json(source) or {}
    metric, mode = study.get("metric"), study.get("mode")
    try:
        trials = pd.read_csv(source / results.TRIALS_FILE, dtype={"trial_id": str})
        defaults = to_flat(from_flat(dict(study.get("fixed") or {})))
    except (OSError, ValueError, pd.errors.ParserError, ConfigError) as error:
        raise StudyError(
            f"--warm-start {source}: its trials cannot be read ({error}); name a finished "
            "search's results folder"
        ) from None
    if metric not in trials.columns or mode not in ("max", "min"):
        raise StudyError(
            f"--warm-start {source}: its study.json names no metric that trials.csv holds; "
            "name a finished search's results folder"
        )
    values = pd.to_numeric(trials[metric], errors="coerce")
    usable = trials[(trials["status"] == "completed") & values.map(math.isfinite)]
    usable = usable.assign(_value=values).sort_values("_value", ascending=mode == "min")
    fidelity = {key: defaults.get(key) for key in FIDELITY_KEYS}
    notes = _fixed_notes(source, distributions, trials.columns, defaults)
    ranked = []
    for _, row in usable.iterrows():
        params, problems = _project(row, distributions, defaults)
        if params is None:
            notes.append(f"{source}: trial {row['trial_id']} left out ({'; '.join(problems)})")
            continue
        notes.extend(f"{source}: trial {row['trial_id']}: {problem}" for problem in problems)
        ranked.append(Seed(params, str(source), str(row["trial_id"]), row["_value"], fidelity))
    if not ranked:
        notes.append(f"{source}: no completed trial fits this space; it seeds nothing")
    return ranked, notes


def _fixed_notes(
    source: Path,
    distributions: dict[str, BaseDistribution],
    columns: pd.Index,
    defaults: dict[str, Any],
) -> list[str]:
    return [
        f"{source} does not search {key}: its seeds take its fixed value {defaults.get(key)!r}"
        for key in distributions
        if f"config/{key}" not in columns
    ]


def _project(
    row: pd.Series, distributions: dict[str, BaseDistribution], defaults: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """An earlier trial's values in this space: numbers clipped into its ranges, a category it
    lacks leaves the trial out (None), and a key the earlier study fixed takes that value."""
    params: dict[str, Any] = {}
    problems: list[str] = []
    for key, distribution in distributions.items():
        column = f"config/{key}"
        value = row[column] if column in row.index else defaults.get(key)
        value = value.item() if hasattr(value, "item") else value  # numpy's scalars as Python's
        if isinstance(distribution, CategoricalDistribution):
            match = [choice for choice in distribution.choices if _same(choice, value)]
            if not match:
                return None, [f"{key}={value!r} is not among {list(distribution.choices)}"]
            params[key] = match[0]
            continue
        number = _number(value)
        if number is None:
            return None, [f"{key}={value!r} is not a number"]
        fitted = _fit(number, distribution)
        if not math.isclose(fitted, number, rel_tol=1e-9, abs_tol=0.0):
            problems.append(f"{key}={number!r} clipped to {fitted!r}, this space's range")
        params[key] = fitted
    return params, problems


def _fit(number: float, distribution: BaseDistribution) -> float | int:
    """`number` inside the distribution's range, on its step grid, of its type."""
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    clipped = min(max(number, distribution.low), distribution.high)
    if distribution.step is not None:
        steps = round((clipped - distribution.low) / distribution.step)
        clipped = min(distribution.low + steps * distribution.step, distribution.high)
    if isinstance(distribution, IntDistribution):
        return int(round(clipped))
    return float(clipped)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _same(choice: Any, value: Any) -> bool:
    if isinstance(choice, bool) or isinstance(value, bool):
        return str(choice).lower() == str(value).strip().lower()
    if choice == value or str(choice) == str(value):
        return True
    left, right = _number(choice), _number(value)
    return left is not None and right is not None and math.isclose(left, right)
