"""Ray Tune: the trainer as a Tune trainable, and `run_study`, the one function that runs a study.

This is the only module that imports Ray: when Ray's API moves, this is the file to edit. Optuna
samples the trials through Ray's `OptunaSearch` (a grid over setting x seed for ablations and
comparisons, multivariate TPE for searches), and its study lives in ``optuna.journal`` inside the
study folder, so optuna-dashboard can open it and a resumed study keeps the sampler's history
(`StudySearch` keeps that history exact through divergences and killed drivers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from gapan import results
from gapan.config import ExperimentConfig, from_flat, to_flat
from gapan.data import build_splits
from gapan.evaluate import reference_record
from gapan.space import StudySpace, check_space, optuna_distributions
from gapan.train import frozen_features, resolve_device, train
from gapan.trial_order import SECONDS_ATTR, next_grid_point

TUNE_DIR = "tune"  # Tune's own experiment folder inside the study folder
OPTUNA_FILE = "optuna.journal"


FAULT_VARIABLE = "GAPAN_FAULT"  # e.g. "error@2,oom@1": rehearse how a study survives failures
FAULT_KINDS = ("error", "oom")
FAULTS_DIR = ".faults"  # inside the study folder: which injected faults have fired


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says what to do."""


class InjectedFault(RuntimeError):
    """A failure raised on purpose by GAPAN_FAULT, to check that a study survives it."""


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
        raise StudyError(
            f"{', '.join(sorted(searched))} is searched by this study; it cannot "
            "also be set on the command line"
        )
    space = dataclasses.replace(space, fixed={**space.fixed, **options.overrides})
    return check_space(space, source=f"{space.name} with the command-line options")


def trial_config(config: dict[str, Any], space: StudySpace) -> ExperimentConfig:
    return from_flat(results.method_overrides(config, space))


def parse_faults(text: str) -> list[tuple[str, int]]:
    """``"error@2,oom@1"`` to ``[("error", 2), ("oom", 1)]``: what GAPAN_FAULT asks for.

    Each fault fires once per study, in the first trial that finishes that epoch: ``error``
    raises (Tune retries the trial from its last checkpoint, up to --max-failures), ``oom``
    raises torch.OutOfMemoryError as a GPU that ran out of memory does.
    """
    faults = []
    for part in filter(None, (item.strip() for item in text.split(","))):
        kind, _, epoch = part.partition("@")
        if kind not in FAULT_KINDS or not epoch.isdigit() or int(epoch) < 1:
            raise StudyError(
                f"{FAULT_VARIABLE}={text!r}: expected KIND@EPOCH items separated by commas, KIND "
                f"one of {', '.join(FAULT_KINDS)} and EPOCH from 1 (e.g. error@2,oom@1); got "
                f"{part!r}. Unset {FAULT_VARIABLE} to run without injected faults."
            )
        faults.append((kind, int(epoch)))
    return faults


def inject_fault(epoch: int, study_dir: Path) -> None:
    """Raise the fault GAPAN_FAULT names for `epoch`, unless an earlier trial already took it."""
    text = os.environ.get(FAULT_VARIABLE, "")
    for kind, at in parse_faults(text):
        if at != epoch:
            continue
        markers = study_dir / FAULTS_DIR
        markers.mkdir(parents=True, exist_ok=True)
        try:
            # Created atomically, so concurrent trials cannot both take the same fault.
            (markers / f"{kind}@{at}").open("x").close()
        except FileExistsError:
            continue
        message = f"injected by {FAULT_VARIABLE}={text} after epoch {epoch}"
        if kind == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory ({message})")
        raise InjectedFault(message)


def out_of_memory_reason(error: BaseException, cfg: ExperimentConfig, gpu_share: float) -> str:
    batch = cfg.data.classes_per_batch * cfg.data.samples_per_class
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    held = f"this trial held {gpu_share:g} GPU" + (
        ", and its memory was capped to that share" if 0 < gpu_share < 1 else ""
    )
    return (
        f"out of GPU memory ({first_line[:300]}). Lower the batch size (data.classes_per_batch x "
        f"data.samples_per_class = {batch}, or train.eval_batch_size = "
        f"{cfg.train.eval_batch_size}) or raise --gpus-per-trial ({held}). Not retried: the same "
        "settings would run out again."
    )


