"""`run_single`: one plain study run (or resumed) to the end, its results folder written; and the
checks before it (the disk it needs, the data prepared once)."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from ray import tune

from gapan import results
from gapan.config import BACKBONE_MODES, ExperimentConfig, from_flat, to_flat
from gapan.data import Splits, build_splits
from gapan.evaluate import reference_record
from gapan.losses import GapanCriterion
from gapan.space import StudySpace
from gapan.tune import cluster, folder, resume, warm_start
from gapan.tune.checkpoints import (
    CHECKPOINTS_KEPT,
    DEFAULT_POLICY,
    PruneEndedTrials,
    settle_study,
)
from gapan.tune.lock import StudyLocked, study_lock
from gapan.tune.options import StudyError, StudyOptions, StudyUnfinished, apply_options
from gapan.tune.search import StudySearcher, record_stops, scheduler, scheduler_stops
from gapan.tune.trainable import run_trial, trial_config


def prepare_data(cfg: ExperimentConfig, study_dir: Path) -> tuple[Splits, int | None]:
    """Fail on bad data, build the cache of frozen outputs (features, or the lower stages' maps
    in partial mode) and measure the pretrained reference, once, before any trial starts.

    Returns:
        The splits, and the backbone's feature size when its features are cached.
    """
    splits = build_splits(cfg.data)
    in_features = BACKBONE_MODES.get(cfg.model.backbone_mode).fill_cache(cfg, splits)
    if not (study_dir / results.REFERENCE_FILE).exists():
        print("Measuring the pretrained backbone as it is (the report's reference)", flush=True)
        reference = reference_record(cfg, splits)
        results.write_reference(study_dir, reference)
    return splits, in_features


def disk_need(
    space: StudySpace,
    num_classes: int,
    in_features: int | None,
    policy: str = DEFAULT_POLICY,
    concurrent: int | None = None,
) -> int:
    """Bytes the study's trials take on its disk at most, under the checkpoint policy.

    Each running trial keeps its last `CHECKPOINTS_KEPT` checkpoints, each holding the weights
    and AdamW's two moments of every trained parameter; a trial that ended keeps them until Tune
    has recorded its end (a snapshot or two later), so twice `concurrent` trials are counted at
    the size of the largest. What stays after a trial ends is its model's weights: one trial per
    setting (`best`, a search's trials counted at the largest value of every searched number),
    every trial (`last`) or none.

    Args:
        concurrent: Trials that run at once; None counts every trial of the study.
    """
    if space.kind == "search":
        largest = {
            key: max(dim["values"]) if "values" in dim else dim["high"]
            for key, dim in space.search.items()
            if dim["type"] in ("int", "float")
        }
        configs = [trial_config({**space.fixed, **largest}, space)]
        trials_each = space.trial_count()
    else:
        values = space.search[space.knob]["values"]
        configs = [trial_config({**space.fixed, space.knob: value}, space) for value in values]
        trials_each = space.seeds
    sizes = [trained_parameters(cfg, num_classes, in_features) for cfg in configs]
    at_once = min(space.trial_count(), concurrent or space.trial_count())
    running = 2 * at_once * CHECKPOINTS_KEPT * 3 * 4 * max(trained for trained, _ in sizes)
    kept = {
        "none": 0,
        "best": sum(model for _, model in sizes),
        "last": trials_each * sum(model for _, model in sizes),
    }[policy]
    return running + kept * 4


def trained_parameters(
    cfg: ExperimentConfig, num_classes: int, in_features: int | None
) -> tuple[int, int]:
    """The parameters a trial trains and checkpoints, and those of its model alone (what a
    kept trial's weights hold: the head and the trained part of the backbone, no flow, priors
    or proxies).

    Args:
        cfg: The trial's config.
        num_classes: Training classes (one prior, or proxy, each).
        in_features: The backbone's feature size when known (cached features); else the
            backbone is built on the meta device, which takes shapes but no memory.
    """
    model = 0
    mode = BACKBONE_MODES.get(cfg.model.backbone_mode)
    if in_features is None or mode.trains_backbone:
        import timm

        with torch.device("meta"):
            backbone = timm.create_model(cfg.model.backbone, pretrained=False, num_classes=0)
        in_features = backbone.num_features
        model += mode.trained_parameters(backbone, cfg.model.trainable_blocks)
    model += (in_features + 1) * cfg.model.embed_dim  # and the embedding head
    return _criterion_parameters(cfg, num_classes) + model, model


def concurrent_trials(options: StudyOptions) -> int | None:
    """Trials that will run at once, as far as is known before Ray starts (None: unknown, on a
    cluster that may grow)."""
    if options.max_concurrent:
        return options.max_concurrent
    if options.address is not None:
        return None
    limits = [(options.num_cpus or os.cpu_count() or 1) / options.cpus_per_trial]
    if options.gpus_per_trial > 0:
        limits.append(max(torch.cuda.device_count(), 1) / options.gpus_per_trial)
    return max(1, int(min(limits)))


def _criterion_parameters(cfg: ExperimentConfig, num_classes: int) -> int:
    def count(depth: int) -> int:
        flow = dataclasses.replace(cfg.flow, depth=depth)
        criterion = GapanCriterion(
            dataclasses.replace(cfg, flow=flow), num_classes, cfg.model.embed_dim
        )
        return sum(parameter.numel() for parameter in criterion.parameters())

    # Every block of a flow has the same parameters, so two small flows give any depth's count
    # without initialising a deep one.
    if cfg.flow.depth <= 1:
        return count(cfg.flow.depth)
    return count(0) + cfg.flow.depth * (count(1) - count(0))


def _trial_dirname(trial: tune.experiment.Trial, before: int = 0) -> str:
    """`before`: the trials of an extended search's earlier experiments, which the numbers of
    its new experiment's trials follow on from."""
    number = int(trial.experiment_tag.split("_", 1)[0]) + before  # Tune's running count
    return f"trial_{number}_{trial.trial_id}"


def _tuner(space: StudySpace, options: StudyOptions, plan: _Plan) -> tune.Tuner:
    """Tune's tuner: the study's experiment restored on a resume, else a new one (for an
    extended search, one for the trials after its first `plan.extend_from`)."""
    extend_from = plan.extend_from
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    study_dir = options.study_dir
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, space=space, study_dir=str(study_dir)), resources
    )
    if options.resume and extend_from is None:
        return tune.Tuner.restore(
            str(study_dir / folder.TUNE_DIR),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
        )
    return tune.Tuner(
        trainable,
        param_space={k: v for k, v in to_flat(plan.base).items() if k not in space.search},
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(space, study_dir, plan.sampler_seed, plan.seeds),
            scheduler=scheduler(space, study_dir),
            num_samples=space.trial_count() - (extend_from or 0),
            max_concurrent_trials=options.max_concurrent or None,
            reuse_actors=True,
            # Short folder names: the default one lists every config key.
            trial_dirname_creator=functools.partial(_trial_dirname, before=extend_from or 0),
        ),
        run_config=tune.RunConfig(
            name=folder.TUNE_DIR,
            storage_path=str(study_dir),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            # Ended trials lose their checkpoints once Tune has recorded their end.
            callbacks=[PruneEndedTrials(str(study_dir), space.knob, space.metric, space.mode)],
        ),
    )


