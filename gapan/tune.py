"""Ray Tune: the trainer as a Tune trainable, and `run_study`, the one function that runs a study.

This is the only module that imports Ray: when Ray's API moves, this is the file to edit. Optuna
samples the trials through Ray's `OptunaSearch` (a grid over setting x seed for ablations and
comparisons, multivariate TPE for searches), and its study lives in ``optuna.journal`` inside the
study folder, so optuna-dashboard can open it and a resumed study keeps the sampler's history.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from gapan import results
from gapan.config import ExperimentConfig, from_flat, to_flat
from gapan.space import StudySpace, check_space, optuna_distributions
from gapan.train import train

TUNE_DIR = "tune"  # Tune's own experiment folder inside the study folder
OPTUNA_FILE = "optuna.journal"


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says what to do."""


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study: where, on what, and with which resources (the scripts' flags)."""

    name: str
    results_dir: Path = Path("results")
    # Config keys set for every trial, on top of the space's FIXED (dataset, backbone mode...).
    overrides: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the resources allow
    num_samples: int | None = None  # search studies: trials to sample
    seeds: int | None = None  # ablations and comparisons: seeds per setting
    address: str | None = None  # join a running Ray cluster ("auto" or host:port)
    storage: str | None = None  # shared folder for a multi-node study (default: results_dir)
    resume: bool = False
    smoke: bool = False  # a tiny version of the study, to check that everything runs
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint
    num_cpus: int | None = None  # CPUs of a Ray instance started here (default: all)

    @property
    def study_dir(self) -> Path:
        return (Path(self.storage) if self.storage else self.results_dir).resolve() / self.name


def smoke_space(space: StudySpace) -> StudySpace:
    """Two settings (the baseline first), two seeds, two epochs, a small slice of classes."""
    fixed = {**space.fixed, "train.epochs": 2, "data.max_classes": 24}
    if space.kind == "search":
        return dataclasses.replace(space, fixed=fixed, num_samples=4)
    knob = space.knob
    values = space.search[knob]["values"]
    kept = [space.baseline, *[v for v in values if v != space.baseline][:1]]
    search = {knob: {**space.search[knob], "values": kept}}
    return dataclasses.replace(space, fixed=fixed, search=search, seeds=2)


def apply_options(space: StudySpace, options: StudyOptions) -> StudySpace:
    """The space as this run executes it: smoke slicing, seed and sample counts, overrides."""
    if options.smoke:
        space = smoke_space(space)
    if options.seeds is not None and space.kind != "search":
        space = dataclasses.replace(space, seeds=options.seeds)
    if options.num_samples is not None and space.kind == "search":
        space = dataclasses.replace(space, num_samples=options.num_samples)
    searched = set(space.search) & set(options.overrides)
    if searched:
        raise StudyError(f"{', '.join(sorted(searched))} is searched by this study; it cannot "
                         "also be set on the command line")
    space = dataclasses.replace(space, fixed={**space.fixed, **options.overrides})
    return check_space(space, source=f"{space.name} with the command-line options")


def trial_config(config: dict[str, Any], space: StudySpace) -> ExperimentConfig:
    return from_flat(results.method_overrides(config, space))


def run_trial(config: dict[str, Any], space: StudySpace) -> None:
    """The Tune trainable: resolve the config, restore the checkpoint, train, report each epoch."""
    cfg = trial_config(config, space)
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    gpu_share = resources.get("GPU", 0)
    if torch.cuda.is_available() and 0 < gpu_share < 1:
        # GPU fractions are logical in Ray: cap this trial's memory so neighbours keep theirs.
        torch.cuda.set_per_process_memory_fraction(gpu_share)
    with tempfile.TemporaryDirectory(prefix="gapan-trial-") as work:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(work)

        def report(metrics: dict[str, Any]) -> None:
            if metrics.get("status") == "diverged":
                # Optuna records a non-finite value as a failed trial; schedulers skip it.
                metrics = {space.metric: math.nan, **metrics}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))

        try:
            train(cfg, report, run_dir=work)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # a reused worker starts the next trial with free memory


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    number = trial.experiment_tag.split("_", 1)[0]  # Tune's running count of trials
    return f"trial_{number}_{trial.trial_id}"


def _searcher(space: StudySpace, study_dir: Path) -> OptunaSearch:
    if space.kind == "search":
        sampler = optuna.samplers.TPESampler(
            multivariate=True, group=True, constant_liar=True, seed=0,
            n_startup_trials=min(10, max(2, space.num_samples // 3)),
        )
    else:
        sampler = optuna.samplers.GridSampler(space.grid(), seed=0)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / OPTUNA_FILE))
    )
    return OptunaSearch(
        space=optuna_distributions(space), metric=space.metric, mode=space.mode,
        sampler=sampler, storage=storage, study_name=space.name,
    )