def release_memory() -> None:
    """Free the GPU memory a finished or failed trial held, so the next trial on this worker
    starts clean. Reference cycles can keep tensors alive, hence the collection; on the CPU
    Python's own collector suffices, and a forced collection costs every trial a fraction of a
    second."""
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def run_trial(config: dict[str, Any], space: StudySpace, study_dir: str) -> None:
    """The Tune trainable: resolve the config, restore the checkpoint, train, report each epoch.

    Every report carries the Ray node the trial runs on (``node_id``). A GPU out-of-memory error
    ends the trial as ``failed`` with the reason (a retry would run out again); any other error
    goes to Tune, which retries the trial from its last checkpoint up to --max-failures.
    """
    cfg = trial_config(config, space)
    # Ray logs every persisted checkpoint (one per epoch per trial), burying the progress table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    gpu_share = resources.get("GPU", 0)
    if torch.cuda.is_available() and 0 < gpu_share < 1:
        # GPU fractions are logical in Ray: cap this trial's memory so neighbours keep theirs.
        torch.cuda.set_per_process_memory_fraction(gpu_share)
    node_id = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="gapan-trial-") as work:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(work)

        def report(metrics: dict[str, Any]) -> None:
            if metrics.get("status") == "diverged":
                # Optuna records a non-finite value as a failed trial (StudySearch); schedulers
                # skip it.
                metrics = {space.metric: math.nan, **metrics}
            else:
                inject_fault(metrics["epoch"], Path(study_dir))
            tune.report(
                {**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(work)
            )

        failure = ""
        try:
            train(cfg, report, run_dir=work)
        except torch.OutOfMemoryError as error:
            failure = out_of_memory_reason(error, cfg, gpu_share)
            traceback.clear_frames(error.__traceback__)
        except BaseException as error:
            # The traceback keeps train()'s frames, and with them the model, optimizer and
            # features on the GPU, alive while Tune handles the error: drop their variables.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            release_memory()
        if failure:
            tune.report(
                {space.metric: math.nan, "status": "failed", "error": failure, "node_id": node_id}
            )


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    number = trial.experiment_tag.split("_", 1)[0]  # Tune's running count of trials
    return f"trial_{number}_{trial.trial_id}"


class StudySearch(OptunaSearch):
    """OptunaSearch that closes every Optuna trial, even after a divergence or a killed driver.

    - A diverged or failed trial ends with a non-finite metric, which OptunaSearch tells Optuna
      as COMPLETE; Optuna refuses that and the trial would stay RUNNING for good (samplers treat
      it as still running). It is told as FAIL instead.
    - The searcher asks Optuna for a trial (written to the journal at once) before Tune's next
      snapshot of the experiment, so a driver killed in between leaves a RUNNING Optuna trial
      that the restored searcher does not know. Its next suggestion takes that trial over
      instead of asking for another: every Tune trial keeps exactly one Optuna trial, a grid
      keeps each point once, and TPE's history holds no phantom trials.
    - Optuna records a trial's end at once, Tune in its next snapshot: a driver killed in
      between leaves a trial that Optuna has finished and Tune resumes from its last
      checkpoint. Its Optuna record stands (the rerun of the last epoch repeats it); the
      resumed trial's reports are not sent to Optuna, which would refuse them.

    An ablation or comparison (`grid_space` given) runs its grid in the order of
    `gapan.trial_order`: seed by seed, the longest settings first. Each point is enqueued in
    Optuna just before Tune asks for it, so the order follows the running times measured so far.
    """

    def __init__(self, *args, grid_space: StudySpace | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._grid_space = grid_space

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._adopt(trial_id, result) and not self._finished_in_optuna(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if not self._adopt(trial_id, result or {}):
            return  # no Optuna trial to close; run_study closes leftovers at the end
        if self._finished_in_optuna(trial_id):
            return
        value = (result or {}).get(self.metric)
        if isinstance(value, float) and not math.isfinite(value):
            result, error = None, True
        if result and SECONDS_ATTR in result:
            self._ot_trials[trial_id].set_user_attr(SECONDS_ATTR, result[SECONDS_ATTR])
        super().on_trial_complete(trial_id, result, error)

    def _adopt(self, trial_id: str, result: dict) -> bool:
        """Know `trial_id`: Tune may restore a trial from a snapshot newer than the searcher's;
        its Optuna trial is then one of the orphans, found by its parameters."""
        if trial_id in self._ot_trials:
            return True
        params = {name: result.get(f"config/{name}") for name in self._space}
        for orphan in getattr(self, "_orphans", []):
            if orphan.params == params:
                self._orphans.remove(orphan)
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
                return True
        return False

    def _finished_in_optuna(self, trial_id: str) -> bool:
        return self._ot_trials[trial_id].number in getattr(self, "_finished_numbers", ())

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        known = {trial.number for trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self._orphans = [trial for trial in running if trial.number not in known]
        # Trials the restored searcher still has open but Optuna had closed before the kill.
        finished = self._ot_study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        )
        self._finished_numbers = {trial.number for trial in finished} & known

    def suggest(self, trial_id: str) -> dict | None:
        orphans = getattr(self, "_orphans", [])
        if trial_id not in self._ot_trials and orphans:
            # Optuna's Trial takes the storage's trial id, which FrozenTrial keeps private.
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphans.pop(0)._trial_id)
        # getattr: a searcher pickled before the grid order existed has no _grid_space; it keeps
        # the GridSampler it was saved with.
        if trial_id not in self._ot_trials and getattr(self, "_grid_space", None) is not None:
            waiting = self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            point = None if waiting else next_grid_point(self._ot_study, self._grid_space)
            if point is not None:
                self._ot_study.enqueue_trial(point)
        return super().suggest(trial_id)


def _searcher(space: StudySpace, study_dir: Path) -> OptunaSearch:
    if space.kind == "search":
        sampler = optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            constant_liar=True,
            seed=0,
            n_startup_trials=min(10, max(2, space.num_samples // 3)),
        )
    else:
        # StudySearch enqueues every point of the grid in its own order (gapan.trial_order), so
        # the sampler never samples. Not Optuna's GridSampler: it looks for a grid id of its
        # own in every finished trial, which enqueued trials do not have.
        sampler = optuna.samplers.RandomSampler(seed=0)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / OPTUNA_FILE))
    )
    return StudySearch(
        space=optuna_distributions(space),
        metric=space.metric,
        mode=space.mode,
        sampler=sampler,
        storage=storage,
        study_name=space.name,
        grid_space=None if space.kind == "search" else space,
    )