@contextmanager
def held(study_dir: Path) -> Iterator[None]:
    """Hold `study_dir` for this driver (`gapan.tune.lock`), or refuse, saying what to do."""
    try:
        with study_lock(study_dir):
            yield
    except StudyLocked as error:
        raise StudyError(
            f"{error}. Two drivers in one study folder would overwrite each other's results: "
            "wait for the study to end (or stop it, then resume it with --resume), or give a new "
            "--name."
        ) from None


def _stopped_trials(space: StudySpace, grid: tune.ResultGrid, study_dir: Path) -> set[str]:
    """The Tune trial ids the study's scheduler stopped.

    A study whose scheduler kept no record (one started before schedulers recorded their stops,
    resumed now) falls back on Tune's view: when every planned trial exists and has ended, those
    that did not finish were stopped, which an interrupted run can mimic; it says so.
    """
    stopped = scheduler_stops(study_dir)
    if stopped is not None or space.scheduler is None:
        return stopped or set()
    print(
        f"warning: {study_dir} keeps no record of the trials its scheduler stopped (it started "
        "before they were recorded): a trial that ended unfinished counts as stopped early once "
        "every trial has ended, as Ctrl-C can make them all end",
        flush=True,
    )
    if len(grid) < space.trial_count() or grid.num_terminated + grid.num_errors < len(grid):
        return set()
    return {str((result.metrics or {}).get("trial_id", "")) for result in grid}


