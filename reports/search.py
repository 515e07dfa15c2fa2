"""Rebuild an in-memory Optuna study from a results folder, for Optuna's importances and plots.

study.json's `search` holds the searched dimensions as plain data and trials.csv each trial's
values (`config/<key>`), so the study is rebuilt with `optuna.trial.create_trial` rather than
read from the journal: the report then depends on the tables alone.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
            if same_setting(value, choice):
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
            params, distributions = _trial_params(row, spaces, names, escaped)
            curve = curves.get(str(row["trial_id"]))
            study.add_trial(_trial(row, results.metric, params, distributions, curve))
    return study


def _trial_params(
    row: pd.Series,
    spaces: Mapping[str, BaseDistribution],
    names: Mapping[str, str],
    escaped: bool,
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """A trial's values inside the declared space and their distributions, by parameter name
    (escaped with `escaped`, see `optuna_study`)."""
    params, distributions = {}, {}
    for key, space in spaces.items():
        value = _param_value(row.get(f"config/{key}"), space)
        if value is not None and _inside(value, space):
            if escaped:
                value, space = _escape_choice(value, space)
            params[names[key]], distributions[names[key]] = value, space
    return params, distributions


def _trial(
    row: pd.Series,
    metric: str,
    params: dict[str, Any],
    distributions: dict[str, BaseDistribution],
    curve: pd.DataFrame | None,
) -> optuna.trial.FrozenTrial:
    """One row of trials.csv as an Optuna trial, with its validation curve (`curve`, the
    trial's rows of epochs.csv) as intermediate values."""
    state = STATES[row["status"]]
    value = float(row[metric])
    if state == TrialState.COMPLETE and not math.isfinite(value):
        state = TrialState.FAIL
    intermediate = {}
    if curve is not None:
        for epoch, epoch_value in zip(curve["epoch"], curve[metric], strict=True):
            if math.isfinite(epoch) and math.isfinite(epoch_value):
                intermediate[int(epoch)] = float(epoch_value)
    try:
        return optuna.trial.create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params,
            distributions=distributions,
            user_attrs={"trial_id": str(row["trial_id"])},
            intermediate_values=intermediate,
        )
    except ValueError:
        # A value off the declared step: keep the trial's outcome without its params.
        return optuna.trial.create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            user_attrs={"trial_id": str(row["trial_id"])},
            intermediate_values=intermediate,
        )


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


# The bootstrap behind `most_important`: resamples of the completed trials, each scored by
# PED-ANOVA (fANOVA fits a forest per resample, too slow for a report). The seed fixes the
# resamples, so a rebuilt report makes the same call; the time limit bounds a large search.
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
BOOTSTRAP_SECONDS = 20.0
# Below this many resamples (the time limit ran out) a share says too little to name anything.
MIN_RESAMPLES = 20


@dataclass(frozen=True)
class ImportanceCall:
    """Whether a report may name a most important parameter, and how that was decided.

    Attributes:
        param: The parameter the report may call the most important; None when the search is
            too small to tell.
        how: How the call was made, a clause for the report ("ranked first by both
            evaluators ...", "the evaluators disagree ...").
        leaders: Evaluator -> the parameter it ranks first over all the trials; None for a tie.
        shares: Parameter -> the share of bootstrap resamples in which PED-ANOVA ranks it
            first, largest first.
        resamples: Bootstrap resamples run.
    """

    param: str | None
    how: str
    leaders: dict[str, str | None]
    shares: dict[str, float]
    resamples: int

    def table(self) -> pd.DataFrame:
        """One row per parameter: the evaluators that rank it first, its bootstrap share and
        whether the report calls it the most important."""
        params = list(self.shares)
        params += [p for p in self.leaders.values() if p is not None and p not in params]
        rows = [
            {
                "param": param,
                "ranked first by": ", ".join(
                    name for name, leader in self.leaders.items() if leader == param
                ),
                "first in resamples": self.shares.get(param, 0.0),
                "resamples": self.resamples,
                "called most important": param == self.param,
            }
            for param in params
        ]
        columns = [
            "param",
            "ranked first by",
            "first in resamples",
            "resamples",
            "called most important",
        ]
        return pd.DataFrame(rows, columns=columns)


def _leader(importances: Mapping[str, float]) -> str | None:
    """The parameter with the largest importance; None when several share it (e.g. all equal,
    as Optuna reports when it cannot tell the parameters apart)."""
    if not importances:
        return None
    top = max(importances.values())
    leaders = [p for p, value in importances.items() if math.isclose(value, top, rel_tol=1e-9)]
    return leaders[0] if len(leaders) == 1 else None