def _scheduler(space: StudySpace) -> ASHAScheduler | None:
    if space.scheduler != "asha":
        return None
    epochs = from_flat(space.fixed).train.epochs
    return ASHAScheduler(
        metric=space.metric,
        mode=space.mode,
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=max(1, epochs // 4),
        reduction_factor=3,
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXPERIMENT_STATE_PERIOD_S = 2


def _start_ray(options: StudyOptions) -> None:
    # Keeping few checkpoints makes Tune snapshot the experiment state every few checkpoints; on
    # cached features that is many times a second, and cheap.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune copies its experiment state (and the trials' result files) into the study folder
    # every 10 s by default; a driver killed in between loses the trials finished since, and
    # --resume runs them again. The state of a study is small, so save it every 2 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_STATE_PERIOD_S))
    if ray.is_initialized():
        return
    # Ray's token authentication (on by default since Ray 2.59) is left as it is: every request
    # to the dashboard's API and to the cluster needs the token under ~/.ray.
    try:
        if options.address:
            context = ray.init(address=options.address)
        else:
            if options.dashboard_host not in LOOPBACK:
                print(
                    f"warning: the Ray dashboard listens on {options.dashboard_host}, open to "
                    "every machine that reaches this one (Ray's token guards its API); an SSH "
                    "tunnel to 127.0.0.1 is safer (docs/when-things-go-wrong.md)",
                    flush=True,
                )
            # address="local": a new instance for this study, never a cluster that happens to
            # run here; the dashboard starts wherever ray[default] is installed.
            context = ray.init(
                address="local",
                num_cpus=options.num_cpus,
                include_dashboard=None,
                dashboard_host=options.dashboard_host,
                dashboard_port=options.dashboard_port,
            )
    except ConnectionError as error:
        raise StudyError(
            f"cannot join the Ray cluster at --address {options.address}: {error}. Start it with "
            "`ray start --head` (and `ray start --address HEAD:6379` on the other nodes), or run "
            "without --address to start Ray on this machine."
        ) from None
    url = context.dashboard_url
    print(
        f"Ray dashboard: http://{url}"
        if url
        else "Ray dashboard: not running (install ray[default])",
        flush=True,
    )


def _trial_slots(options: StudyOptions) -> int:
    """How many trials the cluster runs at once, as it is now."""
    resources = ray.cluster_resources()
    limits = [options.max_concurrent] if options.max_concurrent else []
    for name, per_trial in (("CPU", options.cpus_per_trial), ("GPU", options.gpus_per_trial)):
        if per_trial:
            limits.append(resources.get(name, 0.0) / per_trial)
    return max(1, int(min(limits, default=1)))


@contextlib.contextmanager
def _pending_trials_limit(slots: int):
    """Let Tune prepare a trial for every slot, not one at a time.

    With a searcher, Tune keeps one pending trial: the second slot's trial is created only once
    the first one runs, and its worker (importing torch, loading the data) starts seconds later.
    A limit of one per slot starts them all together. It caps pending trials only, so a cluster
    that grows still gets more trials. A value the user set is kept.
    """
    name = "TUNE_MAX_PENDING_TRIALS_PG"
    if name in os.environ:
        yield
        return
    os.environ[name] = str(slots)
    try:
        yield
    finally:
        del os.environ[name]


def _check_before_ray(options: StudyOptions) -> None:
    """Options that would make Ray wait or retry for minutes fail here, in seconds."""
    parse_faults(os.environ.get(FAULT_VARIABLE, ""))
    if options.address:
        _check_address(options.address)
    elif not ray.is_initialized():
        _check_resources(options)


def _check_address(address: str) -> None:
    # Ray retries an address where no head node answers for minutes before it gives up.
    if address == "auto" or "://" in address:
        return  # auto fails at once when no cluster runs here; ray:// is Ray Client's
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(
            f"--address {address!r}: expected auto or HOST:PORT (the head node's "
            "port, 6379 unless `ray start --head --port` chose another)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise StudyError(
            f"--address {address}: no Ray head node answers there ({error}). Start one with "
            "`ray start --head` on that machine, or fix --address."
        ) from None


def _check_resources(options: StudyOptions) -> None:
    # A trial that asks for more than the Ray instance started here has would wait forever. (A
    # cluster may grow with its autoscaler, so --address skips this; Tune reports what it
    # cannot place.)
    have = {
        "--cpus-per-trial": options.num_cpus or os.cpu_count() or 1,
        "--gpus-per-trial": torch.cuda.device_count(),
    }
    asked = {"--cpus-per-trial": options.cpus_per_trial, "--gpus-per-trial": options.gpus_per_trial}
    for flag, wanted in asked.items():
        if wanted < 0 or wanted > have[flag]:
            raise StudyError(
                f"{flag} {wanted:g}, but the Ray instance this study starts here has "
                f"{have[flag]:g}, so no trial could ever start. Give {flag} between 0 and "
                f"{have[flag]:g}"
                + (" (or raise --num-cpus)" if flag == "--cpus-per-trial" else "")
                + ", or join a larger cluster with --address."
            )


def prepare_data(cfg: ExperimentConfig, study_dir: Path) -> None:
    """Fail on bad data, build the frozen-feature cache and measure the pretrained reference,
    once, before any trial starts."""
    splits = build_splits(cfg.data)
    if cfg.model.backbone_mode == "frozen":
        frozen_features(cfg, splits, resolve_device(cfg.train.device))
    if not (study_dir / results.REFERENCE_FILE).exists():
        print("Measuring the pretrained backbone as it is (the report's reference)", flush=True)
        reference = reference_record(cfg, splits)
        study_dir.mkdir(parents=True, exist_ok=True)
        results.write_reference(study_dir, reference)


def _started(study_dir: Path) -> bool:
    """Whether Tune recorded the study: it writes its first snapshot before any trial ends."""
    return tune.Tuner.can_restore(str(study_dir / TUNE_DIR))


def _check_new(study_dir: Path) -> None:
    """Refuse a folder that holds a study; clear one whose study stopped before Tune recorded it.

    A study stopped while Ray was starting (Ctrl-C, a killed driver) leaves study.json and an
    empty Optuna study but no trial: starting it afresh loses nothing.
    """
    if not (study_dir / results.STUDY_FILE).exists():
        return
    if _started(study_dir) or (study_dir / results.TRIALS_FILE).exists():
        raise StudyError(
            f"{study_dir} already holds a study; pass --resume to continue it, or --name to start "
            "a new one beside it"
        )
    print(
        f"{study_dir} holds a study that stopped before its first trial; starting it afresh",
        flush=True,
    )
    for leftover in (OPTUNA_FILE, FAULTS_DIR, TUNE_DIR):
        path = study_dir / leftover
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _check_resumable(study_dir: Path, space: StudySpace) -> None:
    if not (study_dir / results.STUDY_FILE).exists():
        raise StudyError(f"{study_dir} holds no study to resume; run without --resume to start it")
    if not _started(study_dir):
        raise StudyError(
            f"{study_dir} holds no Tune experiment to resume ({study_dir / TUNE_DIR} is missing "
            "or incomplete)"
            + (
                "; its study stopped before its first trial: run without --resume to start it"
                if not (study_dir / results.TRIALS_FILE).exists()
                else ""
            )
        )
    saved = results.read_study(study_dir)
    wanted = space.to_dict()
    differs = [
        k
        for k in (
            "name",
            "kind",
            "metric",
            "mode",
            "search",
            "seeds",
            "fixed",
            "methods",
            "num_samples",
        )
        if saved.get(k) != wanted.get(k)
    ]
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


def _close_abandoned_optuna_trials(study_dir: Path, space: StudySpace) -> None:
    """Mark as failed the Optuna trials still RUNNING once every Tune trial has ended.

    A driver killed just after Optuna handed out a trial can leave it open in the journal with
    no Tune trial behind it; left RUNNING, optuna-dashboard shows it as running for ever.
    """
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / OPTUNA_FILE))
    )
    study = optuna.load_study(study_name=space.name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def run_study(space: StudySpace, options: StudyOptions) -> Path:
    """Run (or resume) a study to the end and write its results folder; return the folder.

    Everything that can be checked is checked before Ray starts: the space against the config,
    the resources and cluster address asked for, the study folder, the data set, and the
    frozen-feature cache (built here once, shared by every trial).
    """
    space = apply_options(space, options)
    _check_before_ray(options)
    study_dir = options.study_dir
    if options.resume:
        _check_resumable(study_dir, space)
    else:
        _check_new(study_dir)
    base = from_flat(space.fixed)
    prepare_data(base, study_dir)
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    results.write_study(study_dir, space, {"resources": resources})
    environment = results.environment("cuda" if options.gpus_per_trial > 0 else "cpu")
    _start_ray(options)

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, space=space, study_dir=str(study_dir)), resources
    )
    started = time.perf_counter()
    if options.resume:
        tuner = tune.Tuner.restore(
            str(study_dir / TUNE_DIR),
            trainable=trainable,
            resume_unfinished=True,
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
                # Tune deletes an old checkpoint before its experiment-state snapshot records
                # the new one; a driver killed in between would leave a trial pointing at a
                # deleted checkpoint. Three kept bridge that gap.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
            ),
        )
    with _pending_trials_limit(_trial_slots(options)):
        grid = tuner.fit()
    records = _records(grid, options.gpus_per_trial)
    for record in records:
        record.resolved = to_flat(trial_config(record.config, space))
    # Tune creates trials as it goes: an interrupted study has fewer than it planned.
    finished = len(records) == space.trial_count()
    if finished:
        _close_abandoned_optuna_trials(study_dir, space)
    results.write_tables(study_dir, records, space, finished=finished)
    environment.update(
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        study_wall_s=time.perf_counter() - started,
        trials=len(records),
    )
    results.write_environment(study_dir, environment)
    return study_dir