def _earlier_records(
    study_dir: Path, options: StudyOptions, stopped: set[str]
) -> list[results.TrialRecord]:
    """The trials of an extended search's earlier Tune experiments (`folder.set_aside`), read
    back through Tune (their folders were checked like the current one: `resume.check_trusted`)."""
    records = []
    for experiment in folder.earlier_experiments(study_dir):
        grid = tune.Tuner.restore(str(experiment), trainable=run_trial).get_results()
        records += folder.trial_records(grid, options.gpus_per_trial, stopped)
    return records


def _warm_start(
    space: StudySpace, options: StudyOptions
) -> tuple[list[warm_start.Seed], dict[str, Any]]:
    """The earlier configurations a new search starts with, and what study.json records of
    them: the search's sampler seed and each seed's source, trial, value and fidelity. A resumed
    study keeps what it recorded when it began (its journal holds its seeding)."""
    if space.kind != "search":
        return [], {}
    record: dict[str, Any] = {"sampler_seed": options.sampler_seed}
    if options.resume:
        if options.warm_start:
            print("--warm-start: a resumed search keeps the seeding it began with", flush=True)
        return [], _recorded_seeding(options.study_dir)
    if not options.warm_start:
        return [], record
    seeds, notes = warm_start.seeds(space, list(options.warm_start), options.study_dir)
    for note in notes:
        print(f"--warm-start: {note}", flush=True)
    print(
        f"--warm-start: the search starts with {len(seeds)} configurations of "
        f"{', '.join(str(path) for path in options.warm_start)}",
        flush=True,
    )
    record["warm_start"] = {
        "studies": [str(path) for path in options.warm_start],
        "seeds": [{"params": seed.params, **seed.attribute()} for seed in seeds],
        "notes": notes,
    }
    return seeds, record


