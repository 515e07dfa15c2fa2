"""How a study picks its trials: an Optuna study, asked and told through Ray Tune's `Searcher`.

The Optuna study lives in ``optuna.journal`` inside the study folder, so optuna-dashboard can open
it and a resumed study keeps the sampler's whole history. Searches sample with multivariate TPE;
ablations and comparisons run their (setting, seed) grid in the order of `gapan.tune.trial_order`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from gapan.config import from_flat
from gapan.files import write_atomic
from gapan.space import StudySpace, optuna_distributions
from gapan.tune.options import StudyError
from gapan.tune.trial_order import SECONDS_ATTR, next_grid_point
from gapan.tune.warm_start import Seed, seed_study, startup_trials

OPTUNA_FILE = "optuna.journal"
# The trials the study's scheduler stopped, by Tune trial id (`RecordedASHA`).
SCHEDULER_STOPS_FILE = "scheduler_stops.json"


def journal(study_dir: Path) -> optuna.storages.JournalStorage:
    """The storage of a study folder's Optuna study: a journal file, safe for parallel writers."""
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / OPTUNA_FILE))
    )


def open_optuna_study(
    space: StudySpace, storage: optuna.storages.BaseStorage, seed: int = 0
) -> optuna.Study:
    """The study's Optuna study, created on first use; `seed` seeds its sampler."""
    study = optuna.create_study(
        storage=storage,
        study_name=space.name,
        sampler=_sampler(space, seed),
        directions=["maximize" if d == "max" else "minimize" for d in space.directions()],
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        # Experimental in Optuna 5 and stable in use; optuna-dashboard names the objective by it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(space.objectives or [space.metric])
    return study


def _sampler(space: StudySpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.kind == "search":
        with warnings.catch_warnings():
            # `group` is experimental in Optuna 5; it keeps conditional dimensions apart.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                multivariate=True,
                group=True,
                constant_liar=True,
                seed=seed,
                n_startup_trials=startup_trials(space),
            )
    # A grid's every trial is enqueued with all its parameters, so no sampler is ever consulted.
    # Not Optuna's GridSampler: it runs its points in an order of its own, not trial_order's.
    return optuna.samplers.RandomSampler(seed=seed)


class StudySearcher(Searcher):
    """Tune's searcher over the study's Optuna study, one Optuna trial per Tune trial.

    - A diverged or failed trial ends with a non-finite metric or an error: Optuna records it as
      failed (samplers learn nothing from it and do not wait for it).
    - A driver killed between Optuna handing out a trial and Tune's next snapshot leaves a
      running Optuna trial that no restored Tune trial knows: the next suggestion (or the Tune
      trial with the same parameters) takes it over instead of asking for another, so a grid
      keeps each point once and TPE's history holds no phantom trials.
    - A driver killed between Optuna recording a trial's end and Tune's snapshot makes Tune
      resume that trial, which repeats its last epoch: Optuna's record stands, and the repeat is
      not told again.

    Its own state (which Tune trial holds which Optuna trial) is saved as JSON, never pickled.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"

    def __init__(
        self,
        space: StudySpace,
        study_dir: Path,
        sampler_seed: int = 0,
        warm_start: Sequence[Seed] = (),
    ):
        super().__init__(metric=space.metric, mode=space.mode)
        self._space = space
        self._distributions = optuna_distributions(space)
        self._storage = journal(study_dir)
        self._study = open_optuna_study(space, self._storage, sampler_seed)
        seed_study(self._study, list(warm_start))
        self._numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self._orphans: list[int] = []  # running Optuna trials that no Tune trial holds

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # The space comes from the study's space file; Tune's config holds fixed values only.
        return metric in (None, self.metric) and mode in (None, self.mode)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id not in self._numbers and self._orphans:
            self._numbers[trial_id] = self._orphans.pop(0)
        if trial_id in self._numbers:
            return dict(self._frozen(self._numbers[trial_id]).params)
        if self._space.kind != "search":
            waiting = self._study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting:
                point = next_grid_point(self._study, self._space)
                if point is None:
                    return Searcher.FINISHED
                self._study.enqueue_trial(point)
        trial = self._study.ask(self._distributions)
        self._numbers[trial_id] = trial.number
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        number = self._adopt(trial_id, result)
        value = result.get(self.metric)
        if number is None or not self._is_open(number) or not _is_finite(value):
            return
        step = result.get("training_iteration")
        if self._space.objectives:
            return  # Optuna keeps no intermediate values of a multi-objective trial
        if step is not None and step not in self._frozen(number).intermediate_values:
            self._trial(number).report(value, step)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        result = result or {}
        number = self._adopt(trial_id, result)
        if number is None or not self._is_open(number):
            return  # closed before a kill, or never asked for; run_study closes leftovers
        if SECONDS_ATTR in result:
            self._trial(number).set_user_attr(SECONDS_ATTR, result[SECONDS_ATTR])
        values = [result.get(name) for name in self._space.objectives or [self.metric]]
        if error or not all(_is_finite(value) for value in values):
            self._study.tell(number, state=TrialState.FAIL)
        else:
            self._study.tell(number, values if self._space.objectives else values[0])

    def save(self, checkpoint_path: str) -> None:
        write_atomic(checkpoint_path, json.dumps({"trials": self._numbers}))

    def restore(self, checkpoint_path: str) -> None:
        self._numbers = {
            str(key): int(value)
            for key, value in json.loads(Path(checkpoint_path).read_text())["trials"].items()
        }
        # Tune restores this searcher as it was pickled at the study's start, its sampler's random
        # state included: without a new seed, a resumed search would draw its first points again.
        self._study.sampler.reseed_rng()
        known = set(self._numbers.values())
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self._orphans = [trial.number for trial in running if trial.number not in known]

    def _adopt(self, trial_id: str, result: dict) -> int | None:
        """The Optuna trial of `trial_id`. Tune may restore a trial from a snapshot newer than
        the searcher's: its Optuna trial is then one of the orphans, found by its parameters."""
        if trial_id not in self._numbers:
            params = {name: result.get(f"config/{name}") for name in self._distributions}
            for number in self._orphans:
                if self._frozen(number).params == params:
                    self._orphans.remove(number)
                    self._numbers[trial_id] = number
                    break
        return self._numbers.get(trial_id)

    def _storage_id(self, number: int) -> int:
        study_id = self._storage.get_study_id_from_name(self._space.name)
        return self._storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self._storage.get_trial(self._storage_id(number))

    def _is_open(self, number: int) -> bool:
        return self._frozen(number).state == TrialState.RUNNING

    def _trial(self, number: int) -> optuna.trial.Trial:
        """A live handle on a running Optuna trial, for reports and attributes."""
        return optuna.trial.Trial(self._study, self._storage_id(number))


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def scheduler(space: StudySpace, study_dir: Path) -> RecordedASHA | None:
    """ASHA early stopping for a search that asks for it; None runs every trial to the end."""
    if space.scheduler != "asha":
        return None
    epochs = from_flat(space.fixed).train.epochs
    return RecordedASHA(
        study_dir,
        metric=space.metric,
        mode=space.mode,
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=max(1, epochs // 4),
        reduction_factor=3,
    )


class RecordedASHA(ASHAScheduler):
    """ASHA that writes down each trial it stops, in the study folder.

    Tune ends the running trials of an interrupted study (Ctrl-C) the way it ends those its
    scheduler stops, so a trial is `stopped_early` only when this record names it; any other
    unfinished trial is `interrupted`, and --resume runs it on. A trial that reports again was
    not stopped after all (a driver killed between the record and Tune's next snapshot resumes
    it), and leaves the record.
    """

    def __init__(self, study_dir: Path, **settings: Any):
        super().__init__(**settings)
        self._study_dir = str(study_dir)
        self._stopped: set[str] | None = None  # read from the record on first use

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        study_dir = Path(self._study_dir)
        if self._stopped is None:
            self._stopped = scheduler_stops(study_dir) or set()
        stopped = decision == self.STOP
        if stopped != (trial.trial_id in self._stopped):
            self._stopped ^= {trial.trial_id}
            record_stops(study_dir, self._stopped)
        return decision


def record_stops(study_dir: Path, trial_ids: set[str]) -> None:
    """Write the record of the trials the scheduler stopped; an empty one at a study's start
    says that the record is kept."""
    write_atomic(study_dir / SCHEDULER_STOPS_FILE, json.dumps(sorted(trial_ids)) + "\n")


def scheduler_stops(study_dir: Path) -> set[str] | None:
    """The Tune trial ids the study's scheduler stopped; None when it kept no record (it has no
    scheduler, or it started before schedulers recorded their stops)."""
    try:
        stops = json.loads((study_dir / SCHEDULER_STOPS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StudyError(
            f"{study_dir / SCHEDULER_STOPS_FILE}, the record of the trials the scheduler stopped, "
            f"cannot be read ({error}); without it a stopped trial cannot be told from an "
            "interrupted one. Restore it from a backup, or give a new --name to start afresh."
        ) from None
    return {str(trial_id) for trial_id in stops} if isinstance(stops, list) else set()