def _scheduler(space: StudySpace) -> ASHAScheduler | None:
    if space.scheduler != "asha":
        return None
    epochs = from_flat(space.fixed).train.epochs
    return ASHAScheduler(
        time_attr="training_iteration", max_t=epochs, grace_period=max(1, epochs // 4),
        reduction_factor=3,
    )


def _start_ray(options: StudyOptions) -> None:
    # Every epoch's checkpoint replaces the last (num_to_keep=1), which snapshots the experiment
    # state each time; on cached features that is many times a second, and cheap.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if options.address:
        context = ray.init(address=options.address)
    else:
        context = ray.init(
            num_cpus=options.num_cpus, include_dashboard=True,
            dashboard_host=options.dashboard_host, dashboard_port=options.dashboard_port,
        )
    url = context.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running "
          "(install ray[default])", flush=True)


def prepare_data(cfg: ExperimentConfig) -> None:
    """Fail on bad data, and build the frozen-feature cache, once, before any trial starts."""
    from gapan.backbone import build_backbone
    from gapan.data import build_splits
    from gapan.features import cached_features
    from gapan.train import resolve_device

    splits = build_splits(cfg.data)
    if cfg.model.backbone_mode == "frozen":
        sets = {"train": splits.train, "val": splits.val, "test": splits.test}
        if splits.test_gallery is not None:
            sets["gallery"] = splits.test_gallery
        cached_features(build_backbone(cfg.model), sets, cfg.data.image_size,
                        cfg.train.eval_batch_size, resolve_device(cfg.train.device))


def _check_resumable(study_dir: Path, space: StudySpace) -> None:
    if not (study_dir / results.STUDY_FILE).exists() or not tune.Tuner.can_restore(
        str(study_dir / TUNE_DIR)
    ):
        raise StudyError(f"{study_dir} holds no study to resume; run without --resume to start it")
    saved = results.read_study(study_dir)
    wanted = space.to_dict()
    differs = [k for k in ("name", "kind", "metric", "mode", "search", "seeds", "fixed",
                           "methods", "num_samples") if saved.get(k) != wanted.get(k)]
    if differs:
        raise StudyError(
            f"{study_dir} belongs to another study or other options (different "
            f"{', '.join(differs)}); resume with the options it started with, or give a new --name"
        )


def _records(grid: tune.ResultGrid, gpus: float) -> list[results.TrialRecord]:
    records = []
    for result in grid:
        trial_id = Path(result.path).name
        match = re.match(r"trial_(\d+)_", trial_id)
        frame = result.metrics_dataframe
        epochs = frame.to_dict("records") if frame is not None else []
        last = result.metrics or {}
        config = dict(result.config or {})
        record = results.TrialRecord(
            trial_id=last.get("trial_id", trial_id),
            number=int(match.group(1)) if match else len(records),
            config=config,
            epochs=[{k: v for k, v in row.items() if not _is_missing(v)} for row in epochs],
            error=_first_lines(result.error),
            time_total_s=float(last.get("time_total_s", math.nan)),
            gpus=gpus,
        )
        records.append(record)
    return records


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _first_lines(error: BaseException | None, lines: int = 12) -> str:
    if error is None:
        return ""
    text = str(error).strip() or type(error).__name__
    return "\n".join(text.splitlines()[-lines:])


def run_study(space: StudySpace, options: StudyOptions) -> Path:
    """Run (or resume) a study to the end and write its results folder; return the folder.

    Everything that can be checked is checked before Ray starts: the space against the config,
    the data set, and the frozen-feature cache (built here once, shared by every trial).
    """
    space = apply_options(space, options)
    study_dir = options.study_dir
    if options.resume:
        _check_resumable(study_dir, space)
    elif (study_dir / results.STUDY_FILE).exists():
        raise StudyError(
            f"{study_dir} already holds a study; pass --resume to continue it, or --name to start "
            "a new one beside it"
        )
    base = from_flat(space.fixed)
    prepare_data(base)
    study_dir.mkdir(parents=True, exist_ok=True)
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    results.write_study(study_dir, space, {"resources": resources})
    environment = results.environment("cuda" if options.gpus_per_trial > 0 else "cpu")
    _start_ray(options)

    trainable = tune.with_resources(tune.with_parameters(run_trial, space=space), resources)
    started = time.perf_counter()
    if options.resume:
        tuner = tune.Tuner.restore(
            str(study_dir / TUNE_DIR), trainable=trainable, resume_unfinished=True,
            resume_errored=False,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: v for k, v in to_flat(base).items() if k not in space.search},
            tune_config=tune.TuneConfig(
                search_alg=_searcher(space, study_dir),
                scheduler=_scheduler(space),
                num_samples=space.trial_count(),
                max_concurrent_trials=options.max_concurrent or None,
                reuse_actors=True,
                # Short folder names: the default one lists every config key.
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(study_dir),
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    grid = tuner.fit()
    records = _records(grid, options.gpus_per_trial)
    for record in records:
        record.resolved = to_flat(trial_config(record.config, space))
    # Tune creates trials as it goes: an interrupted study has fewer than it planned.
    finished = len(records) == space.trial_count()
    results.write_tables(study_dir, records, space, finished=finished)
    environment.update(
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        study_wall_s=time.perf_counter() - started, trials=len(records),
    )
    results.write_environment(study_dir, environment)
    return study_dir