def _recorded_seeding(study_dir: Path) -> dict[str, Any]:
    study = resume.read_study_file(study_dir)
    return {key: study[key] for key in ("sampler_seed", "warm_start") if key in study}


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A study checked and ready for Tune: its config, the configurations a warm start begins
    with, the trials an extended search ran before, and what a resume found ended."""

    base: ExperimentConfig
    seeds: list[warm_start.Seed]
    sampler_seed: int
    extend_from: int | None
    ended_before: dict[str, int]


def run_single(space: StudySpace, options: StudyOptions) -> Path:
    """Run (or resume) one plain study (an ablation, comparison or search, or a part of a
    study made of studies) to the end and write its results folder; return the folder.

    Everything that can be checked is checked before Ray starts: the space against the config,
    the resources and cluster address asked for, the study folder, the data set, and the
    frozen-feature cache (built here once, shared by every trial). The caller holds the folder
    (`held`).

    Raises:
        StudyUnfinished: The study stopped (Ctrl-C) before every trial ended; what ended is
            written, and a resume runs the rest.
        StudyError: It cannot start or resume; the message says why and what to do.
    """
    space = apply_options(space, options)
    study_dir = options.study_dir
    plan = _plan(space, options)
    environment = results.environment("cuda" if options.gpus_per_trial > 0 else "cpu")
    if space.scheduler is not None and not options.resume:
        record_stops(study_dir, set())
    cluster.start_ray(options)

    tuner = _tuner(space, options, plan)
    started = time.perf_counter()
    try:
        with cluster.pending_trials_limit(cluster.trial_slots(options)):
            grid = tuner.fit()
    except (OSError, EOFError) as error:
        raise StudyError(
            f"the study stopped: {type(error).__name__}: {error}. Writing to {study_dir} failed "
            "(a full disk?). Finished trials are kept in its tune/ folder: free some space, then "
            "run the same command with --resume."
        ) from None
    records = _records(space, options, grid)
    # An interrupted study has fewer trials than it planned (Tune creates them as it goes), or
    # trials that neither ended by themselves nor were stopped by the scheduler.
    ended = sum(results.trial_status(record) in results.ENDED for record in records)
    finished = len(records) == ended == space.trial_count()
    resume.check_nothing_lost(plan.ended_before, records)
    if finished:
        folder.close_abandoned_optuna_trials(study_dir, space)
    _write_results(space, options, records, finished)
    environment.update(
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        study_wall_s=time.perf_counter() - started,
        trials=len(records),
    )
    try:
        results.write_environment(study_dir, environment)
    except OSError as error:
        print(f"warning: {study_dir / results.ENVIRONMENT_FILE} not written ({error})")
    if not finished:
        raise StudyUnfinished(
            f"the study in {study_dir} stopped before all its trials ended ({ended} of "
            f"{space.trial_count()} ended); what ended is written there. Run the same command "
            "with --resume to continue it: finished trials are kept, interrupted ones go on "
            "from their last checkpoint."
        )
    return study_dir


def _plan(space: StudySpace, options: StudyOptions) -> _Plan:
    """Every check before Ray starts, the data prepared and the study folder made ready: a new
    study's room on the disk, an extended search's finished experiment set aside, study.json."""
    cluster.check_before_ray(options)
    study_dir = options.study_dir
    extend_from = resume.extension(study_dir, space) if options.resume else None
    if options.resume:
        resume.check_resumable(study_dir, space, extending=extend_from is not None)
    else:
        folder.check_new(study_dir)
    seeds, seeding = _warm_start(space, options)
    base = from_flat(space.fixed)
    folder.check_writable(study_dir)
    splits, in_features = prepare_data(base, study_dir)
    if not options.resume:
        need = disk_need(
            space,
            splits.train.num_classes,
            in_features,
            options.keep_checkpoints,
            concurrent_trials(options),
        )
        folder.check_free_space(study_dir, need)
    ended_before = resume.ended_trials(study_dir, space) if options.resume else {}
    if extend_from is not None:
        print(
            f"Extending the search in {study_dir} from {extend_from} to "
            f"{space.trial_count()} trials, with the sampler's whole history",
            flush=True,
        )
        folder.set_aside(study_dir)
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    try:
        results.write_study(
            study_dir,
            space,
            {
                "resources": resources,
                "folder": str(study_dir),
                "keep_checkpoints": options.keep_checkpoints,
                **seeding,
                **options.reporting,
            },
        )
    except OSError as error:
        raise StudyError(f"cannot write {study_dir / results.STUDY_FILE}: {error}") from None
    sampler_seed = seeding.get("sampler_seed", options.sampler_seed)
    return _Plan(base, seeds, sampler_seed, extend_from, ended_before)


def _records(
    space: StudySpace, options: StudyOptions, grid: tune.ResultGrid
) -> list[results.TrialRecord]:
    """Every trial of the study as a record with its resolved config, an extended search's
    earlier experiments' first."""
    study_dir = options.study_dir
    stopped = _stopped_trials(space, grid, study_dir)
    # Only a resume reads earlier experiments: it checked that no one else can write them
    # (`resume.check_trusted`), and Tune unpickles their state.
    earlier = _earlier_records(study_dir, options, stopped) if options.resume else []
    records = [
        *earlier,
        *folder.trial_records(grid, options.gpus_per_trial, stopped),
    ]
    for record in records:
        record.resolved = to_flat(trial_config(record.config, space))
    return records


def _write_results(
    space: StudySpace, options: StudyOptions, records: list[results.TrialRecord], finished: bool
) -> None:
    """The study's tables, then what stays of its trials: interrupted trials keep their
    checkpoints for --resume; ended ones keep what the policy keeps."""
    study_dir = options.study_dir
    try:
        trials = results.write_tables(study_dir, records, space)
    except OSError as error:
        raise StudyError(
            f"the study ran, but writing its tables into {study_dir} failed ({error}). Its trials "
            "are kept in its tune/ folder: free some space, then run the same command with "
            "--resume, which writes the tables without running finished trials again."
        ) from None
    if trials.empty:
        return
    settle_study(
        study_dir,
        list(zip(trials["trial_id"], trials["status"], trials["setting"], strict=True)),
        space.metric,
        space.mode,
        options.keep_checkpoints,
        finished,
    )
