"""The order in which an ablation or comparison runs its (setting, seed) grid.

Seed by seed: every setting's first seed before any second seed, so a study stopped early
still compares every setting. Within a seed, the settings that took longest so far go first.
A study runs its trials a few at a time; started in a random order, its last long trial often
runs alone while the other slots (CPU cores, GPU fractions) idle. Longest first, the study ends
on short trials and the slots finish together (the classic longest-processing-time rule).
A setting's cost is measured, not assumed: the mean running time of its completed trials,
which the searcher records in each Optuna trial (user attribute ``time_total_s``, Tune's own
figure; an Optuna trial's duration would include its wait for a free slot). Before a setting
has completed once, its cost is unknown and it goes first, in the order the space lists it.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from optuna.trial import TrialState

from gapan.space import StudySpace

SEED_KEY = "train.seed"
SECONDS_ATTR = "time_total_s"


def next_grid_point(study: optuna.Study, space: StudySpace) -> dict[str, Any] | None:
    """The next (setting, seed) of `space.grid()` to run, or None when every point has a trial.

    Every trial with parameters counts as taken, whatever its state: a failed point is not run
    again by itself. Enqueued trials have no parameters yet: call this when none is waiting.
    """
    knob = space.knob
    grid = space.grid()
    trials = study.get_trials(deepcopy=False)
    taken = {(trial.params.get(knob), trial.params.get(SEED_KEY)) for trial in trials}
    durations: dict[Any, list[float]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE and SECONDS_ATTR in trial.user_attrs:
            setting = trial.params.get(knob)
            durations.setdefault(setting, []).append(trial.user_attrs[SECONDS_ATTR])

    def priority(point: tuple[int, int, Any]) -> tuple:
        seed, listed, setting = point
        if setting in durations:
            return (seed, 1, -statistics.fmean(durations[setting]), listed)
        return (seed, 0, 0.0, listed)  # unknown cost: first

    pending = [
        (seed, listed, setting)
        for seed in grid[SEED_KEY]
        for listed, setting in enumerate(grid[knob])
        if (setting, seed) not in taken
    ]
    if not pending:
        return None
    seed, _, setting = min(pending, key=priority)
    return {knob: setting, SEED_KEY: seed}