def bootstrap_firsts(
    study: optuna.Study,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    seconds: float = BOOTSTRAP_SECONDS,
) -> tuple[dict[str, float], int]:
    """How often PED-ANOVA ranks each parameter first over resamples of the completed trials.

    Each resample draws as many completed trials as the study has, with replacement, into a
    fresh in-memory study: copies made by `optuna.trial.create_trial` get numbers of their own,
    which PED-ANOVA needs to tell a trial drawn twice from two trials. A resample with a tie
    for first, or one PED-ANOVA cannot score, counts for no parameter.

    Args:
        study: The search, as `optuna_study` rebuilds it.
        resamples: Resamples to draw.
        seed: Seed of the draws.
        seconds: Stop drawing after this long; the resamples drawn so far are the answer.

    Returns:
        Parameter -> share of the resamples run in which it is first (largest first), and the
        number of resamples run.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = list(dict.fromkeys(param for trial in complete for param in trial.params))
    if not complete or not params:
        return {}, 0
    rng = np.random.default_rng(seed)
    firsts: Counter[str] = Counter()
    run = 0
    start = time.monotonic()
    with quiet_optuna(), warnings.catch_warnings():
        # A resample's warnings (too few trials above the quantile) are about the resample.
        warnings.simplefilter("ignore")
        while run < resamples and time.monotonic() - start < seconds:
            drawn = rng.integers(0, len(complete), size=len(complete))
            resample = _resample(study, [complete[index] for index in drawn])
            run += 1
            leader = _ped_anova_leader(resample)
            if leader is not None:
                firsts[leader] += 1
    shares = {param: firsts[param] / run for param in params} if run else {}
    return dict(sorted(shares.items(), key=lambda item: -item[1])), run


def _resample(study: optuna.Study, drawn: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    """A fresh in-memory study of copies of the `drawn` trials, each numbered anew."""
    resample = optuna.create_study(directions=study.directions)
    resample.add_trials(
        [
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                values=trial.values,
                params=trial.params,
                distributions=trial.distributions,
            )
            for trial in drawn
        ]
    )
    return resample


def _ped_anova_leader(study: optuna.Study) -> str | None:
    """The parameter PED-ANOVA ranks first; None for a tie or a study it cannot score."""
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    return _leader(importances)


def most_important(
    study: optuna.Study,
    importances: Mapping[str, Mapping[str, float]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    seconds: float = BOOTSTRAP_SECONDS,
) -> ImportanceCall:
    """Which parameter, if any, a report may call the most important.

    A parameter is named when both evaluators rank it first over all the trials and PED-ANOVA
    also ranks it first in more than half of the bootstrap resamples of the trials
    (`bootstrap_firsts`); when only PED-ANOVA ran (a large search), the bootstrap alone decides.
    Either condition alone is met by pure noise in many small searches: one lucky trial makes
    PED-ANOVA's best 10%, and it stays in most resamples (docs/results-folder.md gives the
    rates). Otherwise the search is too small to tell.

    Args:
        study: The search, as `optuna_study` rebuilds it.
        importances: `param_importances(study)`.
        resamples: Bootstrap resamples to draw.
        seed: Seed of the bootstrap.
        seconds: Time limit of the bootstrap.
    """
    leaders = {name: _leader(values) for name, values in importances.items()}
    shares, run = bootstrap_firsts(study, resamples=resamples, seed=seed, seconds=seconds)

    def in_resamples(param: str) -> str:
        return (
            f"first in {round(shares.get(param, 0.0) * run)} of {run} bootstrap resamples "
            f"of the trials ({shares.get(param, 0.0):.0%})"
        )

    top = next(iter(shares), None)
    stable = top is not None and run >= MIN_RESAMPLES and shares[top] > 0.5
    named = set(leaders.values())
    agreed = len(leaders) > 1 and len(named) == 1 and None not in named
    if agreed and stable and top in named:
        how = f"ranked first by both evaluators ({' and '.join(leaders)}) and {in_resamples(top)}"
        return ImportanceCall(top, how, leaders, shares, run)
    if len(leaders) == 1 and stable:
        name = next(iter(leaders))
        return ImportanceCall(top, f"only {name} ran; {in_resamples(top)}", leaders, shares, run)
    verdict = _evaluators_verdict(leaders, agreed)
    bootstrap, outcome = _bootstrap_verdict(shares, run, stable, seconds)
    how = f"{verdict}{', but' if agreed else ' and'} {bootstrap}: {outcome}"
    return ImportanceCall(None, how, leaders, shares, run)


def _evaluators_verdict(leaders: Mapping[str, str | None], agreed: bool) -> str:
    """What the evaluators' first places say, for a report that names no parameter."""
    if agreed:
        return f"both evaluators rank {next(iter(leaders.values()))} first"
    if len(leaders) > 1:
        found = ", ".join(f"{name}: {leader or 'a tie'}" for name, leader in leaders.items())
        return f"the evaluators disagree ({found})"
    name, leader = next(iter(leaders.items()), (PED_ANOVA, None))
    return f"only {name} ran ({leader or 'a tie'} first)"


def _bootstrap_verdict(
    shares: Mapping[str, float], run: int, stable: bool, seconds: float
) -> tuple[str, str]:
    """What the bootstrap says, and the outcome, for a report that names no parameter."""
    if run < MIN_RESAMPLES:
        bootstrap = f"only {run} bootstrap resamples ran in the {seconds:g} s allowed"
        return bootstrap, "the report cannot tell which matters most"
    top = next(iter(shares), None)
    if stable:
        bootstrap = f"the bootstrap resamples put {top} first ({shares[top]:.0%})"
    else:
        bootstrap = f"no parameter is first in most of {run} bootstrap resamples of the trials"
        if top is not None:
            bootstrap += f" (the most often first: {top}, in {shares[top]:.0%})"
    return bootstrap, "the search is too small to tell which matters most"
