"""Rebuild an in-memory Optuna study from a results folder, for Optuna's importances and plots.

study.json's `search` holds the searched dimensions as plain data and trials.csv each trial's
values (`config/<key>`), so the study is rebuilt with `optuna.trial.create_trial` rather than
read from the journal: the report then depends on the tables alone.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from gapan.space import SpaceError, optuna_distribution
from reports.load import Results, ResultsError, same_setting
from reports.page import plot_text

STATES = {
    "completed": TrialState.COMPLETE,
    "stopped_early": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "diverged": TrialState.FAIL,
    "interrupted": TrialState.FAIL,
}


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's info logs and experimental warnings while a report is built."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)


def distribution(key: str, dimension: Mapping[str, Any]) -> BaseDistribution:
    """The Optuna distribution of one dimension of study.json's `search`, built by the same rules
    the study was checked by (`gapan.space.optuna_distribution`).

    Raises:
        ResultsError: A dimension no study could have run, naming the key.
    """
    try:
        return optuna_distribution(key, dimension, source="study.json")
    except SpaceError as error:
        raise ResultsError(str(error)) from None


def _param_value(value: Any, space: BaseDistribution) -> Any:
    """A trials.csv cell as the parameter value Optuna expects; None when it cannot be one."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(space, CategoricalDistribution):
        for choice in space.choices:
            if same_setting(str(value), choice):
                return choice
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(number)) if isinstance(space, IntDistribution) else number


def _escape_choice(value: Any, space: BaseDistribution) -> tuple[Any, BaseDistribution]:
    if not isinstance(space, CategoricalDistribution):
        return value, space
    choices = [plot_text(c) if isinstance(c, str) else c for c in space.choices]
    if isinstance(value, str):
        value = plot_text(value)
    return value, CategoricalDistribution(choices)


def _inside(value: Any, space: BaseDistribution) -> bool:
    if isinstance(space, FloatDistribution | IntDistribution):
        return space.low <= value <= space.high
    return True


def optuna_study(results: Results, *, escaped: bool = False) -> optuna.Study:
    """Rebuild the search as an in-memory Optuna study.

    Args:
        results: A search study.
        escaped: Escape ``&``, ``<`` and ``>`` in parameter names and text choices, for a
            study whose figures go into a page (Optuna's plots show them as labels).

    Completed trials become COMPLETE with the validation metric as value, trials stopped early
    become PRUNED, failed and diverged ones FAIL; each keeps its per-epoch validation metric as
    intermediate values and its trial id as the user attribute `trial_id`. A value outside the
    declared space leaves that parameter out of the trial.
    """
    spaces = {
        key: distribution(key, dimension) for key, dimension in results.study["search"].items()
    }
    names = {key: plot_text(key) if escaped else key for key in spaces}
    epochs = results.epochs
    curves: dict[str, pd.DataFrame] = {}
    if results.metric in epochs.columns:
        curves = {str(trial_id): frame for trial_id, frame in epochs.groupby("trial_id")}
    direction = "maximize" if results.mode == "max" else "minimize"
    with quiet_optuna():
        study = optuna.create_study(direction=direction, study_name=results.name)
        for _, row in results.trials.iterrows():
            params, distributions = {}, {}
            for key, space in spaces.items():
                value = _param_value(row.get(f"config/{key}"), space)
                if value is not None and _inside(value, space):
                    if escaped:
                        value, space = _escape_choice(value, space)
                    params[names[key]], distributions[names[key]] = value, space
            state = STATES[row["status"]]
            value = float(row[results.metric])
            if state == TrialState.COMPLETE and not math.isfinite(value):
                state = TrialState.FAIL
            curve = curves.get(str(row["trial_id"]))
            intermediate = {}
            if curve is not None:
                for epoch, metric in zip(curve["epoch"], curve[results.metric], strict=True):
                    if math.isfinite(epoch) and math.isfinite(metric):
                        intermediate[int(epoch)] = float(metric)
            try:
                trial = optuna.trial.create_trial(
                    state=state,
                    value=value if state == TrialState.COMPLETE else None,
                    params=params,
                    distributions=distributions,
                    user_attrs={"trial_id": str(row["trial_id"])},
                    intermediate_values=intermediate,
                )
            except ValueError:
                # A value off the declared step: keep the trial's outcome without its params.
                trial = optuna.trial.create_trial(
                    state=state,
                    value=value if state == TrialState.COMPLETE else None,
                    user_attrs={"trial_id": str(row["trial_id"])},
                    intermediate_values=intermediate,
                )
            study.add_trial(trial)
    return study


# fANOVA fits a random forest; beyond a few hundred trials it takes long enough to skip.
FANOVA_MAX_TRIALS = 300
PED_ANOVA = "PED-ANOVA"
FANOVA = "fANOVA"


def param_importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Parameter importances from Optuna's evaluators over the completed trials.

    PED-ANOVA (what separates the best 10% of trials from the rest) always; fANOVA (the share
    of the metric's variance each parameter explains) as well up to `FANOVA_MAX_TRIALS`
    completed trials. The two answer different questions, so they can disagree.

    Returns:
        Evaluator name -> {param: importance}, each summing to 1, most important first.

    Raises:
        ValueError: No evaluator can run, e.g. with fewer than two completed trials.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        raise ValueError(f"{len(complete)} completed trial(s); importances need at least 2.")
    evaluators = [(PED_ANOVA, optuna.importance.PedAnovaImportanceEvaluator())]
    if len(complete) <= FANOVA_MAX_TRIALS:
        evaluators.append((FANOVA, optuna.importance.FanovaImportanceEvaluator(seed=0)))
    found, problems = {}, []
    with quiet_optuna():
        for name, evaluator in evaluators:
            try:
                importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                problems.append(f"{name}: {error}")
                continue
            values = {key: float(value) for key, value in importances.items()}
            if values and all(np.isfinite(list(values.values()))):
                found[name] = values
            else:
                problems.append(f"{name}: no finite importances")
    if not found:
        raise ValueError("; ".join(problems))
    return found
