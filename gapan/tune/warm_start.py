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
from gapan.space import SPLIT_PREFIX, StudySpace, optuna_distributions
from gapan.tune.options import StudyError

# The Optuna user attribute that marks an enqueued configuration, with where it came from.
SEEDED_ATTR = "warm_start"
# The keys that say at which fidelity an earlier study measured its trials.
FIDELITY_KEYS = (
    "data.name",
    "data.split_seed",
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
    metric: str  # which metric that is (the earlier study's own)
    fidelity: dict[str, Any]

    def attribute(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial_id": self.trial_id,
            "metric": self.metric,
            "value": self.value,
            "fidelity": self.fidelity,
        }


def startup_trials(space: StudySpace) -> int:
    """The trials TPE draws at random before it models the history."""
    return min(10, max(2, space.num_samples // 3))


def source_folder(folder: Path, part: StudySpace) -> Path:
    """The earlier study that seeds `part`: the folder itself when it is a search, or its part
    of the same name when it is a study made of studies (a tuned comparison's method search),
    in the split of the same class split when it ran on several (`--splits`)."""
    split = f"{SPLIT_PREFIX}{part.fixed.get('data.split_seed', 0)}"
    candidates = (folder / part.name, folder, folder / split / part.name, folder / split)
    for candidate in candidates:
        study = _study_json(candidate)
        if study is not None and study.get("kind") == "search":
            return candidate
    raise StudyError(
        f"--warm-start {folder}: neither it nor {folder / part.name} (nor either in {split}/) "
        "is the folder of a search study with study.json and trials.csv; name a search's "
        "results folder, or a tuned comparison's folder"
    )


def seeds(
    space: StudySpace, folders: list[Path], study_dir: Path | None = None
) -> tuple[list[Seed], list[str]]:
    """The configurations to enqueue, best first within each earlier study (k of each, at most
    the search's trials in all, no two the same), and one note per change made to fit this
    space (a value clipped, a trial left out, a fixed value taken).

    Raises:
        StudyError: A folder is not a search, is this study's own, or ran on another class
            split (its validation classes would include this study's test classes).
    """
    distributions = optuna_distributions(space)
    count = startup_trials(space)
    chosen: list[Seed] = []
    notes: list[str] = []
    sources = list(dict.fromkeys(source_folder(folder, space).resolve() for folder in folders))
    for source in sources:
        if study_dir is not None and source == study_dir.resolve():
            raise StudyError(f"--warm-start {source} is this study's own folder; name another")
        ranked, source_notes = _ranked(source, distributions)
        _check_split(source, ranked, space)
        notes.extend(source_notes)
        taken: list[Seed] = []
        for seed in ranked:
            if len(taken) < count and not any(_same_params(seed, c) for c in chosen + taken):
                taken.append(seed)
        chosen.extend(taken)
    if len(chosen) > space.num_samples:
        notes.append(
            f"{len(chosen)} configurations for a search of {space.num_samples} trials: the "
            f"first {space.num_samples} are taken"
        )
        chosen = chosen[: space.num_samples]
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


def _same_params(first: Seed, second: Seed) -> bool:
    """Whether two configurations are one, as Optuna's `enqueue_trial(skip_if_exists=True)`
    compares them (numbers equal to a relative 1e-5)."""
    if first.params.keys() != second.params.keys():
        return False
    for key, value in first.params.items():
        other = second.params[key]
        numbers = _number(value), _number(other)
        if None in numbers or isinstance(value, bool) or isinstance(other, bool):
            if value != other:
                return False
        elif not math.isclose(numbers[0], numbers[1], rel_tol=1e-5):
            return False
    return True


def _check_split(source: Path, ranked: list[Seed], space: StudySpace) -> None:
    here = to_flat(from_flat(dict(space.fixed))).get("data.split_seed")
    for seed in ranked[:1]:
        there = seed.fidelity.get("data.split_seed")
        if there != here:
            raise StudyError(
                f"--warm-start {source} ran on class split {there}, this study on split {here}: "
                "its configurations were chosen on validation classes that are test classes "
                "here. Warm-start from a study on the same split (with --splits, each split "
                "from the same split of a study run with --splits)"
            )


def _study_json(folder: Path) -> dict[str, Any] | None:
    try:
        study = json.loads((folder / results.STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return study if isinstance(study, dict) else None


def _ranked(
    source: Path, distributions: dict[str, BaseDistribution]
) -> tuple[list[Seed], list[str]]:
    """The earlier study's completed trials, best first, projected onto `distributions`. A
    multi-objective study ranks them by its first objective, its metric."""
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
    if not {"trial_id", "status", metric} <= set(trials.columns) or mode not in ("max", "min"):
        raise StudyError(
            f"--warm-start {source}: its trials.csv lacks the trial ids, statuses or the metric "
            "its study.json names; name a search's results folder"
        )
    values = pd.to_numeric(trials[metric], errors="coerce")
    kept = (trials["status"] == "completed") & values.map(math.isfinite)
    usable = trials[kept].assign(_value=values[kept])
    # Stable, so that equal values keep the order the trials ran in.
    usable = usable.sort_values("_value", ascending=mode == "min", kind="stable")
    fidelity = {key: defaults.get(key) for key in FIDELITY_KEYS}
    notes = _fixed_notes(source, distributions, trials.columns, defaults)
    ranked = []
    for _, row in usable.iterrows():
        params, problems = _project(row, distributions, defaults)
        if params is None:
            notes.append(f"{source}: trial {row['trial_id']} left out ({'; '.join(problems)})")
            continue
        notes.extend(f"{source}: trial {row['trial_id']}: {problem}" for problem in problems)
        trial = str(row["trial_id"])
        ranked.append(Seed(params, str(source), trial, float(row["_value"]), metric, fidelity))
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
